"""ReST-EM filters: best-of-K with optional minimum gain, ARC successes, reward statistics."""

from __future__ import annotations

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
