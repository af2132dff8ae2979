"""One ARC task at a time, in one of the three modes, resumably (plain Python).

* the modes, chosen once per run by name (:func:`arc_mode`): :class:`ICLMode` (in-context baseline),
  :class:`FixedMode` (TTT with one fixed recipe), :class:`SelfEditMode` (the model writes
  ``n_self_edits`` self-edits, each valid one trains and answers): what a task runs, how many
  (task, self-edit) pairs it has, when the task is solved, which submission files it writes;
* :class:`ArcProgress` - what the run directory already holds (finished pairs, sampled self-edits);
* :class:`TaskRunner` - runs one task in a mode over an :class:`~seal_pl.pipelines.arc.ARCPipeline`,
  hands every typed record (:mod:`seal_pl.arc.records`) to a :class:`TaskSink` as soon as it is
  final, and returns the task's :class:`~seal_pl.arc.records.ArcTaskRecord`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from seal_pl.arc.grids import Task
from seal_pl.arc.records import ArcEditRecord, ArcSelfEditRecord, ArcTaskRecord, SelfEditSample
from seal_pl.arc.self_edit import SelfEditConfig, oracle_config
from seal_pl.inner.trainer import check_choice
from seal_pl.pipelines.arc import ARCPipeline, Outcome, fixed_edit, task_seed


class TaskSink(Protocol):
    """Where a task's records go as soon as each is final (the Lightning module writes them)."""

    def on_self_edit(self, record: ArcSelfEditRecord) -> None: ...

    def on_outcome(self, outcome: Outcome) -> None: ...


@dataclass
class ArcProgress:
    """What a run directory already holds: the reward of every finished (task, self-edit) pair and
    the recorded self-edit samples (reused on resume instead of sampled again)."""

    rewards: dict[str, dict[int, int | None]] = field(default_factory=dict)
    samples: dict[str, dict[int, SelfEditSample]] = field(default_factory=dict)

    @classmethod
    def of(cls, edits: Iterable[ArcEditRecord], samples: Iterable[ArcSelfEditRecord]) -> ArcProgress:
        progress = cls()
        for edit in edits:
            progress.add(edit)
        for record in samples:
            progress.samples.setdefault(record.task_id, {})[record.edit_index] = record.sample()
        return progress

    def add(self, outcome: Outcome) -> None:
        self.rewards.setdefault(outcome.task_id, {})[outcome.edit_index] = outcome.reward

    def done(self, task_id: str, edit_index: int) -> bool:
        return edit_index in self.rewards.get(task_id, {})


class ArcMode(ABC):
    """One evaluation mode, chosen once per run (:func:`arc_mode`): what a task runs, how many
    (task, self-edit) pairs it has, when it counts as solved, and which submissions it writes."""

    name: ClassVar[str]
    trains: ClassVar[bool] = True
    n_self_edits: int = 1

    @abstractmethod
    def run(
        self, pipeline: ARCPipeline, task_id: str, subtasks: Sequence[Task], seed: int, progress: ArcProgress, sink
    ) -> None:
        """Evaluate the pairs of one task not in ``progress`` yet, each outcome to ``sink`` when final."""

    def solved(self, rewards: Sequence[int]) -> bool | None:
        """The task's verdict from its known rewards (``icl``/``fixed``: the one pair's)."""
        return bool(rewards[0]) if rewards else None

    def submission_files(self) -> dict[str, int]:
        """Submission file name -> the self-edit index whose attempts it holds."""
        return {"submission.json": 0}


class ICLMode(ArcMode):
    """The in-context baseline: the base model answers; no TTT."""

    name = "icl"
    trains = False

    def run(self, pipeline, task_id, subtasks, seed, progress, sink) -> None:
        if not progress.done(task_id, 0):
            sink.on_outcome(pipeline.run_icl(task_id, subtasks))


class FixedMode(ArcMode):
    """TTT with one fixed recipe, then the adapted model answers."""

    name = "fixed"

    def __init__(self, config: SelfEditConfig):
        self.config = config

    def run(self, pipeline, task_id, subtasks, seed, progress, sink) -> None:
        if not progress.done(task_id, 0):
            edits = [fixed_edit(self.config)]
            pipeline.run_configs(task_id, subtasks, edits, mode=self.name, seed=seed, on_outcome=sink.on_outcome)


