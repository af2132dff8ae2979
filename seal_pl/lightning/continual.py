"""Continual self-edits under Lightning: sequences of passages, a forgetting matrix, mitigations.

``seal test --config configs/knowledge/continual_demo.yaml`` runs :class:`ContinualSelfEditsModule`
over the sequences of :class:`ContinualDataModule`. One test item is one sequence of M passages
(the reference, spec 2.9). For each sequence the module starts from the exact base weights, answers
every passage's questions (row 0), then for each passage in turn: the current model writes one
self-edit (or it is read from ``self_edits_path``), an adapter is trained on it, the strategy
makes it part of the model (merge, by default, in memory: no server, no checkpoint), and the
questions of every passage so far are answered again (row k). The strategy is injected by
``class_path`` (see :mod:`seal_pl.pipelines.continual`): ``Merge`` (reference), ``Replay``,
``Route``, ``Compose``. The generator backend is told of every change of the base weights (each
merge, Compose's sum going in and out, the restore before and after a sequence), so that a vLLM
backend reloads its engine on the current weights before it next generates.

Records go to per-rank JSONL shards as each sequence finishes (``sequences.rank<r>.jsonl``: the
sequence's matrix, every step's self-edit, training texts, losses and time;
``predictions.rank<r>.jsonl``: every answer of every row), so a killed run loses at most the
sequence in progress and re-running the command skips finished sequences. At the end rank 0
writes ``results.json`` (mean and standard deviation over sequences per cell, the forgetting
summary, the reference's numbers), ``forgetting.png`` (the heatmap; redraw it with
``scripts/plot_forgetting.py``) and TensorBoard curves.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.sequences import TrainSequence
from seal_pl.inner.trainer import AdaptJob, InnerLoopConfig
from seal_pl.knowledge.data import Passage, load_passages, self_edits_for
from seal_pl.knowledge.grading import ContainsGrader, Grader
from seal_pl.lightning.base import InnerLoopModule, ItemDataModule
from seal_pl.models.loading import Dtype
from seal_pl.pipelines.continual import (
    REFERENCE,
    ContinualStrategy,
    Merge,
    draw_sequences,
    format_matrix,
    format_summary,
    matrix_from_rows,
    save_heatmap,
    summarize_sequences,
)
from seal_pl.pipelines.knowledge import KnowledgeIncorporation, KnowledgeSettings
from seal_pl.records import append_record, read_all, rewrite_records, write_json


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
        self.path = path
        self.n_sequences = n_sequences
        self.length = length
        self.seed = seed
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

    def items(self) -> list[dict[str, Any]]:
        return [
            {
                "id": f"seq-{s:04d}",
                "index": s,
                "passages": [self.passages[i] for i in sequence],
                "external": {self.passages[i].id: self.external[self.passages[i].id][0] for i in sequence}
                if self.external
                else {},
            }
            for s, sequence in enumerate(self.sequences)
        ]


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
        self.seed = seed
        self.std_ddof = std_ddof
        self.pipeline: KnowledgeIncorporation | None = None
        self._base_weights: dict[str, torch.Tensor] | None = None
        self._done: set[str] = set()
        self._started = 0.0
        self._loss_step = 0

    def setup(self, stage: str) -> None:
        if self.lm is None:
            length = getattr(self.trainer.datamodule, "length", None) if self.trainer is not None else None
            if length is None:
                raise RuntimeError("ContinualSelfEditsModule needs a data module with a `length` (ContinualDataModule)")
            self.adapters = self.strategy.adapter_slots(length)
        super().setup(stage)
        if self._base_weights is None:
            # Merges write into the adapted layers' weights: keep their exact base values (on the CPU,
            # to spare accelerator memory) to restore before every sequence; nothing else is written.
            self._base_weights = {
                name: layer.base.weight.detach().to("cpu", copy=True) for name, layer in self.bank.iter_layers()
            }
        self.pipeline = KnowledgeIncorporation(self.inner_trainer, self.generator, self.grader, self.settings)

    @torch.no_grad()
    def _restore_base(self) -> None:
        for name, layer in self.bank.iter_layers():
            layer.base.weight.copy_(self._base_weights[name])
        self.bank.reset()
        self.generator.base_weights_changed(restored=True)

    # ---------------------------------------------------------------------------------- stages
    def _begin(self) -> None:
        self._started = time.perf_counter()
        self._done = self.finished_ids("sequences", "id", "sequences")

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        for item in batch:
            self._run_sequence(item)

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        return [self._run_sequence(item) for item in batch]

    def _answer_row(self, passages: list[Passage], columns: int, updates: int) -> list[list[dict]]:
        """Graded answers to the questions of the first ``columns`` passages after ``updates`` updates."""
        graded = []
        with self.strategy.current_model(self.bank, updates, self.generator):
            for j in range(columns):
                predictions = self.pipeline.answer(passages[j], [self.strategy.answer_slot(j, updates)])[0]
                graded.append(self.pipeline.grade(passages[j], predictions))
        return graded

    def _run_sequence(self, item: dict) -> dict | None:
        if item["id"] in self._done:
            return None
        started = time.perf_counter()
        passages: list[Passage] = item["passages"]
        length = len(passages)
        index = item["index"]
        marker = self.settings.loss_after_marker
        self._restore_base()
        rows: list[list[list[dict]]] = []
        steps: list[dict] = []
        history: list[list[str]] = []
        with torch.inference_mode(False):
            rows.append(self._answer_row(passages, length, 0))
            for k, passage in enumerate(passages):
                seed = self.seed + 1000 * index + k
                step_started = time.perf_counter()
                completion = item["external"].get(passage.id)
                source = "file"
                if completion is None:
                    source = "model"
                    with self.strategy.current_model(self.bank, k, self.generator):
                        completion = self.pipeline.sample_self_edits([passage], 1, seed=seed)[0][0]
                generate_seconds = time.perf_counter() - step_started
                texts, empty = self.pipeline.training_sequences(passage, completion)
                train_texts, n_replayed = self.strategy.training_texts(k, texts, history, seed)
                slot = self.strategy.train_slot(k)
                job = AdaptJob(
                    [TrainSequence.after_marker(t, marker) if marker else TrainSequence(t) for t in train_texts],
                    seed=seed,
                    loss_on="completion" if marker else None,
                )
                result = self.inner_trainer.adapt([job], slots=[slot])[0]
                self.strategy.after_update(self.bank, k, slot, self.generator)
                history.append(texts)
                answer_started = time.perf_counter()
                rows.append(self._answer_row(passages, k + 1, k + 1))
                steps.append(
                    {
                        "step": k + 1,
                        "passage_id": passage.id,
                        "self_edit_source": source,
                        "completion": completion,
                        "completion_was_empty": empty,
                        "sequences": texts,
                        "n_replayed": n_replayed,
                        "replayed": train_texts[len(texts) :],
                        "losses": result.losses,
                        "train_steps": result.steps,
                        "train_tokens": result.train_tokens,
                        "generate_seconds": round(generate_seconds, 2),
                        "train_seconds": round(result.seconds, 2),
                        "answer_seconds": round(time.perf_counter() - answer_started, 2),
                    }
                )
                self._log_step(item["id"], steps[-1], rows[-1])
        self._restore_base()
        accuracy_rows = [[_accuracy(graded) for graded in row] for row in rows]
        record = {
            "id": item["id"],
            "index": index,
            "passage_ids": [p.id for p in passages],
            "titles": [p.title for p in passages],
            "strategy": self.strategy.describe(),
            "matrix": matrix_from_rows(accuracy_rows, length),
            "n_correct": [[sum(q["correct"] for q in graded) for graded in row] for row in rows],
            "n_questions": [[len(graded) for graded in row] for row in rows],
            "steps": steps,
            "seconds": round(time.perf_counter() - started, 1),
        }
        for r, row in enumerate(rows):
            for j, graded in enumerate(row):
                for q in graded:
                    append_record(
                        self.shard("predictions"),
                        {"sequence_id": item["id"], "row": r, "column": j, "passage_id": passages[j].id, **q},
                    )
        append_record(self.shard("sequences"), record)
        self._done.add(item["id"])
        final = record["matrix"][length]
        self.log("continual/final_row_mean", sum(final) / length, on_step=False, on_epoch=True, batch_size=1)
        self.log(
            "continual/diagonal_mean",
            sum(record["matrix"][k + 1][k] for k in range(length)) / length,
            on_step=False,
            on_epoch=True,
            batch_size=1,
        )
        return record

    def _log_step(self, sequence_id: str, step: dict, row: list[list[dict]]) -> None:
        writer = self.tb()
        if writer is None:
            return
        for offset, loss in enumerate(step["losses"]):
            writer.add_scalar("inner_loss/continual", loss, self._loss_step + offset)
        self._loss_step += len(step["losses"])
        accuracies = [_accuracy(graded) for graded in row]
        writer.add_scalar(f"{sequence_id}/row_mean", sum(accuracies) / len(accuracies), step["step"])
        writer.add_scalar(f"{sequence_id}/fresh", accuracies[-1], step["step"])
        writer.add_scalar(f"{sequence_id}/first_passage", accuracies[0], step["step"])

    def _finish(self) -> None:
        records = {r["id"]: r for r in read_all(self.run_dir / "sequences.rank*.jsonl")}
        ordered = [records[k] for k in sorted(records)]
        if not ordered:
            return
        # A sequence killed after some of its answers were written is redone in full: the later
        # (finished) answers win.
        unique = {
            (p["sequence_id"], p["row"], p["column"], p["question_id"]): p
            for p in read_all(self.run_dir / "predictions.rank*.jsonl")
            if p["sequence_id"] in records
        }
        rewrite_records(self.run_dir / "predictions.jsonl", [unique[k] for k in sorted(unique)])
        rewrite_records(self.run_dir / "sequences.jsonl", ordered)
        report = summarize_sequences([r["matrix"] for r in ordered], ddof=self.std_ddof)
        steps = [s for r in ordered for s in r["steps"]]
        results = {
            "experiment": "knowledge_continual",
            "model": self.model_name,
            "strategy": self.strategy.describe(),
            "length": len(ordered[0]["passage_ids"]),
            "sequences": [{"id": r["id"], "passage_ids": r["passage_ids"]} for r in ordered],
            **report,
            "empty_self_edits": sum(s["completion_was_empty"] for s in steps),
            "seconds": {
                "sequences": round(sum(r["seconds"] for r in ordered), 1),
                "generate": round(sum(s["generate_seconds"] for s in steps), 1),
                "train": round(sum(s["train_seconds"] for s in steps), 1),
                "this_invocation": round(time.perf_counter() - self._started, 1),
            },
            "reference": REFERENCE,
        }
        write_json(self.run_dir / "results.json", results)
        title = f"{self.strategy.describe()['name']}: {report['n_sequences']} sequences, mean ± std"
        heatmap = save_heatmap(
            [{"title": title, "mean": report["matrix"]["mean"], "std": report["matrix"]["std"]}],
            self.run_dir / "forgetting.png",
        )
        text = (
            format_matrix(report["matrix"]["mean"], report["matrix"]["std"])
            + "\n\n"
            + format_summary(report["summary"])
        )
        writer = self.tb()
        if writer is not None:
            summary = report["summary"]
            for key in ("base_row_mean", "diagonal_mean", "final_row_mean", "forgetting_mean"):
                if summary[key] is not None:
                    writer.add_scalar(f"results/{key}", summary[key], 0)
            for r, value in enumerate(summary["row_means"]):
                writer.add_scalar("results/row_mean", value, r)
            writer.add_text("results", "```\n" + text + "\n```", 0)
        print(f"\nforgetting matrix, accuracy % (mean±std over {report['n_sequences']} sequences)\n{text}")
        print(f"\nresults: {self.run_dir / 'results.json'}\nheatmap: {heatmap}")


def _accuracy(graded: list[dict]) -> float:
    return sum(q["correct"] for q in graded) / max(1, len(graded))
