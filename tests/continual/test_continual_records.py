"""The typed continual records, their merge, results.json, and one sequence run with scripted parts."""

from __future__ import annotations

import pytest

from seal_pl.inner.trainer import AdaptResult
from seal_pl.knowledge.continual_records import (
    ContinualPredictionRecord,
    ContinualSequenceRecord,
    ContinualStep,
    merge_continual,
)
from seal_pl.knowledge.data import Passage, Question
from seal_pl.knowledge.records import GradedAnswer
from seal_pl.pipelines.continual import (
    BaseWeights,
    ContinualRun,
    Merge,
    Replay,
    SequenceItem,
    continual_results,
    format_results,
)
from seal_pl.records import RecordKindError, append, read_typed

PASSAGES = [Passage(f"p{i}", f"T{i}", f"Context {i}.", (Question(f"q{i}", "?", ("a",)),)) for i in range(3)]


def answer(question_id: str = "q0", correct: bool = True) -> GradedAnswer:
    return GradedAnswer(
        question_id=question_id, question="?", gold=["a"], prediction="a", correct=correct, exact=correct, f1=1.0
    )


def step(k: int = 1) -> ContinualStep:
    return ContinualStep(
        step=k,
        passage_id=f"p{k - 1}",
        self_edit_source="model",
        completion="An implication.",
        completion_was_empty=False,
        sequences=["T\nAn implication.", "T\nContext."],
        n_replayed=0,
        replayed=[],
        losses=[1.5, 1.25],
        train_steps=2,
        train_tokens=20,
        generate_seconds=0.5,
        train_seconds=1.0,
        answer_seconds=0.25,
    )


def sequence(sequence_id: str = "seq-0000", final: float = 0.0) -> ContinualSequenceRecord:
    return ContinualSequenceRecord(
        id=sequence_id,
        index=int(sequence_id[-4:]),
        passage_ids=["p0"],
        titles=["T0"],
        strategy={"name": "merge"},
        matrix=[[0.0], [final]],
        n_correct=[[0], [int(final)]],
        n_questions=[[1], [1]],
        steps=[step()],
        seconds=2.0,
    )


@pytest.mark.parametrize(
    "record",
    [sequence(), ContinualPredictionRecord.of("seq-0000", 1, 0, "p0", answer())],
    ids=["sequence", "prediction"],
)
def test_every_kind_round_trips_through_its_own_file(tmp_path, record):
    kind = type(record)
    append(kind.shard(tmp_path, 0), record)
    (again,) = read_typed(tmp_path / f"{kind.STEM}.rank0.jsonl", kind)
    assert again == record and kind.STEM.startswith("continual_")


def test_a_reader_refuses_another_kind(tmp_path):
    path = ContinualSequenceRecord.shard(tmp_path, 0)
    append(path, ContinualPredictionRecord.of("seq-0000", 0, 0, "p0", answer()))
    with pytest.raises(RecordKindError, match="a 'continual_prediction' record where 'continual_sequence'"):
        list(read_typed(path, ContinualSequenceRecord))


def test_merge_keeps_the_last_answers_of_finished_sequences(tmp_path):
    append(ContinualSequenceRecord.shard(tmp_path, 1), sequence("seq-0001"))
    append(ContinualSequenceRecord.shard(tmp_path, 0), sequence("seq-0000"))
    for correct in (False, True):  # a killed first attempt, then the redone sequence
        append(
            ContinualPredictionRecord.shard(tmp_path, 0),
            ContinualPredictionRecord.of("seq-0000", 0, 0, "p0", answer(correct=correct)),
        )
    append(ContinualPredictionRecord.shard(tmp_path, 0), ContinualPredictionRecord.of("seq-0009", 0, 0, "p0", answer()))
    ordered = merge_continual(tmp_path)
    assert [s.id for s in ordered] == ["seq-0000", "seq-0001"]
    merged = list(read_typed(ContinualPredictionRecord.merged(tmp_path), ContinualPredictionRecord))
    assert [(p.sequence_id, p.correct) for p in merged] == [("seq-0000", True)]
    assert [s.id for s in read_typed(ContinualSequenceRecord.merged(tmp_path), ContinualSequenceRecord)] == [
        "seq-0000",
        "seq-0001",
    ]
    assert merge_continual(tmp_path / "empty") == [] and not (tmp_path / "empty").exists()


