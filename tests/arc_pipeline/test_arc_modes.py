"""The ARC modes and the per-task runner with a scripted pipeline: dispatch, resume, verdicts, submissions."""

from __future__ import annotations

import pytest

from seal_pl.arc.records import ArcEditRecord, ArcSelfEditRecord, SelfEditSample
from seal_pl.arc.self_edit import oracle_config
from seal_pl.errors import OptionError
from seal_pl.pipelines.arc import task_seed
from seal_pl.pipelines.arc_tasks import (
    ArcProgress,
    FixedMode,
    ICLMode,
    SelfEditMode,
    TaskRunner,
    arc_mode,
)

PROMPT = [{"role": "user", "content": "self-edit please"}]


class Task:
    def __init__(self, task_id):
        self.task_id = task_id


class ScriptedPipeline:
    """Stands in for ARCPipeline: the reward of self-edit ``k`` is ``rewards[k]``."""

    def __init__(self, rewards):
        self.rewards = rewards
        self.sampled: list[list[int]] = []
        self.trained: list[list[int]] = []

    def self_edit_messages(self, task):
        return PROMPT

    def sample_self_edits(self, task, indices, seed):
        self.sampled.append(list(indices))
        return [SelfEditSample(k, f"edit {k}", oracle_config(), None) for k in indices]

    def run_icl(self, task_id, subtasks):
        return ArcEditRecord(task_id, 0, "icl", reward=self.rewards[0], solved=bool(self.rewards[0]))

    def run_configs(self, task_id, subtasks, edits, *, mode, seed, prompt=None, on_outcome=None):
        self.trained.append([e.edit_index for e in edits])
        for e in edits:
            reward = self.rewards[e.edit_index]
            completion = None if prompt is None else e.completion
            on_outcome(ArcEditRecord(task_id, e.edit_index, mode, prompt=prompt, completion=completion, reward=reward))


class Sink:
    def __init__(self):
        self.samples: list[ArcSelfEditRecord] = []
        self.outcomes: list[ArcEditRecord] = []

    def on_self_edit(self, record):
        self.samples.append(record)

    def on_outcome(self, outcome):
        self.outcomes.append(outcome)


SUBTASKS = [Task("t-0"), Task("t-1")]


def test_modes_are_chosen_once_by_name():
    assert isinstance(arc_mode("icl"), ICLMode) and not arc_mode("icl").trains
    fixed = arc_mode("fixed")
    assert isinstance(fixed, FixedMode) and fixed.config == oracle_config() and fixed.n_self_edits == 1
    chosen = arc_mode("self_edit", n_self_edits=3)
    assert isinstance(chosen, SelfEditMode) and chosen.n_self_edits == 3
    assert arc_mode("icl", n_self_edits=5).n_self_edits == 1, "only self_edit mode has several self-edits"
    with pytest.raises(OptionError, match="mode must be one of icl, fixed, self_edit, got 'oracle'"):
        arc_mode("oracle")
    with pytest.raises(ValueError, match="n_self_edits must be >= 1"):
        arc_mode("self_edit", n_self_edits=0)


def test_submissions_and_verdicts_per_mode():
    assert arc_mode("fixed").submission_files() == {"submission.json": 0}
    assert SelfEditMode(2).submission_files() == {"submission_0.json": 0, "submission_1.json": 1, "submission.json": 0}
    assert ICLMode().solved([0]) is False and ICLMode().solved([]) is None
    assert SelfEditMode(2).solved([0, 1]) is True and SelfEditMode(2).solved([0, 0]) is False


def test_self_edit_task_records_samples_and_outcomes_and_resumes():
    pipeline, sink = ScriptedPipeline([0, 1, 0]), Sink()
    runner = TaskRunner(pipeline, SelfEditMode(3), ArcProgress(), seed=5)
    record = runner.run("t", SUBTASKS, sink)
    assert pipeline.sampled == [[0, 1, 2]] and pipeline.trained == [[0, 1, 2]]
    assert [s.id for s in sink.samples] == ["t/0", "t/1", "t/2"]
    assert all(s.seed == task_seed(5, "t") and s.prompt == PROMPT for s in sink.samples)
    assert [o.completion for o in sink.outcomes] == ["edit 0", "edit 1", "edit 2"]
    assert record.rewards == [0, 1, 0] and record.solved is True and record.success_rate == pytest.approx(1 / 3)
    assert record.subtask_ids == ["t-0", "t-1"] and record.mode == "self_edit"

    # A resumed run with pair 0 and samples 0 and 1 on file: only the missing sample is drawn and
    # only the unfinished pairs are trained.
    progress = ArcProgress.of(sink.outcomes[:1], sink.samples[:2])
    pipeline, sink = ScriptedPipeline([0, 1, 0]), Sink()
    record = TaskRunner(pipeline, SelfEditMode(3), progress, seed=5).run("t", SUBTASKS, sink)
    assert pipeline.sampled == [[2]] and pipeline.trained == [[1, 2]]
    assert [s.id for s in sink.samples] == ["t/2"] and record.rewards == [0, 1, 0]


def test_icl_and_fixed_run_one_pair_unless_it_is_done():
    for mode in (ICLMode(), FixedMode(oracle_config())):
        pipeline, sink = ScriptedPipeline([1]), Sink()
        record = TaskRunner(pipeline, mode, ArcProgress()).run("t", SUBTASKS, sink)
        assert record.rewards == [1] and record.solved is True and len(sink.outcomes) == 1
        assert sink.samples == [] and sink.outcomes[0].completion is None
        again, sink = ScriptedPipeline([1]), Sink()
        done = ArcProgress.of([ArcEditRecord("t", 0, mode.name, reward=1)], [])
        record = TaskRunner(again, mode, done).run("t", SUBTASKS, sink)
        assert sink.outcomes == [] and again.trained == [] and record.rewards == [1]
