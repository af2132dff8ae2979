"""The typed ARC records (round trips, wrong kinds refused, merging) and what a run reports from them."""

from __future__ import annotations

import json

import pytest

from seal_pl.arc.records import (
    ArcEditRecord,
    ArcPredictionRecord,
    ArcRun,
    ArcSelfEditRecord,
    ArcTaskRecord,
    CandidateScore,
    LikelihoodVote,
    SelfEditAttempt,
    SelfEditSample,
    SubtaskPrediction,
    ViewOutput,
    read_estep,
)
from seal_pl.arc.results import format_results, likelihood_summary, submissions, success_rate, summarize
from seal_pl.arc.self_edit import oracle_config
from seal_pl.records import RecordKindError, append, read_typed

PROMPT = [{"role": "user", "content": "write a self-edit"}]


def prediction(subtask_id: str = "t-0", solved: bool | None = True, **changes) -> SubtaskPrediction:
    fields = {
        "subtask_id": subtask_id,
        "attempts": [[[1, 2]], [[0]]],
        "solved": solved,
        "n_views": 2,
        "n_decoded": 1,
        "max_new_tokens": 9,
        "voting": "reference",
        "views": [ViewOutput("identity", True, output="[[1 2]]#"), ViewOutput("Transpose", False, "unparseable")],
    }
    return SubtaskPrediction(**{**fields, **changes})


def edit(task_id: str = "t", k: int = 0, reward: int | None = 1, **changes) -> ArcEditRecord:
    solved = None if reward is None else bool(reward)
    base = {"subtasks": [prediction(f"{task_id}-0", solved)], "solved": solved, "reward": reward}
    return ArcEditRecord(task_id, k, "self_edit", **{**base, **changes})


def sample_record() -> ArcSelfEditRecord:
    attempts = [
        SelfEditAttempt("{bad", False, "no JSON object found in the response"),
        SelfEditAttempt("{}", True, None, option_probabilities={"epochs": {"1": 0.25, "2": 0.75}}),
    ]
    sample = SelfEditSample(1, "{}", oracle_config(), None, attempts)
    return ArcSelfEditRecord.of("t", sample, seed=7, prompt=PROMPT)


def task(task_id: str = "t", rewards=(1,), solved=True, subtask_ids=None) -> ArcTaskRecord:
    known = [r for r in rewards if r is not None]
    return ArcTaskRecord(
        task_id=task_id,
        mode="self_edit",
        subtask_ids=subtask_ids or [f"{task_id}-0"],
        rewards=list(rewards),
        solved=solved,
        success_rate=sum(known) / len(known) if known else None,
        seconds=1.5,
    )


def likely() -> SubtaskPrediction:
    vote = LikelihoodVote([0, 1], ["identity", "Transpose"], 2, [CandidateScore([[1, 2]], 1, -3.0, [-1.0, -2.0])])
    vote.n_rows, vote.call_rows, vote.call_seconds = 2, 2, 0.01
    return prediction(voting="likelihood", likelihood=vote, reference_attempts=[[[0]], [[0]]], reference_solved=False)


@pytest.mark.parametrize(
    "record",
    [
        sample_record(),
        edit(),
        edit(k=1, reward=None, valid=False, reason="empty", config=None, subtasks=[]).compact(),
        ArcPredictionRecord.of(edit(), likely()),
        task(rewards=[1, None], solved=True),
    ],
    ids=["self_edit", "edit", "invalid_edit", "prediction", "task"],
)
def test_every_kind_round_trips_through_its_own_file(tmp_path, record):
    kind = type(record)
    append(kind.shard(tmp_path, 0), record)
    path = tmp_path / f"{kind.STEM}.rank0.jsonl"
    assert json.loads(path.read_text())["kind"] == kind.KIND
    (again,) = read_typed(path, kind)
    assert again == record


def test_stems_are_distinct_and_prefixed():
    kinds = [ArcSelfEditRecord, ArcEditRecord, ArcPredictionRecord, ArcTaskRecord]
    assert [k.STEM for k in kinds] == ["arc_self_edits", "arc_edits", "arc_predictions", "arc_tasks"]
    assert len({k.KIND for k in kinds}) == len(kinds)


def test_a_reader_refuses_another_kind(tmp_path):
    path = ArcEditRecord.shard(tmp_path, 0)
    append(path, task())  # a task record in the edits file
    with pytest.raises(RecordKindError, match=r"arc_edits\.rank0\.jsonl:1: a 'arc_task' record where 'arc_edit'"):
        list(read_typed(path, ArcEditRecord))


