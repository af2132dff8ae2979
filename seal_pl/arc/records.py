"""The typed records of an ARC run: what each stage writes to the run directory, and how to read it.

One dataclass per record kind (see :mod:`seal_pl.records`); each kind has its own file stem, per-rank
shards ``<stem>.rank<r>.jsonl`` and a merged ``<stem>.jsonl``:

* :class:`ArcSelfEditRecord` (``arc_self_edits``) - ``self_edit`` mode: every sampled self-edit of
  a task (prompt, completion, validity, reason, parsed config, every attempt drawn); id ``<task>/<k>``;
* :class:`ArcEditRecord` (``arc_edits``) - one per (task, self-edit), or per task in ``icl``/``fixed``
  mode: the config, the self-edit prompt and completion, validity/reason, the compute-cap skip, the
  TTT trace, per-subtask verdicts (no raw view outputs) and the reward; id ``<task>/<k>``. These are
  the E-step records of ReST-EM (:func:`read_estep`);
* :class:`ArcPredictionRecord` (``arc_predictions``) - one per (subtask, self-edit): both attempts,
  the pass@2 verdict, every view's raw output and, with likelihood voting, the candidates' scores;
  id ``<subtask>/<k>``;
* :class:`ArcTaskRecord` (``arc_tasks``) - one per finished task: rewards, solved flag, wall time.

The nested parts (:class:`SubtaskPrediction`, :class:`ViewOutput`, :class:`LikelihoodVote`,
:class:`CandidateScore`, :class:`SelfEditAttempt`) are what the pipeline hands back, so the same
objects travel from the pipeline to the files and back. Pure Python: no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from seal_pl.arc.self_edit import SelfEditConfig, config_from_dict
from seal_pl.records import Record, read_all_typed, rewrite_typed

GridList = list[list[int]]
Messages = list[dict[str, str]]

EMPTY_GRID: GridList = [[0]]
"""The attempt a subtask gets when it has none (an invalid or capped self-edit)."""


# ----------------------------------------------------------------------------- nested parts
@dataclass
class ViewOutput:
    """One inference view's answer: its inverse transform, whether it decoded, why not, raw text."""

    inverse: str
    decoded: bool
    error: str | None = None
    output: str | None = None


@dataclass
class CandidateScore:
    """A distinct decoded answer under likelihood voting: votes and log-likelihood per scoring view."""

    grid: GridList
    votes: int
    logprob: float | None
    view_logprobs: list[float] = field(default_factory=list)


@dataclass
class LikelihoodVote:
    """How likelihood voting chose a subtask's attempts (candidates best first) and what it cost."""

    views: list[int]
    view_inverses: list[str]
    n_distinct: int
    candidates: list[CandidateScore]
    n_rows: int = 0
    call_rows: int = 0
    call_seconds: float = 0.0


@dataclass
class SubtaskPrediction:
    """Two attempts for one subtask with one adapter, the pass@2 verdict (``None``: answer unknown)."""

    subtask_id: str
    attempts: list[GridList]
    solved: bool | None
    n_views: int
    n_decoded: int
    max_new_tokens: int
    voting: str
    views: list[ViewOutput] | None = None
    reference_attempts: list[GridList] | None = None
    reference_solved: bool | None = None
    likelihood: LikelihoodVote | None = None

    def compact(self) -> SubtaskPrediction:
        """The prediction without its per-view outputs (what an edit record keeps)."""
        return dataclasses.replace(self, views=None)


@dataclass
class SelfEditAttempt:
    """One sample drawn for a self-edit index and its parse outcome."""

    completion: str
    valid: bool
    reason: str | None
    option_probabilities: dict[str, dict[str, float]] | None = None


@dataclass
class SelfEditSample:
    """One self-edit index of a task: every sample drawn for it and the config that was kept."""

    edit_index: int
    completion: str
    config: SelfEditConfig | None
    reason: str | None
    attempts: list[SelfEditAttempt] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.config is not None


def parse_config_dict(payload: dict[str, Any]) -> SelfEditConfig:
    """A :class:`SelfEditConfig` from its nested dict as stored in records (no lr/epoch bounds)."""
    return config_from_dict(payload, lr_range=(0.0, math.inf), max_epochs=10**9)


# ------------------------------------------------------------------------------ record kinds
@dataclass(kw_only=True)
class ArcSelfEditRecord(Record):
    """A sampled self-edit of one task (``self_edit`` mode)."""

    KIND = "arc_self_edit"
    STEM = "arc_self_edits"

    id: str
    task_id: str
    edit_index: int
    seed: int
    prompt: Messages
    completion: str
    valid: bool
    reason: str | None
    config: dict[str, Any] | None
    attempts: list[SelfEditAttempt] = field(default_factory=list)

    @classmethod
    def of(cls, task_id: str, sample: SelfEditSample, *, seed: int, prompt: Messages) -> ArcSelfEditRecord:
        return cls(
            id=f"{task_id}/{sample.edit_index}",
            task_id=task_id,
            edit_index=sample.edit_index,
            seed=seed,
            prompt=prompt,
            completion=sample.completion,
            valid=sample.valid,
            reason=sample.reason,
            config=None if sample.config is None else sample.config.to_dict(),
            attempts=list(sample.attempts),
        )

    def sample(self) -> SelfEditSample:
        """The sample again, its config parsed."""
        config = None if self.config is None else parse_config_dict(self.config)
        return SelfEditSample(self.edit_index, self.completion, config, self.reason, list(self.attempts))


