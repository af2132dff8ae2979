"""Continual self-edits under Lightning: sequences of passages, a forgetting matrix, mitigations.

``seal test --config configs/knowledge/continual_demo.yaml`` runs :class:`ContinualSelfEditsModule`
over the sequences of :class:`ContinualDataModule`, one per step; the experiment is
:class:`seal_pl.pipelines.continual.ContinualRun` with an injected strategy (``Merge``, ``Replay``,
``Route``, ``Compose``). Each finished sequence's records (:mod:`seal_pl.knowledge.continual_records`)
go to this rank's shards, so re-running resumes; rank 0 writes ``results.json`` (mean and spread per
cell over sequences) and ``forgetting.png`` (``scripts/plot_forgetting.py`` redraws it).
"""

from __future__ import annotations

import time

from torchmetrics import MeanMetric

from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.trainer import InnerLoopConfig
from seal_pl.knowledge.continual_records import ContinualSequenceRecord, ContinualStep, merge_continual
from seal_pl.knowledge.data import Passage, load_passages, self_edits_for
from seal_pl.knowledge.grading import ContainsGrader, Grader
from seal_pl.knowledge.records import GradedAnswer
from seal_pl.lightning.base import InnerLoopModule, ItemDataModule
from seal_pl.models.loading import Dtype
from seal_pl.pipelines.continual import (
    SPREAD_KEYS,
    BaseWeights,
    ContinualRun,
    ContinualStrategy,
    Merge,
    SequenceItem,
    accuracy,
    continual_results,
    draw_sequences,
    format_results,
    save_results_heatmap,
    sequence_items,
)
from seal_pl.pipelines.knowledge import KnowledgeIncorporation, KnowledgeSettings