def test_self_edit_sample_comes_back_with_its_parsed_config():
    record = ArcSelfEditRecord.from_json(sample_record().to_json())
    sample = record.sample()
    assert sample.config == oracle_config() and sample.valid and record.id == "t/1"
    assert sample.attempts[1].option_probabilities == {"epochs": {"1": 0.25, "2": 0.75}}


def test_edit_record_compacts_and_splits_into_predictions():
    full = edit(k=2)
    assert full.id == "t/2"
    assert full.compact().subtasks[0].views is None and full.subtasks[0].views  # the original keeps them
    (one,) = full.predictions()
    assert one.id == "t-0/2" and one.task_id == "t" and one.edit_index == 2 and one.mode == "self_edit"
    assert one.attempts == full.subtasks[0].attempts and len(one.views) == 2


def test_read_estep_and_the_merge_keep_the_last_record_per_id(tmp_path):
    for rank, records in ((0, [edit("b"), edit("a", reward=0)]), (1, [edit("a", reward=1)])):
        for record in records:
            append(ArcEditRecord.shard(tmp_path, rank), record.compact())
    append(ArcSelfEditRecord.shard(tmp_path, 1), sample_record())
    edits, samples = read_estep(tmp_path)
    assert [(e.id, e.reward) for e in edits] == [("a/0", 1), ("b/0", 1)]
    assert [s.id for s in samples] == ["t/1"] and samples[0].seed == 7
    assert read_estep(tmp_path / "nothing") == ([], [])

    for record in edits:
        for one in record.predictions():
            append(ArcPredictionRecord.shard(tmp_path, 0), one)
    append(ArcTaskRecord.shard(tmp_path, 1), task("a"))
    run = ArcRun.read(tmp_path)
    run.write_merged(tmp_path)
    assert list(run.tasks) == ["a"] and [p.id for p in run.predictions] == ["a-0/0", "b-0/0"]
    assert [e.id for e in read_typed(ArcEditRecord.merged(tmp_path), ArcEditRecord)] == ["a/0", "b/0"]
    assert len(list(read_typed(ArcPredictionRecord.merged(tmp_path), ArcPredictionRecord))) == 2


# ------------------------------------------------------------------------------------ results
def test_summary_counts_pairs_of_finished_tasks_only():
    tasks = {"a": task("a", [1, 0]), "b": task("b", [None], solved=None)}
    edits = [
        edit("a", 0, 1, train_seconds=2.0, trained=True),
        edit("a", 1, 0, valid=False, reason="empty", config=None),
        edit("b", 0, None),
        edit("c", 0, 1),  # its task record is missing: not counted
    ]
    results = summarize(tasks, edits, mode="self_edit", n_self_edits=2)
    assert results["n_tasks"] == 2 and results["n_pairs"] == 3 and results["n_solved_pairs"] == 1
    assert results["success_rate"] == 0.5 and results["task_accuracy"] == 1.0
    assert results["subtask_accuracy"] == 0.5  # a-0: solved with edit 0, not with edit 1; b-0 unknown
    assert results["self_edits"] == {
        "valid": 2,
        "invalid": 1,
        "trained": 1,
        "skipped": {},
        "invalid_reasons": {"empty": 1},
    }
    assert results["tasks"]["a"] == {
        "solved": True,
        "rewards": [1, 0],
        "subtasks": {"a-0": [True, False]},
        "seconds": 1.5,
    }
    assert results["train_seconds"] == 2.0 and success_rate([]) is None
    text = format_results(results)
    assert "10" in text.splitlines()[1] and "success_rate=50.0%" in text


def test_submissions_fill_missing_attempts_with_the_empty_grid():
    tasks = {"t": task("t", [1, 0], subtask_ids=["t-0", "t-1"])}
    predictions = [ArcPredictionRecord.of(edit("t", 0), prediction("t-0"))]
    files = submissions(tasks, predictions, {"submission_0.json": 0, "submission_1.json": 1})
    assert files["submission_0.json"]["t"] == [
        {"attempt_1": [[1, 2]], "attempt_2": [[0]]},
        {"attempt_1": [[0]], "attempt_2": [[0]]},
    ]
    assert files["submission_1.json"]["t"][0] == {"attempt_1": [[0]], "attempt_2": [[0]]}


def test_likelihood_summary_compares_with_the_reference_vote():
    predictions = [ArcPredictionRecord.of(edit(), likely()), ArcPredictionRecord.of(edit(k=1), prediction())]
    assert likelihood_summary(predictions) == {
        "predictions": 1,
        "scored": 1,
        "changed": 1,
        "solved": 1,
        "solved_by_reference_vote": 0,
    }