@dataclass
class ArcEditRecord(Record):
    """The evaluation of one (task, self-edit) pair - or of the task in ``icl``/``fixed`` mode.

    The pipeline builds it as the pair runs (``seal_pl.pipelines.arc.Outcome`` is this class);
    its ``subtasks`` then carry every view's output, which the written record leaves out.
    """

    KIND = "arc_edit"
    STEM = "arc_edits"

    id: str = field(default="", kw_only=True)
    task_id: str
    edit_index: int
    mode: str
    config: dict[str, Any] | None = None
    prompt: Messages | None = None
    completion: str | None = None
    valid: bool = True
    reason: str | None = None
    skipped: str | None = None
    trained: bool = False
    n_train_examples: int = 0
    planned_steps: int = 0
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    train_tokens: int = 0
    train_seconds: float = 0.0
    infer_seconds: float = 0.0
    subtasks: list[SubtaskPrediction] = field(default_factory=list)
    solved: bool | None = False
    reward: int | None = 0

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"{self.task_id}/{self.edit_index}"

    def compact(self) -> ArcEditRecord:
        """The record as written: subtask verdicts without the per-view outputs."""
        return dataclasses.replace(self, subtasks=[subtask.compact() for subtask in self.subtasks])

    def predictions(self) -> list[ArcPredictionRecord]:
        """One prediction record per subtask (with the per-view outputs)."""
        return [ArcPredictionRecord.of(self, subtask) for subtask in self.subtasks]


@dataclass(kw_only=True)
class ArcPredictionRecord(SubtaskPrediction, Record):
    """One subtask's prediction with one self-edit (the fields of :class:`SubtaskPrediction`, and
    which task, self-edit and mode it belongs to)."""

    KIND = "arc_prediction"
    STEM = "arc_predictions"

    id: str
    task_id: str
    edit_index: int
    mode: str

    @classmethod
    def of(cls, edit: ArcEditRecord, subtask: SubtaskPrediction) -> ArcPredictionRecord:
        fields = {f.name: getattr(subtask, f.name) for f in dataclasses.fields(SubtaskPrediction)}
        return cls(
            **fields,
            id=f"{subtask.subtask_id}/{edit.edit_index}",
            task_id=edit.task_id,
            edit_index=edit.edit_index,
            mode=edit.mode,
        )


@dataclass(kw_only=True)
class ArcTaskRecord(Record):
    """A finished task: the reward of each self-edit index (``None``: unscored), solved, wall time."""

    KIND = "arc_task"
    STEM = "arc_tasks"

    task_id: str
    mode: str
    subtask_ids: list[str]
    rewards: list[int | None]
    solved: bool | None
    success_rate: float | None
    seconds: float


# ----------------------------------------------------------------------------------- reading
R = TypeVar("R", bound=Record)


def latest_by_id(records: Iterable[R]) -> list[R]:
    """One record per ``id`` (the last written wins: a resumed run may write one again), sorted by id."""
    by_id = {record.id: record for record in records}
    return [by_id[key] for key in sorted(by_id)]


def read_estep(stage_dir: str | Path) -> tuple[list[ArcEditRecord], list[ArcSelfEditRecord]]:
    """The ARC E-step's records in a run directory: every rank's edit records and self-edit samples,
    one per id (the last written wins), sorted by id."""
    edits = read_all_typed(ArcEditRecord.shards(stage_dir), ArcEditRecord)
    samples = read_all_typed(ArcSelfEditRecord.shards(stage_dir), ArcSelfEditRecord)
    return latest_by_id(edits), latest_by_id(samples)


@dataclass
class ArcRun:
    """Every rank's records of a run directory, merged: tasks by id, edits and predictions by id."""

    tasks: dict[str, ArcTaskRecord]
    edits: list[ArcEditRecord]
    predictions: list[ArcPredictionRecord]

    @classmethod
    def read(cls, run_dir: str | Path) -> ArcRun:
        tasks = {t.task_id: t for t in read_all_typed(ArcTaskRecord.shards(run_dir), ArcTaskRecord)}
        edits = latest_by_id(read_all_typed(ArcEditRecord.shards(run_dir), ArcEditRecord))
        predictions = latest_by_id(read_all_typed(ArcPredictionRecord.shards(run_dir), ArcPredictionRecord))
        return cls(tasks, edits, predictions)

    def write_merged(self, run_dir: str | Path) -> None:
        """``arc_edits.jsonl`` and ``arc_predictions.jsonl``: every rank's records, one per id."""
        rewrite_typed(ArcEditRecord.merged(run_dir), self.edits)
        rewrite_typed(ArcPredictionRecord.merged(run_dir), self.predictions)
