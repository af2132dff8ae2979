"""The typed CPT records and the plain steps that make them: self-edits, evaluation, results."""

from __future__ import annotations

import json

import pytest

from seal_pl.knowledge.cpt_records import CPTEvalRecord, CPTPredictionRecord, CPTSelfEditRecord, CPTTrainText
from seal_pl.knowledge.data import Passage, Question, load_self_edits
from seal_pl.knowledge.records import GradedAnswer
from seal_pl.pipelines.cpt import (
    completions_by_passage,
    cpt_results,
    evaluate_phase,
    missing_self_edits,
    sample_self_edits,
    self_edits_from_file,
    summarize_cpt,
)
from seal_pl.records import RecordKindError, append, read_typed, rewrite_typed

PASSAGES = [Passage(f"p{i}", f"Title {i}", f"Context {i}.", (Question(f"q{i}", "When?", ("1903",)),)) for i in range(5)]


def answer(question_id: str = "q0", correct: bool = True) -> GradedAnswer:
    return GradedAnswer(
        question_id=question_id,
        question="When?",
        gold=["1903"],
        prediction="1903" if correct else "never",
        correct=correct,
        exact=correct,
        f1=float(correct),
    )


def evaluation(phase: str = "baseline", passage: Passage = PASSAGES[0], correct: bool = True) -> CPTEvalRecord:
    step = 0 if phase == "baseline" else 4
    return CPTEvalRecord(
        id=CPTEvalRecord.id_of(phase, step, passage.id),
        phase=phase,
        global_step=step,
        passage_id=passage.id,
        title=passage.title,
        questions=[answer(passage.questions[0].id, correct)],
    )


@pytest.mark.parametrize(
    "record",
    [
        CPTSelfEditRecord.of("p0", 1, "Implication.", "model", seed=3),
        CPTSelfEditRecord.of("p0", 0, "From a file.", "edits.jsonl"),
        CPTTrainText(passage_id="p0", edit_index=None, text="Title 0\nContext 0."),
        evaluation("adapted"),
        CPTPredictionRecord.of("baseline", "p0", answer()),
    ],
    ids=["self_edit", "external_self_edit", "train_text", "eval", "prediction"],
)
def test_every_kind_round_trips_through_its_own_file(tmp_path, record):
    kind = type(record)
    append(kind.shard(tmp_path, 1), record)
    (again,) = read_typed(tmp_path / f"{kind.STEM}.rank1.jsonl", kind)
    assert again == record
    assert kind.STEM.startswith("cpt_")


def test_a_reader_refuses_another_kind(tmp_path):
    path = CPTEvalRecord.shard(tmp_path, 0)
    append(path, CPTSelfEditRecord.of("p0", 0, "x", "model"))
    with pytest.raises(RecordKindError, match=r"cpt_eval\.rank0\.jsonl:1: a 'cpt_self_edit' record where 'cpt_eval'"):
        list(read_typed(path, CPTEvalRecord))


def test_merged_self_edits_are_a_self_edits_path(tmp_path):
    records = [CPTSelfEditRecord.of(p.id, k, f"{p.id} edit {k}", "model", seed=k) for p in PASSAGES[:2] for k in (0, 1)]
    rewrite_typed(CPTSelfEditRecord.merged(tmp_path), records)
    assert load_self_edits(tmp_path / "cpt_self_edits.jsonl") == {
        "p0": ["p0 edit 0", "p0 edit 1"],
        "p1": ["p1 edit 0", "p1 edit 1"],
    }
    assert json.loads((tmp_path / "cpt_self_edits.jsonl").read_text().splitlines()[0])["kind"] == "cpt_self_edit"


def test_self_edits_come_in_fixed_chunks_shared_out_across_ranks():
    calls = []

    def sample(chunk, k, seed):
        calls.append(([p.id for p in chunk], seed))
        return [[f"{p.id}/{i}@{seed}" for i in range(k)] for p in chunk]

    everything = {p.id for p in PASSAGES}
    rank1 = list(sample_self_edits(sample, PASSAGES, everything, 2, chunk_size=2, seed=10, rank=1, world_size=2))
    assert calls == [(["p2", "p3"], 11)]  # chunks [p0 p1] [p2 p3] [p4]: rank 1 has chunk 1
    assert [(r.id, r.completion, r.seed, r.source) for r in rank1] == [
        ("p2/0", "p2/0@11", 11, "model"),
        ("p2/1", "p2/1@11", 11, "model"),
        ("p3/0", "p3/0@11", 11, "model"),
        ("p3/1", "p3/1@11", 11, "model"),
    ]
    calls.clear()
    rank0 = list(sample_self_edits(sample, PASSAGES, {"p4"}, 2, chunk_size=2, seed=10, rank=0, world_size=2))
    assert calls == [(["p4"], 12)] and [r.id for r in rank0] == ["p4/0", "p4/1"]

    have = rank1 + rank0
    assert [p.id for p in missing_self_edits(have, PASSAGES, 2)] == ["p0", "p1"]
    table = completions_by_passage(have, PASSAGES[2:], 2)
    assert table == {"p2": ["p2/0@11", "p2/1@11"], "p3": ["p3/0@11", "p3/1@11"], "p4": ["p4/0@12", "p4/1@12"]}
    external = self_edits_from_file(PASSAGES[:1], 1, {"p0": ["first", "second"]}, "edits.jsonl")
    assert [(r.id, r.completion, r.source, r.seed) for r in external] == [("p0/0", "first", "edits.jsonl", None)]


def test_evaluation_skips_finished_passages_and_ties_adapted_answers_to_the_step():
    asked = []

    def grade(passage):
        asked.append(passage.id)
        return [answer(passage.questions[0].id)]

    done = {"adapted@3/p0", "baseline/p1"}
    records = list(evaluate_phase(grade, PASSAGES[:2], "adapted", 3, done))
    assert asked == ["p1"] and [(r.id, r.global_step) for r in records] == [("adapted@3/p1", 3)]
    (baseline,) = evaluate_phase(grade, PASSAGES[:1], "baseline", 3, set())
    assert baseline.id == "baseline/p0" and baseline.global_step == 0
    (row,) = baseline.predictions()
    assert row.phase == "baseline" and row.passage_id == "p0" and row.correct


def test_results_name_the_setting_and_carry_the_summary():
    summary = summarize_cpt([evaluation("baseline", correct=False), evaluation("adapted")], PASSAGES[:1])
    results = cpt_results(
        summary,
        model="tiny",
        protocol="full",
        n_passages=1,
        k_completions=0,
        self_edits="model",
        n_training_texts=1,
        n_questions=1,
        training={"lr": 1e-3},
        wall_seconds=1.23,
    )
    assert results["paper_version"] == "v2 (full fine-tuning)" and results["self_edits"] == "none (passages only)"
    assert (results["baseline_accuracy"], results["adapted_accuracy"], results["gain"]) == (0.0, 1.0, 1.0)
    assert results["fixed"] == 1 and results["wall_seconds_this_invocation"] == 1.2
    assert results["reference"]["lora_paper_v1"]["seal"]["adapted"] == 0.4384
