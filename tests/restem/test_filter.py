"""ReST-EM filters: best-of-K with optional minimum gain, ARC successes, reward statistics."""

from __future__ import annotations

import pytest

from seal_pl.pipelines.restem import best_of_k, keep_successes, reward_statistics


def rec(pid, k, reward, gain=None, **extra):
    return {
        "passage_id": pid,
        "edit_index": k,
        "reward": reward,
        "gain": gain,
        "prompt": f"P{pid}",
        "completion": f"{pid}-{k}",
        **extra,
    }


def test_best_of_k_keeps_the_best_and_breaks_ties_by_index():
    records = [
        rec("a", 0, 0.2, 0.2),
        rec("a", 1, 0.6, 0.6),
        rec("a", 2, 0.6, 0.6),
        rec("b", 0, 0.0, 0.0),
        rec("b", 1, 0.0, 0.0),
    ]
    kept = best_of_k(records)
    assert [r["completion"] for r in kept] == ["a-1", "b-0"]  # reference: the best is kept even with no gain
    assert kept[0]["prompt"] == "Pa"


def test_min_gain_drops_contexts_that_did_not_improve():
    records = [rec("a", 0, 0.6, 0.4), rec("b", 0, 0.2, 0.0), rec("c", 0, 0.1, -0.1)]
    assert [r["completion"] for r in best_of_k(records, min_gain=0.01)] == ["a-0"]


def test_arc_successes_and_statistics():
    records = [
        {"task_id": "t1", "edit_index": i, "reward": r, "prompt": "p", "completion": str(i)}
        for i, r in enumerate([1.0, 0.0, 1.0, 0.0])
    ]
    kept = keep_successes(records)
    assert [r["completion"] for r in kept] == ["0", "2"]
    stats = reward_statistics(records, kept, bins=2)
    assert stats["mean"] == 0.5 and stats["max"] == 1.0 and stats["min"] == 0.0
    assert stats["histogram"] == [2, 2] and stats["kept_fraction"] == 0.5
    assert reward_statistics([], [])["n"] == 0


def _scored(context, index, reward, passage_only):
    return {
        "id": f"{context}/{index}",
        "context_id": context,
        "passage_id": context,
        "edit_index": index,
        "prompt": "p",
        "completion": f"{context}-{index}",
        "reward": reward,
        "gain": reward,
        "gain_over_passage": reward - passage_only,
        "components": {"passage_only_accuracy": passage_only},
        "stats": {"words": 10.0 * (index + 1), "lines": 1.0, "entity_coverage": 0.5, "copied_line_share": 0.0},
    }


def test_min_gain_over_passage_only_keeps_self_edits_that_beat_the_passage():
    records = [_scored("a", 0, 0.5, 0.5), _scored("a", 1, 0.25, 0.5), _scored("b", 0, 0.75, 0.25)]
    assert [r["completion"] for r in best_of_k(records, min_gain=0.01, gain_over="passage_only")] == ["b-0"]
    assert [r["completion"] for r in best_of_k(records, min_gain=0.01)] == ["a-0", "b-0"]  # over no_adaptation
    with pytest.raises(ValueError, match="gain_over"):
        best_of_k(records, gain_over="nothing")


def test_max_copied_line_share_leaves_copies_out_before_ranking():
    copy, restatement, other = _scored("a", 0, 0.75, 0.5), _scored("a", 1, 0.5, 0.25), _scored("b", 0, 0.5, 0.25)
    copy["stats"]["copied_line_share"] = 0.75
    restatement["stats"]["copied_line_share"] = 0.5
    records = [copy, restatement, other]
    assert [r["completion"] for r in best_of_k(records, group_key="context_id")] == ["a-0", "b-0"]
    kept = best_of_k(records, group_key="context_id", max_copied_line_share=0.5)
    assert [r["completion"] for r in kept] == ["a-1", "b-0"]  # the copy is out, the next best is kept
    assert [r["completion"] for r in best_of_k(records, group_key="context_id", max_copied_line_share=0.25)] == ["b-0"]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        best_of_k(records, max_copied_line_share=1.5)
    with pytest.raises(ValueError, match="copied_line_share"):
        best_of_k([rec("a", 0, 0.5)], max_copied_line_share=0.5)  # no stats: refused, not guessed


def test_round_evidence_counts_passages_whose_best_beats_passage_only():
    from seal_pl.pipelines.restem import knowledge_round_evidence

    records = [_scored("a", 0, 0.5, 0.5), _scored("a", 1, 0.25, 0.5), _scored("b", 0, 0.75, 0.25)]
    kept = best_of_k(records, group_key="context_id")
    evidence = knowledge_round_evidence(records, kept)
    assert evidence["best_beats_passage_only"] == 0.5  # a ties passage_only, b beats it
    assert evidence["self_edits"]["n"] == 3 and evidence["self_edits"]["words"] == pytest.approx(40 / 3)
    assert evidence["kept_self_edits"]["n"] == 2 and evidence["kept_self_edits"]["words"] == 10.0