def test_results_summarise_the_sequences():
    results = continual_results(
        [sequence("seq-0000", 1.0), sequence("seq-0001", 0.0)],
        model="tiny",
        strategy={"name": "merge"},
        wall_seconds=3.04,
    )
    assert results["experiment"] == "knowledge_continual" and results["model"] == "tiny" and results["length"] == 1
    assert results["n_sequences"] == 2 and results["matrix"]["mean"] == [[0.0], [0.5]]
    assert results["seconds"] == {"sequences": 4.0, "generate": 1.0, "train": 2.0, "this_invocation": 3.0}
    assert results["empty_self_edits"] == 0 and results["reference"]["final_row_mean"] == 0.247
    assert "after 1" in format_results(results) and "final row" in format_results(results)


# ------------------------------------------------------------------------- one sequence, scripted
class Bank:
    def __init__(self):
        self.merged: list[int] = []
        self.resets = 0

    def iter_layers(self):
        return iter(())

    def reset(self):
        self.resets += 1

    def merge_into_base(self, slot):
        self.merged.append(slot)


class Generator:
    def __init__(self):
        self.changes: list[bool] = []

    def base_weights_changed(self, restored: bool = False):
        self.changes.append(restored)


class Trainer:
    def __init__(self):
        self.jobs = []

    def adapt(self, jobs, slots):
        self.jobs.append((jobs[0], slots))
        return [AdaptResult(slot=slots[0], losses=[2.0, 1.0], steps=2, train_tokens=10, seconds=0.1)]


class Settings:
    loss_after_marker = None


class Pipeline:
    """Answers are correct once the passage's update is done (so the matrix is predictable)."""

    def __init__(self):
        self.trainer, self.generator, self.settings = Trainer(), Generator(), Settings()
        self.learned: set[str] = set()
        self.sampled: list[tuple[str, int]] = []

    def answer(self, passage, slots):
        return [["a" if passage.id in self.learned else "b"] for _ in slots]

    def grade(self, passage, predictions):
        return [answer(passage.questions[0].id, correct=p == "a") for p in predictions]

    def sample_self_edits(self, passages, n, seed):
        self.sampled.append((passages[0].id, seed))
        return [[f"edit of {passages[0].id}"]]

    def training_sequences(self, passage, completion):
        self.learned.add(passage.id)
        return [f"{passage.title}\n{completion}", f"{passage.title}\n{passage.context}"], False


def test_a_sequence_runs_row_by_row_from_the_base_weights():
    pipeline, bank = Pipeline(), Bank()
    run = ContinualRun(pipeline, Merge(), bank, BaseWeights(bank), seed=100)
    seen = []
    item = SequenceItem("seq-0002", 2, PASSAGES, external={"p1": "from the file"})
    record, answers = run.run(item, on_step=lambda s, row: seen.append((s.step, [len(g) for g in row])))
    assert record.matrix == [[0.0, 0.0, 0.0], [1.0, None, None], [1.0, 1.0, None], [1.0, 1.0, 1.0]]
    assert record.n_questions == [[1, 1, 1], [1], [1, 1], [1, 1, 1]] and record.strategy == {"name": "merge"}
    assert seen == [(1, [1]), (2, [1, 1]), (3, [1, 1, 1])]
    assert pipeline.sampled == [("p0", 2100), ("p2", 2102)]  # p1's self-edit came from the file
    assert [s.self_edit_source for s in record.steps] == ["model", "file", "model"]
    assert record.steps[1].completion == "from the file" and record.steps[0].losses == [2.0, 1.0]
    assert bank.merged == [0, 0, 0] and bank.resets == 2  # restored before and after
    assert pipeline.generator.changes == [True, False, False, False, True]
    assert len(answers) == 9 and {(a.row, a.column) for a in answers} >= {(0, 2), (3, 2)}
    assert all(a.sequence_id == "seq-0002" for a in answers)


def test_replay_trains_on_earlier_texts_too():
    pipeline, bank = Pipeline(), Bank()
    record, _ = ContinualRun(pipeline, Replay(count=1), bank, BaseWeights(bank)).run(
        SequenceItem("seq-0000", 0, PASSAGES[:2])
    )
    assert [s.n_replayed for s in record.steps] == [0, 1]
    assert record.steps[1].replayed[0] in record.steps[0].sequences
    assert len(pipeline.trainer.jobs[1][0].sequences) == 3