class SelfEditMode(ArcMode):
    """The model writes ``n_self_edits`` self-edits per task; each valid one trains and answers.

    A task is solved when at least one self-edit solves it. Submissions: ``submission_<k>.json``
    per self-edit index and ``submission.json`` = ``submission_0.json`` (the first sampled
    self-edit, what a single-sample run would submit).
    """

    name = "self_edit"

    def __init__(self, n_self_edits: int):
        if n_self_edits < 1:
            raise ValueError("n_self_edits must be >= 1 in self_edit mode")
        self.n_self_edits = n_self_edits

    def run(self, pipeline, task_id, subtasks, seed, progress, sink) -> None:
        samples = self.samples(pipeline, task_id, subtasks[0], seed, progress, sink)
        todo = [sample for sample in samples if not progress.done(task_id, sample.edit_index)]
        prompt = pipeline.self_edit_messages(subtasks[0])
        pipeline.run_configs(
            task_id, subtasks, todo, mode=self.name, seed=seed, prompt=prompt, on_outcome=sink.on_outcome
        )

    def samples(self, pipeline, task_id: str, task: Task, seed: int, progress: ArcProgress, sink):
        """The task's self-edits: recorded ones reused, missing ones sampled (each handed to ``sink``)."""
        have = progress.samples.setdefault(task_id, {})
        missing = [k for k in range(self.n_self_edits) if k not in have]
        if missing:
            prompt = pipeline.self_edit_messages(task)
            for sample in pipeline.sample_self_edits(task, missing, seed):
                have[sample.edit_index] = sample
                sink.on_self_edit(ArcSelfEditRecord.of(task_id, sample, seed=seed, prompt=prompt))
        return [have[k] for k in range(self.n_self_edits)]

    def solved(self, rewards: Sequence[int]) -> bool | None:
        return any(rewards) if rewards else None

    def submission_files(self) -> dict[str, int]:
        files = {f"submission_{k}.json": k for k in range(self.n_self_edits)}
        return {**files, "submission.json": 0}


ModeName = Literal["icl", "fixed", "self_edit"]
MODES: dict[str, Callable[[SelfEditConfig | None, int], ArcMode]] = {
    "icl": lambda fixed_config, n_self_edits: ICLMode(),
    "fixed": lambda fixed_config, n_self_edits: FixedMode(fixed_config or oracle_config()),
    "self_edit": lambda fixed_config, n_self_edits: SelfEditMode(n_self_edits),
}
"""Mode name -> ``(fixed_config, n_self_edits) -> mode``; ``fixed`` defaults to the oracle recipe."""


def arc_mode(name: str, *, fixed_config: SelfEditConfig | None = None, n_self_edits: int = 1) -> ArcMode:
    """The mode object of a mode name (the options a mode does not use are ignored)."""
    check_choice(name, "mode", tuple(MODES))
    return MODES[name](fixed_config, n_self_edits)


class TaskRunner:
    """Runs whole tasks in one mode, resumably: a task's finished pairs are not redone and its
    recorded self-edits are reused; returns the task's :class:`ArcTaskRecord`."""

    def __init__(self, pipeline: ARCPipeline, mode: ArcMode, progress: ArcProgress, seed: int = 0):
        self.pipeline, self.mode, self.progress, self.seed = pipeline, mode, progress, seed

    def run(self, task_id: str, subtasks: Sequence[Task], sink: TaskSink) -> ArcTaskRecord:
        started = time.perf_counter()
        seed = task_seed(self.seed, task_id)
        self.mode.run(self.pipeline, task_id, subtasks, seed, self.progress, _Tracked(sink, self.progress))
        by_index = self.progress.rewards.get(task_id, {})
        rewards = [by_index.get(k) for k in range(self.mode.n_self_edits)]
        known = [r for r in rewards if r is not None]
        return ArcTaskRecord(
            task_id=task_id,
            mode=self.mode.name,
            subtask_ids=[t.task_id for t in subtasks],
            rewards=rewards,
            solved=self.mode.solved(known),
            success_rate=sum(known) / len(known) if known else None,
            seconds=round(time.perf_counter() - started, 2),
        )


@dataclass
class _Tracked:
    """A sink that also notes each outcome in the progress (so the task record sees it)."""

    sink: TaskSink
    progress: ArcProgress

    def on_self_edit(self, record: ArcSelfEditRecord) -> None:
        self.sink.on_self_edit(record)

    def on_outcome(self, outcome: Outcome) -> None:
        self.progress.add(outcome)
        self.sink.on_outcome(outcome)
