"""Knowledge incorporation under Lightning: the passage data modules and the evaluation module.

``seal test --config configs/knowledge/demo.yaml`` runs :class:`KnowledgeIncorporationModule` over
the passages of :class:`KnowledgeDataModule`, one passage per step (``run_item``): get its
self-edits, hand it to :class:`~seal_pl.pipelines.knowledge.KnowledgeIncorporation`, log, append
the records of :mod:`seal_pl.knowledge.records` to this rank's shards. Re-running resumes; rank 0
merges and writes ``results.json`` (:func:`~seal_pl.pipelines.knowledge.knowledge_results`). Under
``seal restem`` it is the knowledge E-step and evaluation (``restem_domain``).
"""

from __future__ import annotations

import time

import torch
from torchmetrics import MeanMetric

from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.trainer import InnerLoopConfig
from seal_pl.knowledge.data import Passage, PassageItem, selected_passages, self_edits_for
from seal_pl.knowledge.grading import ContainsGrader, Grader
from seal_pl.knowledge.prompts import PromptStyle
from seal_pl.knowledge.records import PassageRecord, PredictionRecord, SampledSelfEdits
from seal_pl.lightning.base import InnerLoopModule, ItemDataModule
from seal_pl.lightning.policy_sft import SFTDataModule
from seal_pl.models.loading import Dtype
from seal_pl.pipelines.knowledge import (
    Condition,
    KnowledgeIncorporation,
    KnowledgeSettings,
    PassageTiming,
    adapter_slots,
    distillation_examples,
    format_table,
    knowledge_results,
    prediction_records,
    scored_self_edits,
    unique_predictions,
)
from seal_pl.pipelines.knowledge_restem import KnowledgeDomain
from seal_pl.records import SFTExample, rewrite_typed


class KnowledgeDataModule(ItemDataModule):
    """Passages (with their questions) and, optionally, self-edits written elsewhere.

    Args:
        path: SQuAD-format file: official SQuAD v1.1 JSON, the flat per-passage list, or JSONL.
        seed: seed of the subset shuffle (reference: 42); null keeps file order.
        start: first passage of the shuffled list.
        limit: how many passages (null = all).
        self_edits_path: optional file of self-edits by another model (the ``external`` condition):
            the flat passage list with a ``completions`` list per record, or JSONL lines
            ``{"passage_id": ..., "completion": ...}``.

    ``setup`` refuses a selection that selects no passage (an empty file, ``limit: 0``, ``start``
    past the end) with an ``EmptySelectionError`` naming the file, its number of passages and the
    ``start``/``limit`` given, and a negative ``start`` or ``limit`` with an ``OptionError``.
    """

    def __init__(
        self,
        path: str = "data/knowledge/val.json",
        seed: int | None = 42,
        start: int = 0,
        limit: int | None = None,
        self_edits_path: str | None = None,
    ):
        super().__init__()
        self.path = path
        self.seed = seed
        self.start = start
        self.limit = limit
        self.self_edits_path = self_edits_path
        self.passages: list[Passage] = []
        self.external: dict[str, list[str]] = {}

    def setup(self, stage: str) -> None:
        self.passages = selected_passages(self.path, seed=self.seed, start=self.start, limit=self.limit)
        if self.self_edits_path:
            self.external = self_edits_for(self.self_edits_path, [p.id for p in self.passages])

    def items(self) -> list[PassageItem]:
        return [PassageItem(i, p, tuple(self.external.get(p.id, []))) for i, p in enumerate(self.passages)]


