"""Knowledge incorporation under Lightning: the passage data module and the evaluation module.

``seal test --config configs/knowledge/demo.yaml`` runs :class:`KnowledgeIncorporationModule` over
the passages of :class:`KnowledgeDataModule`. Each ``test_step`` takes one passage: it samples the
model's self-edits, trains adapters for every condition in one batched inner loop, answers the
questions closed-book and grades them. Records go to per-rank JSONL shards in the run directory as
each passage finishes; re-running the same command skips finished passages. At the end rank 0
merges the shards, prints the table and writes ``results.json``, whose ``truncated`` field counts
the passages whose training sequences or self-edit prompt had to be cut to fit (each one is also
logged as a warning when it happens).
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from typing import Any

import torch

from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner.flops import adapter_training_flops
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.trainer import InnerLoopConfig
from seal_pl.inputs import require_selection
from seal_pl.knowledge.data import Passage, load_passages, select_passages, self_edits_for
from seal_pl.knowledge.grading import ContainsGrader, Grader
from seal_pl.knowledge.self_edit_stats import self_edit_stats, summarize_self_edit_stats
from seal_pl.lightning.base import InnerLoopModule, ItemDataModule
from seal_pl.lightning.policy_sft import SFTDataModule
from seal_pl.models.loading import Dtype
from seal_pl.pipelines.knowledge import (
    CONDITIONS,
    KnowledgeIncorporation,
    KnowledgeSettings,
    PassageTiming,
    format_table,
    passage_self_edit_prompt,
    self_edit_rewards,
    summarize,
    truncation_summary,
)
from seal_pl.records import append_record, read_all, rewrite_records, write_json


def selected_passages(path: str, *, seed: int | None, start: int, limit: int | None) -> list[Passage]:
    """The passages of ``path`` picked by ``seed``/``start``/``limit``; an empty pick is refused.

    Raises:
        EmptySelectionError: the file holds no passage, ``limit`` is 0, or ``start`` is past the end.
        OptionError: ``start`` or ``limit`` is negative.
    """
    passages = load_passages(path)
    chosen = select_passages(passages, seed=seed, start=start, limit=limit)
    return require_selection(chosen, source=str(path), total=len(passages), what="passages", start=start, limit=limit)


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

    def items(self) -> list[dict[str, Any]]:
        return [
            {"index": i, "passage": p, "external": self.external.get(p.id, [])} for i, p in enumerate(self.passages)
        ]


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
        prompt_style: str = "implications",
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

    def pairs(self) -> list[dict]:
        passages = selected_passages(self.passages_path, seed=self.seed, start=self.start, limit=self.limit)
        edits = self_edits_for(self.path, [p.id for p in passages])  # path: the self-edit file
        return [
            {
                "passage_id": p.id,
                "prompt": passage_self_edit_prompt(p, self.prompt_style, self.chat_template),
                "completion": completion,
            }
            for p in passages
            for completion in edits[p.id]
        ]


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
        conditions: list[str] | None = None,
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
        unknown = set(conditions) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"unknown conditions {sorted(unknown)}; valid: {list(CONDITIONS)}")
        if n_self_edits < 1 and "self_edit" in conditions:
            raise ValueError("n_self_edits must be >= 1 when the self_edit condition is on")
        if inner_seeds < 1:
            raise ValueError("inner_seeds must be >= 1")
        if sampling_group < 1:
            raise ValueError(f"sampling_group must be >= 1, got {sampling_group}")
        if adapters is None:
            per_seed = ("passage_only" in conditions) + ("self_edit" in conditions) * n_self_edits
            adapters = (per_seed + ("external" in conditions)) * inner_seeds
        super().__init__(model, dtype, lora or LoRASpec(), inner or InnerLoopConfig(), max(1, adapters), generator)
        self.conditions = conditions
        self.n_self_edits = n_self_edits
        self.settings = settings or KnowledgeSettings()
        self.grader = grader if grader is not None else ContainsGrader()
        self.seed = seed
        self.inner_seeds = inner_seeds
        self.sampling_group = sampling_group
        self._samples: dict[str, dict] = {}
        self.pipeline: KnowledgeIncorporation | None = None
        self._done: set[str] = set()
        self._started = 0.0
        self._loss_step: dict[str, int] = {}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.pipeline = KnowledgeIncorporation(self.inner_trainer, self.generator, self.grader, self.settings)

    # ---------------------------------------------------------------------------------- stages
    def _begin(self) -> None:
        self._started = time.perf_counter()
        self._done = self.finished_ids("passages", "passage_id", "passages")
        self._samples = {r["passage_id"]: r for r in read_all(self.run_dir / "samples.rank*.jsonl")}

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        for item in batch:
            self._evaluate(item, batch_idx)

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        return [self._evaluate(item, batch_idx) for item in batch]

    def _evaluate(self, item: dict, index: int) -> dict | None:
        passage: Passage = item["passage"]
        if passage.id in self._done:
            return None
        # The passage's position in the data set, not the per-rank batch index: same seeds under DDP.
        seed = self.seed + item.get("index", index)
        self.pipeline.timing = PassageTiming()
        self_edits: list[str] = []
        if "self_edit" in self.conditions:
            self_edits = self._self_edits(passage, item.get("index", index), seed)
        with torch.inference_mode(False):
            record = self.pipeline.evaluate_passage(
                passage,
                conditions=self.conditions,
                self_edits=self_edits,
                external_edits=item.get("external", []),
                seed=seed,
                repeats=self.inner_seeds,
            )
        record["timing"] = asdict(self.pipeline.timing)
        stats_of: dict[str, dict[str, float]] = {}  # per distinct completion (inner seeds repeat it)
        for condition in ("self_edit", "external"):
            for run in record["conditions"].get(condition, []):
                completion = run["adaptation"]["completion"]
                if completion not in stats_of:
                    stats_of[completion] = self_edit_stats(completion, passage.context)
                run["self_edit_stats"] = stats_of[completion]
        if self_edits:
            prompt = self.pipeline.self_edit_prompt(passage)
            for reward in self_edit_rewards(record):
                append_record(
                    self.shard("self_edits"),
                    {
                        "id": f"{passage.id}/{reward['edit_index']}",
                        "passage_id": passage.id,
                        "seed": seed,
                        "prompt": prompt,
                        **reward,
                        "stats": stats_of[reward["completion"]],
                    },
                )
        for condition, runs in record["conditions"].items():
            for run in runs:
                for q in run["questions"]:
                    append_record(
                        self.shard("predictions"),
                        {"passage_id": passage.id, "condition": condition, "edit_index": run["edit_index"], **q},
                    )
        append_record(self.shard("passages"), record)
        self._done.add(passage.id)
        self._log_passage(record)
        return record

    def _self_edits(self, passage: Passage, position: int, seed: int) -> list[str]:
        """The passage's K self-edits: sampled now, or with its group (see ``sampling_group``)."""
        if self.sampling_group == 1:
            return self.pipeline.sample_self_edits([passage], self.n_self_edits, seed=seed)[0]
        if passage.id not in self._samples:
            group = position // self.sampling_group
            items = self.trainer.datamodule.items()
            members = [it["passage"] for it in items[group * self.sampling_group : (group + 1) * self.sampling_group]]
            if passage.id not in {p.id for p in members}:
                raise RuntimeError(f"passage {passage.id} is not at position {position} of the data module")
            group_seed = self.seed + group * self.sampling_group
            sampled = self.pipeline.sample_self_edits(members, self.n_self_edits, seed=group_seed)
            for member, completions in zip(members, sampled):
                record = {"passage_id": member.id, "group": group, "seed": group_seed, "completions": completions}
                append_record(self.shard("samples"), record)
                self._samples[member.id] = record
        return list(self._samples[passage.id]["completions"])

    def _log_passage(self, record: dict) -> None:
        writer = self.tb()
        for condition, runs in record["conditions"].items():
            accuracy = sum(r["accuracy"] for r in runs) / len(runs)
            if not self.trainer.predicting:  # Lightning has no self.log in predict (the E-step of ReST-EM)
                self.log(f"accuracy/{condition}", accuracy, on_step=False, on_epoch=True, batch_size=1)
            if writer is None:
                continue
            for run in runs:
                adaptation = run["adaptation"]
                if not adaptation:
                    continue
                step = self._loss_step.get(condition, 0)
                for offset, loss in enumerate(adaptation["losses"]):
                    writer.add_scalar(f"inner_loss/{condition}", loss, step + offset)
                self._loss_step[condition] = step + len(adaptation["losses"])
                if adaptation["losses"]:
                    writer.add_scalar(f"final_inner_loss/{condition}", adaptation["losses"][-1], len(self._done))
        if writer is not None and "self_edit" in record["conditions"]:
            completion = record["conditions"]["self_edit"][0]["adaptation"]["completion"]
            writer.add_text("self_edit_sample", f"**{record['title']}**\n\n{completion}", len(self._done))

    def _compute_summary(self, records: list[dict]) -> dict[str, Any]:
        """Where the time went, the training FLOPs, and what the self-edits looked like."""
        timing = {f.name: 0.0 for f in fields(PassageTiming)}
        for record in records:
            for name, value in (record.get("timing") or {}).items():
                timing[name] += value
        # The frozen base model's parameters (the adapter bank's LoRA slots are not counted).
        n_params = (
            sum(p.numel() for n, p in self.lm.named_parameters() if "lora_" not in n) if self.lm is not None else 0
        )
        train_flops = adapter_training_flops(n_params, int(timing["processed_tokens"]))
        stats = {
            condition: summarize_self_edit_stats(
                run["self_edit_stats"]
                for r in records
                for run in r["conditions"].get(condition, [])
                if "self_edit_stats" in run
            )
            for condition in ("self_edit", "external")
            if any(condition in r["conditions"] for r in records)
        }
        return {
            "timing": {
                **{k: round(v, 1) for k, v in timing.items() if k.endswith("seconds")},
                "processed_tokens": int(timing["processed_tokens"]),
                "n_params": n_params,
                "train_flops": train_flops,
                "train_flops_per_second": train_flops / timing["train_seconds"] if timing["train_seconds"] else None,
            },
            "self_edit_stats": stats,
        }

    def _finish(self) -> None:
        records = {r["passage_id"]: r for r in read_all(self.run_dir / "passages.rank*.jsonl")}
        ordered = [records[k] for k in sorted(records)]
        table = summarize(ordered)
        predictions = read_all(self.run_dir / "predictions.rank*.jsonl")
        seen: set[tuple] = set()
        unique = []
        for p in predictions:
            key = (p["passage_id"], p["condition"], p["edit_index"], p["question_id"])
            if key not in seen:
                seen.add(key)
                unique.append(p)
        rewrite_records(self.run_dir / "predictions.jsonl", unique)
        results = {
            "experiment": "knowledge_single_passage",
            "model": self.model_name,
            "n_passages": len(ordered),
            "conditions": table,
            "truncated": truncation_summary(ordered),
            "wall_seconds_this_invocation": round(time.perf_counter() - self._started, 1),
            # Adapters trained together share one wall time: count each batched adaptation once.
            "adapt_seconds": round(
                sum(
                    sum(
                        {
                            run["adaptation"]["seconds"]
                            for runs in r["conditions"].values()
                            for run in runs
                            if run["adaptation"]
                        }
                    )
                    for r in ordered
                ),
                1,
            ),
            **self._compute_summary(ordered),
        }
        write_json(self.run_dir / "results.json", results)
        writer = self.tb()
        if writer is not None:
            for condition, row in table.items():
                writer.add_scalar(f"results/accuracy_{condition}", row["accuracy"], 0)
            writer.add_text("results", "```\n" + format_table(table) + "\n```", 0)
        print("\n" + format_table(table) + f"\n\nresults: {self.run_dir / 'results.json'}")
