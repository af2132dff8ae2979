"""The CPT core: pooled training texts, question subsets, sharding, summary."""

from __future__ import annotations

import pytest

from seal_pl.knowledge.cpt_records import CPTEvalRecord
from seal_pl.knowledge.data import Passage, Question
from seal_pl.knowledge.records import GradedAnswer
from seal_pl.knowledge.sequences import build_train_sequences
from seal_pl.pipelines.cpt import (
    REFERENCE,
    chunks,
    format_cpt,
    pooled_training_texts,
    select_eval_questions,
    shard,
    summarize_cpt,
)

P1 = Passage("p1", "Orvel Pass", "Orvel Pass opened in 1903.", (Question("q1", "When?", ("1903",)),))
P2 = Passage(
    "p2",
    "Ada Morrow",
    "Ada Morrow kept the pass.",
    (Question("q2", "Who?", ("Ada Morrow",)), Question("q3", "What?", ("the pass",))),
)


def build(passage, completion):
    return build_train_sequences(passage.title, passage.context, completion or "", split_newlines=False).sequences


def test_pooled_texts_k_self_edits_each_then_passage_only():
    edits = {"p1": ["e1", "e2", "e3"], "p2": ["f1", "f2"]}
    rows = pooled_training_texts([P1, P2], edits, 2, build)
    # The reference's count: N passages x K self-edits x (self-edit + passage) texts.
    assert len(rows) == 2 * 2 * 2
    assert [r.text for r in rows[:2]] == ["Orvel Pass\ne1", "Orvel Pass\nOrvel Pass opened in 1903."]
    assert [r.edit_index for r in rows] == [0, 0, 1, 1, 0, 0, 1, 1]
    only = pooled_training_texts([P1, P2], {}, 0, build)
    assert [r.text for r in only] == [
        "Orvel Pass\nOrvel Pass opened in 1903.",
        "Ada Morrow\nAda Morrow kept the pass.",
    ]
    assert all(r.edit_index is None for r in only)
    with pytest.raises(ValueError, match="p2.*2 self-edits, 3 needed"):
        pooled_training_texts([P1, P2], edits, 3, build)


def test_question_subset_is_seeded_and_keeps_passages():
    assert select_eval_questions([P1, P2], None) == [P1, P2]
    subset = select_eval_questions([P1, P2], 2, seed=1)
    assert sum(len(p.questions) for p in subset) == 2
    assert subset == select_eval_questions([P1, P2], 2, seed=1)
    assert all(p.questions for p in subset)
    assert sum(len(p.questions) for p in select_eval_questions([P1, P2], 99)) == 3


def test_shard_and_chunks():
    items = list(range(7))
    assert shard(items, 0, 2) == [0, 2, 4, 6] and shard(items, 1, 2) == [1, 3, 5]
    assert sorted(shard(items, 0, 3) + shard(items, 1, 3) + shard(items, 2, 3)) == items
    assert chunks(items, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError):
        shard(items, 2, 2)


def graded(*flags):
    return [
        GradedAnswer(question_id=f"q{i}", question="?", gold=["a"], prediction="a" if flag else "b", correct=flag,
                     exact=flag, f1=float(flag))
        for i, flag in enumerate(flags)
    ]  # fmt: skip


def evaluation(phase, passage, *flags):
    step = 0 if phase == "baseline" else 7
    return CPTEvalRecord(
        id=CPTEvalRecord.id_of(phase, step, passage.id),
        phase=phase,
        global_step=step,
        passage_id=passage.id,
        title=passage.title,
        questions=graded(*flags),
    )


def test_summary_baseline_adapted_gain_and_slices():
    records = [
        evaluation("baseline", P1, False),
        evaluation("baseline", P2, True, False),
        evaluation("adapted", P1, True),
        evaluation("adapted", P2, False, True),
    ]
    s = summarize_cpt(records, [P1, P2])
    assert s["baseline_accuracy"] == pytest.approx(1 / 3) and s["adapted_accuracy"] == pytest.approx(2 / 3)
    assert s["gain"] == pytest.approx(1 / 3)
    assert (s["fixed"], s["broken"]) == (2, 1)
    assert s["per_passage"][1] == {
        "passage_id": "p2",
        "title": "Ada Morrow",
        "baseline_correct": [True, False],
        "baseline_accuracy": 0.5,
        "adapted_correct": [False, True],
        "adapted_accuracy": 0.5,
    }
    assert "gain" in format_cpt(s)
    partial = summarize_cpt(records[:2], [P1, P2])
    assert partial["adapted_accuracy"] is None and partial["gain"] is None


def test_reference_numbers_are_labelled_by_paper_version():
    v1 = REFERENCE["lora_paper_v1"]
    assert v1["seal"]["adapted"] == 0.4384 and v1["gpt4_1_implications"]["adapted"] == 0.3943
    assert v1["base_implications"]["adapted"] == 0.4097
    v2 = REFERENCE["full_finetune_paper_v2"]
    assert (v2["gpt4_1_implications"]["adapted"], v2["seal"]["adapted"]) == (0.594, 0.582)
