"""The ARC domain of the ReST-EM outer loop (plain Python): every solved (task, self-edit) pair.

The E-step (:class:`~seal_pl.lightning.ARCTTTModule` in ``mode: self_edit`` under ``seal
predict``) writes one :class:`~seal_pl.arc.records.ArcSelfEditRecord` per sampled self-edit and
one :class:`~seal_pl.arc.records.ArcEditRecord` per (task, self-edit) pair it trained and scored.
:meth:`ArcDomain.collect` joins them into one :class:`ArcScoredSelfEdit` per pair: the reward is 1
iff the task was solved after test-time training with the self-edit (``None`` when unscored: no
solutions available). The filter keeps every solved pair (:func:`keep_successes`). Held out: the
success rate over (task, self-edit) pairs and the task accuracy of a ``seal test`` run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from seal_pl.arc.records import ArcEditRecord, ArcSelfEditRecord, read_estep
from seal_pl.pipelines.restem import FilterOptions, HeldOut, ReSTEMDomain, latest_by_id
from seal_pl.records import ScoredSelfEdit, SFTExample


@dataclasses.dataclass(kw_only=True)
class ArcScoredSelfEdit(ScoredSelfEdit):
    """One (task, self-edit) pair of an ARC E-step: its reward, validity, and training trace.

    ``subtasks``: per test input of the task, whether it was solved (``None``: no solution given).
    """

    KIND = "arc_scored_self_edit"
    STEM = "arc_scored_self_edits"

    task_id: str
    valid: bool
    reason: str | None
    skipped: str | None
    trained: bool
    solved: bool | None
    config: dict[str, Any] | None
    n_train_examples: int
    planned_steps: int
    steps: int
    train_tokens: int
    train_seconds: float
    infer_seconds: float
    subtasks: dict[str, bool | None]

    @classmethod
    def of(cls, edit: ArcEditRecord, seed: int | None) -> ArcScoredSelfEdit:
        return cls(
            id=edit.id,
            context_id=edit.task_id,
            task_id=edit.task_id,
            edit_index=edit.edit_index,
            seed=seed,
            prompt=edit.prompt,
            completion=edit.completion or "",
            reward=edit.reward,
            valid=edit.valid,
            reason=edit.reason,
            skipped=edit.skipped,
            trained=edit.trained,
            solved=edit.solved,
            config=edit.config,
            n_train_examples=edit.n_train_examples,
            planned_steps=edit.planned_steps,
            steps=edit.steps,
            train_tokens=edit.train_tokens,
            train_seconds=edit.train_seconds,
            infer_seconds=edit.infer_seconds,
            subtasks={s.subtask_id: s.solved for s in edit.subtasks},
        )


def arc_scored_self_edits(
    edits: Iterable[ArcEditRecord], samples: Iterable[ArcSelfEditRecord] = ()
) -> list[ArcScoredSelfEdit]:
    """One scored record per (task, self-edit) pair; the seed comes from the pair's sample record."""
    seeds = {sample.id: sample.seed for sample in samples}
    return latest_by_id([ArcScoredSelfEdit.of(edit, seeds.get(edit.id)) for edit in edits])


def keep_successes(records: Iterable[ScoredSelfEdit], *, threshold: float = 1.0) -> list[SFTExample]:
    """Every self-edit whose reward reaches ``threshold`` (ARC: the task was solved) and that has a prompt."""
    return [
        SFTExample.of(r)
        for r in records
        if r.prompt is not None and r.reward is not None and float(r.reward) >= threshold
    ]


class ArcDomain(ReSTEMDomain):
    """Few-shot ARC: self-edits are test-time-training configs; reward 1 iff the task is solved."""

    name = "arc"
    scored = ArcScoredSelfEdit

    def check(self, estep_init_args: dict[str, Any], options: FilterOptions) -> None:
        if estep_init_args.get("mode") != "self_edit":
            raise ValueError("estep: the ARC module must run in mode: self_edit")
        for name in ("min_gain", "max_copied_line_share"):
            if getattr(options, name) is not None:
                raise ValueError(f"{name} applies to the knowledge domain only")

    def collect(self, stage_dir: Path) -> list[ArcScoredSelfEdit]:
        edits, samples = read_estep(stage_dir)
        return arc_scored_self_edits(edits, samples)

    def select(self, records: Sequence[ScoredSelfEdit], options: FilterOptions) -> list[SFTExample]:
        return keep_successes(records)

    def rule(self, options: FilterOptions) -> str:
        return "every solved (task, self-edit) pair"

    def heldout(self, eval_dir: Path) -> HeldOut:
        results = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
        metrics = {"success_rate": results.get("success_rate"), "task_accuracy": results.get("task_accuracy")}
        return HeldOut(metrics=metrics, headline=metrics["success_rate"])