class SelfEditDistillDataModule(SFTDataModule):
    """Self-edits written by someone else (a stronger model, a person) as the policy's SFT set.

    The paper's "a stronger model writes the self-edits" baseline as a distillation: every
    (passage, self-edit) pair becomes a (prompt, completion) pair whose prompt is exactly the one the
    E-step samples with (:func:`~seal_pl.pipelines.knowledge.passage_self_edit_prompt`), so
    ``seal fit`` with :class:`~seal_pl.lightning.PolicySFTModule` teaches the policy to write such
    self-edits itself (``configs/knowledge/distill.yaml``).

    Args:
        passages: SQuAD-format passage file (as for :class:`KnowledgeDataModule`).
        self_edits_path: the self-edits: JSONL ``{"passage_id", "completion"}`` lines or the flat
            list with ``completions``; every selected passage needs at least one.
        prompt_style: self-edit prompt style; must match the E-step's ``settings.prompt_style``.
        chat_template: chat-formatted prompts; must match the E-step's ``settings.chat_template``.
        seed: seed of the passage shuffle (null keeps file order).
        start: first passage of the shuffled list.
        limit: how many passages (null = all).
        batch_size: sequences per device per step.
        max_length: truncate longer sequences.
        shuffle: shuffle each epoch.
    """

    def __init__(
        self,
        passages: str = "data/knowledge/train.json",
        self_edits_path: str = "data/knowledge/train_implications.jsonl",
        prompt_style: PromptStyle = "implications",
        chat_template: bool = True,
        seed: int | None = None,
        start: int = 0,
        limit: int | None = None,
        batch_size: int = 2,
        max_length: int = 1024,
        shuffle: bool = True,
    ):
        super().__init__(path=self_edits_path, batch_size=batch_size, max_length=max_length, shuffle=shuffle)
        self.passages_path = passages
        self.prompt_style = prompt_style
        self.chat_template = chat_template
        self.seed = seed
        self.start = start
        self.limit = limit

    def pairs(self) -> list[SFTExample]:
        passages = selected_passages(self.passages_path, seed=self.seed, start=self.start, limit=self.limit)
        edits = self_edits_for(self.path, [p.id for p in passages])  # path: the self-edit file
        return distillation_examples(passages, edits, self.prompt_style, self.chat_template)