class ContinualDataModule(ItemDataModule):
    """Sequences of ``length`` distinct passages drawn from a passage file.

    Args:
        path: SQuAD-format passage file (see ``KnowledgeDataModule``).
        n_sequences: how many sequences (reference: 64).
        length: passages per sequence, M (reference: 8).
        seed: sequence ``s`` is drawn with ``random.Random(seed + s)``.
        self_edits_path: optional file of self-edits written elsewhere (same formats as
            ``KnowledgeDataModule.self_edits_path``); when set, each step trains on the file's first
            self-edit for its passage instead of one written by the current model.
    """

    def __init__(
        self,
        path: str = "data/knowledge/val.json",
        n_sequences: int = 2,
        length: int = 4,
        seed: int = 42,
        self_edits_path: str | None = None,
    ):
        super().__init__()
        if n_sequences < 1:
            raise ValueError(f"n_sequences must be >= 1, got {n_sequences}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.path, self.n_sequences, self.length, self.seed = path, n_sequences, length, seed
        self.self_edits_path = self_edits_path
        self.passages: list[Passage] = []
        self.sequences: list[list[int]] = []
        self.external: dict[str, list[str]] = {}

    def setup(self, stage: str) -> None:
        self.passages = load_passages(self.path)
        self.sequences = draw_sequences(len(self.passages), self.n_sequences, self.length, self.seed)
        if self.self_edits_path:
            used = [self.passages[i].id for sequence in self.sequences for i in sequence]
            self.external = self_edits_for(self.self_edits_path, used)

    def items(self) -> list[SequenceItem]:
        return sequence_items(self.passages, self.sequences, self.external)


class ContinualSelfEditsModule(InnerLoopModule):
    """The continual self-edits experiment (``seal test``): one sequence per step, a forgetting matrix at the end.

    Args:
        model: model name or path (``smollm2-135m-instruct``, a HF folder, a .gguf file, a hub name).
        dtype: weights dtype of the base model: ``auto`` (bfloat16 on CUDA, float32 on CPU), float32,
            bfloat16 or float16.
        lora: adapter shape (reference: r=32, alpha=64 on q_proj and v_proj).
        inner: inner-loop hyper-parameters of every update (reference: lr 1e-3, 10 epochs, batch 1).
        strategy: how updates enter the model: ``seal_pl.pipelines.continual.Merge`` (reference,
            default), ``Replay`` (merge + replay of earlier self-edits), ``Route`` (one adapter per
            passage, oracle routing) or ``Compose`` (one adapter per passage, summed).
        settings: prompt style, chat template, sampling and answering settings.
        generator: generation backend (default: Hugging Face generate).
        grader: answer grader (default: gold answer contained in the prediction).
        seed: base seed; step ``k`` of sequence ``s`` samples its self-edit and trains with
            ``seed + 1000 * s + k``.
        std_ddof: delta degrees of freedom of the per-cell standard deviation over sequences
            (0 = population std as in the reference, 1 = sample std).
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        dtype: Dtype = "auto",
        lora: LoRASpec | None = None,
        inner: InnerLoopConfig | None = None,
        strategy: ContinualStrategy | None = None,
        settings: KnowledgeSettings | None = None,
        generator: GeneratorBackend | None = None,
        grader: Grader | None = None,
        seed: int = 0,
        std_ddof: int = 0,
    ):
        super().__init__(model, dtype, lora or LoRASpec(), inner or InnerLoopConfig(), 1, generator)
        self.strategy = strategy if strategy is not None else Merge()
        self.settings = settings or KnowledgeSettings()
        self.grader = grader if grader is not None else ContainsGrader()
        self.seed, self.std_ddof = seed, std_ddof
        self.sequence_run: ContinualRun | None = None
        self.final_row, self.diagonal = MeanMetric(), MeanMetric()

    item_record, item_what = ContinualSequenceRecord, "sequences"

    def setup(self, stage: str) -> None:
        if self.lm is None:
            length = getattr(self.trainer.datamodule, "length", None) if self.trainer is not None else None
            if length is None:
                raise RuntimeError("ContinualSelfEditsModule needs a data module with a `length` (ContinualDataModule)")
            self.adapters = self.strategy.adapter_slots(length)
        super().setup(stage)
        if self.sequence_run is None:
            pipeline = KnowledgeIncorporation(self.inner_trainer, self.generator, self.grader, self.settings)
            self.sequence_run = ContinualRun(pipeline, self.strategy, self.bank, BaseWeights(self.bank), self.seed)

    # ---------------------------------------------------------------------------------- a pass
    def item_id(self, item: SequenceItem) -> str:
        return item.id

    def run_item(self, item: SequenceItem) -> ContinualSequenceRecord:
        record, answers = self.sequence_run.run(item, on_step=lambda step, row: self._log_step(item.id, step, row))
        for answer in answers:
            self.write(answer)
        self.write(record)
        length = len(item.passages)
        self.final_row.update(sum(record.matrix[length]) / length)
        self.diagonal.update(sum(record.matrix[k + 1][k] for k in range(length)) / length)
        return record

    def _log_step(self, sequence_id: str, step: ContinualStep, row: list[list[GradedAnswer]]) -> None:
        board = self.board
        board.curve("inner_loss/continual", step.losses)
        accuracies = [accuracy(graded) for graded in row]
        board.scalar(f"{sequence_id}/row_mean", sum(accuracies) / len(accuracies), step.step)
        board.scalar(f"{sequence_id}/fresh", accuracies[-1], step.step)
        board.scalar(f"{sequence_id}/first_passage", accuracies[0], step.step)

    # ----------------------------------------------------------------------------------- merge
    def _end(self) -> None:
        self.log_means({"continual/final_row_mean": self.final_row, "continual/diagonal_mean": self.diagonal})
        super()._end()

    def _finish(self) -> None:
        sequences = merge_continual(self.run_dir)
        if not sequences:
            return
        results = continual_results(
            sequences,
            model=self.model_name,
            strategy=self.strategy.describe(),
            ddof=self.std_ddof,
            wall_seconds=time.perf_counter() - self._started,
        )
        heatmap = save_results_heatmap(results, self.run_dir / "forgetting.png")
        board = self.board
        for r, value in enumerate(results["summary"]["row_means"]):
            board.scalar("results/row_mean", value, r)
        header = f"forgetting matrix, accuracy % (mean±std over {results['n_sequences']} sequences)"
        self.publish(
            results, {key: results["summary"][key] for key in SPREAD_KEYS}, f"{header}\n{format_results(results)}"
        )
        print(f"heatmap: {heatmap}")