class KnowledgeIncorporationModule(InnerLoopModule):
    """The single-passage knowledge-incorporation table as a LightningModule (``test``/``predict``).

    Args:
        model: model name or path (``smollm2-135m-instruct``, a HF folder, a .gguf file, a hub name).
        dtype: weights dtype of the frozen base model: ``auto`` (bfloat16 on CUDA, float32 on CPU),
            float32, bfloat16 or float16.
        lora: adapter shape (reference: r=32, alpha=64 on q_proj and v_proj).
        inner: inner-loop hyper-parameters (reference: lr 1e-3, 10 epochs, batch 1, padded to 2048
            with loss on pads).
        conditions: which table rows to run: no_adaptation, passage_only, self_edit, external.
        n_self_edits: self-edits sampled per passage for the ``self_edit`` condition.
        settings: prompt style, chat template, sampling and answering settings.
        generator: generation backend (default: Hugging Face generate).
        grader: answer grader (default: gold answer contained in the prediction).
        seed: base seed; passage ``i`` of the data set (after selection) samples its self-edits and
            trains with ``seed + i``, whatever the rank that runs it.
        inner_seeds: every adaptation is trained with this many inner-loop seeds (data order) and
            its accuracy averaged: the self-edit's reward (reference: 1 for evaluation, 3 for RL).
        adapters: adapter slots trained at once (default: every adaptation of a passage, counting
            one external self-edit per passage); more adaptations than slots run in chunks.
        sampling_group: the self-edits of this many consecutive passages (by data-set position) are
            sampled in one generation call, then each passage is adapted and scored in turn. Decoding
            reads every weight once per step, so on a CPU a batch of 16-64 prompts costs a few times
            one prompt, not 16-64 times. Group ``g`` is sampled with seed ``seed + g * sampling_group``
            and written to ``samples.rank<r>.jsonl`` before any of it is scored, so a resumed run uses
            the same self-edits. 1 (default) samples each passage's self-edits right before its
            adaptation with seed ``seed + i``. Under DDP every rank samples the whole group (the same
            text on every rank) and scores its own passages.
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        dtype: Dtype = "auto",
        lora: LoRASpec | None = None,
        inner: InnerLoopConfig | None = None,
        conditions: list[Condition] | None = None,
        n_self_edits: int = 1,
        settings: KnowledgeSettings | None = None,
        generator: GeneratorBackend | None = None,
        grader: Grader | None = None,
        seed: int = 0,
        inner_seeds: int = 1,
        adapters: int | None = None,
        sampling_group: int = 1,
    ):
        conditions = list(conditions or ["no_adaptation", "passage_only", "self_edit"])
        slots = adapter_slots(conditions, n_self_edits, inner_seeds, sampling_group, adapters)
        super().__init__(model, dtype, lora or LoRASpec(), inner or InnerLoopConfig(), slots, generator)
        self.conditions = conditions
        self.n_self_edits = n_self_edits
        self.settings = settings or KnowledgeSettings()
        self.grader = grader if grader is not None else ContainsGrader()
        self.seed = seed
        self.inner_seeds = inner_seeds
        self.sampling_group = sampling_group
        # Pooled accuracy (correct / questions), exact match and F1 per condition, weighted by
        # questions; reduced over every rank and logged at the end of the pass (``_end``).
        self.accuracy = torch.nn.ModuleDict({c: MeanMetric() for c in conditions})
        self.exact = torch.nn.ModuleDict({c: MeanMetric() for c in conditions})
        self.f1 = torch.nn.ModuleDict({c: MeanMetric() for c in conditions})
        self._samples: dict[str, SampledSelfEdits] = {}
        self.pipeline: KnowledgeIncorporation | None = None

    restem_domain = KnowledgeDomain
    """Its ``seal restem`` steps: best-of-K self-edits per passage (:mod:`seal_pl.pipelines.knowledge_restem`)."""
    item_record, item_key, item_what = PassageRecord, "passage_id", "passages"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.pipeline = KnowledgeIncorporation(self.inner_trainer, self.generator, self.grader, self.settings)

    # ---------------------------------------------------------------------------------- stages
    def _begin(self) -> None:
        self._samples = {sample.passage_id: sample for sample in self.read(SampledSelfEdits)}

    def item_id(self, item: PassageItem) -> str:
        return item.passage.id

    def run_item(self, item: PassageItem) -> PassageRecord:
        passage = item.passage
        # The passage's position in the data set, not the per-rank batch index: same seeds under DDP.
        position = item.index
        seed = self.seed + position
        self.pipeline.timing = PassageTiming()
        self_edits = self._self_edits(passage, position, seed) if "self_edit" in self.conditions else []
        record = self.pipeline.evaluate_passage(
            passage,
            conditions=self.conditions,
            self_edits=self_edits,
            external_edits=item.external,
            seed=seed,
            repeats=self.inner_seeds,
        )
        record.timing = self.pipeline.timing
        if self_edits:
            prompt = self.pipeline.self_edit_prompt(passage)
            for scored in scored_self_edits(record, prompt=prompt, seed=seed):
                self.write(scored)
        for prediction in prediction_records(record):
            self.write(prediction)
        self.write(record)
        self._log_passage(record)
        return record

    def _self_edits(self, passage: Passage, position: int, seed: int) -> list[str]:
        """The passage's K self-edits: sampled now, or with its group (see ``sampling_group``)."""
        if self.sampling_group == 1:
            return self.pipeline.sample_self_edits([passage], self.n_self_edits, seed=seed)[0]
        if passage.id not in self._samples:
            passages = [it.passage for it in self.trainer.datamodule.items()]
            if passages[position].id != passage.id:
                raise RuntimeError(f"passage {passage.id} is not at position {position} of the data module")
            for sample in self.pipeline.sample_group(
                passages, position, self.sampling_group, self.n_self_edits, self.seed
            ):
                self.write(sample)
                self._samples[sample.passage_id] = sample
        return list(self._samples[passage.id].completions)

    def _log_passage(self, record: PassageRecord) -> None:
        """Accuracy, exact match and F1 per condition into torchmetrics (logged, reduced over ranks,
        at the end of the pass), inner-loss curves and a self-edit sample to TensorBoard."""
        board = self.board
        for condition, runs in record.conditions.items():
            for run in runs:
                if run.questions:
                    n = len(run.questions)
                    self.accuracy[condition].update(run.accuracy, weight=n)
                    self.exact[condition].update(sum(a.exact for a in run.questions) / n, weight=n)
                    self.f1[condition].update(sum(a.f1 for a in run.questions) / n, weight=n)
                if run.adaptation is not None and run.adaptation.losses:
                    board.curve(f"inner_loss/{condition}", run.adaptation.losses)
                    board.curve(f"final_inner_loss/{condition}", run.adaptation.losses[-1:])
        sample = next(iter(record.conditions.get("self_edit", [])), None)
        if sample is not None and sample.adaptation is not None:
            text = f"**{record.title}**\n\n{sample.adaptation.completion}"
            board.text("self_edit_sample", text, len(self._done))

    def _end(self) -> None:
        self.log_means(
            {
                f"{name}/{condition}": metrics[condition]
                for name, metrics in (("accuracy", self.accuracy), ("exact", self.exact), ("f1", self.f1))
                for condition in self.conditions
            }
        )
        super()._end()

    def _finish(self) -> None:
        records = {r.passage_id: r for r in self.read(PassageRecord)}
        ordered = [records[k] for k in sorted(records)]
        rewrite_typed(PredictionRecord.merged(self.run_dir), unique_predictions(self.read(PredictionRecord)))
        # The frozen base model's parameters (the adapter bank's LoRA slots are not counted).
        n_params = sum(p.numel() for n, p in self.lm.named_parameters() if "lora_" not in n) if self.lm else 0
        results = knowledge_results(
            ordered, model=self.model_name, n_params=n_params, wall_seconds=time.perf_counter() - self._started
        )
        table = results["conditions"]
        self.publish(results, {f"accuracy_{c}": row["accuracy"] for c, row in table.items()}, format_table(table))
