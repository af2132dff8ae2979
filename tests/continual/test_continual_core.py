"""The continual experiment's plain-Python core: sequences, replay, matrix statistics, summary, heatmap."""

from __future__ import annotations

import math
import statistics

import pytest

from seal_pl.pipelines.continual import (
    REFERENCE,
    Merge,
    Replay,
    Route,
    draw_sequences,
    forgetting_summary,
    format_matrix,
    format_summary,
    is_valid_cell,
    matrix_from_rows,
    matrix_stats,
    pool,
    pool_matrix_stats,
    replay_size,
    sample_replay,
    save_heatmap,
    summarize_sequences,
)


def test_sequences_are_distinct_seeded_and_independent_of_count():
    sequences = draw_sequences(16, 5, 4, seed=42)
    assert len(sequences) == 5 and all(len(s) == 4 and len(set(s)) == 4 for s in sequences)
    assert all(0 <= i < 16 for s in sequences for i in s)
    assert draw_sequences(16, 3, 4, seed=42) == sequences[:3]  # sequence s depends on s only
    assert draw_sequences(16, 5, 4, seed=43) != sequences
    with pytest.raises(ValueError, match="at least 5"):
        draw_sequences(4, 1, 5)


def test_replay_is_spread_over_earlier_updates_and_seeded():
    history = [["a1", "a2", "a3"], ["b1", "b2"], ["c1"]]
    three = sample_replay(history, 3, seed=0)
    assert sorted(t[0] for t in three) == ["a", "b", "c"]  # one per earlier passage first
    assert sample_replay(history, 3, seed=0) == three
    everything = sample_replay(history, 100, seed=1)
    assert sorted(everything) == sorted(t for h in history for t in h)  # no repeats, capped by the history
    assert sample_replay([], 4, seed=0) == []
    assert replay_size(10, 0.5, None) == 5 and replay_size(10, 0.5, 3) == 3 and replay_size(3, 0.0, None) == 0


def test_replay_strategy_mixes_earlier_texts_and_merge_does_not():
    new, history = ["new1", "new2"], [["old1", "old2", "old3"]]
    assert Merge().training_texts(1, new, history, seed=0) == (new, 0)
    texts, n = Replay(fraction=1.0).training_texts(1, new, history, seed=0)
    assert texts[:2] == new and n == 2 and set(texts[2:]) <= set(history[0])
    assert Replay(count=5).training_texts(1, new, history, seed=0)[1] == 3
    assert Replay().describe() == {"name": "replay", "fraction": 1.0, "count": None}


def test_route_uses_one_slot_per_seen_passage():
    route = Route()
    assert route.adapter_slots(4) == 4 and route.train_slot(2) == 2
    assert route.answer_slot(1, updates=3) == 1 and route.answer_slot(3, updates=3) is None
    assert route.answer_slot(0, updates=0) is None
    assert Merge().answer_slot(0, updates=3) is None and Merge().adapter_slots(8) == 1


def test_matrix_shape_and_validity():
    m = matrix_from_rows([[0.1, 0.2, 0.3], [0.5], [0.4, 0.6], [0.3, 0.5, 0.7]], 3)
    assert m[1] == [0.5, None, None] and m[3] == [0.3, 0.5, 0.7]
    assert is_valid_cell(0, 2) and is_valid_cell(2, 1) and not is_valid_cell(2, 2)
    with pytest.raises(ValueError, match="row 1 needs 1"):
        matrix_from_rows([[0, 0], [0, 0], [0, 0]], 2)


def _sequences():
    return [
        matrix_from_rows([[0.0, 0.5], [1.0], [0.5, 1.0]], 2),
        matrix_from_rows([[0.5, 0.0], [0.5], [0.0, 0.5]], 2),
        matrix_from_rows([[0.0, 0.0], [1.0], [0.5, 1.0]], 2),
    ]


def test_matrix_stats_are_per_cell_over_sequences():
    stats = matrix_stats(_sequences())
    assert stats["n"] == [[3, 3], [3, 0], [3, 3]]
    assert stats["mean"][1][0] == pytest.approx(2.5 / 3)
    assert stats["std"][1][0] == pytest.approx(statistics.pstdev([1.0, 0.5, 1.0]))
    assert stats["mean"][1][1] is None and stats["std"][1][1] is None
    sample = matrix_stats(_sequences(), ddof=1)
    assert sample["std"][2][1] == pytest.approx(statistics.stdev([1.0, 0.5, 1.0]))


def test_pooling_equals_the_std_over_all_sequences_and_averaging_stds_does_not():
    values_a, values_b = [0.0, 0.0, 0.0, 0.0], [1.0, 1.0]
    a = (len(values_a), statistics.fmean(values_a), statistics.pstdev(values_a))
    b = (len(values_b), statistics.fmean(values_b), statistics.pstdev(values_b))
    n, mean, std = pool([a, b])
    assert (n, mean) == (6, pytest.approx(1 / 3))
    assert std == pytest.approx(statistics.pstdev(values_a + values_b))
    assert (a[2] + b[2]) / 2 == 0.0  # the reference's average of the two jobs' stds
    _, _, sample_std = pool([(4, 0.0, 0.0), (2, 1.0, statistics.stdev(values_b))], ddof=1)
    assert sample_std == pytest.approx(statistics.stdev(values_a + values_b))
    assert math.isnan(pool([])[1])


def test_pool_matrix_stats_of_two_runs_equals_stats_over_all():
    sequences = _sequences()
    pooled = pool_matrix_stats([matrix_stats(sequences[:1]), matrix_stats(sequences[1:])])
    direct = matrix_stats(sequences)
    assert pooled["n"] == direct["n"]
    for r in range(3):
        for c in range(2):
            if direct["mean"][r][c] is None:
                assert pooled["mean"][r][c] is None
            else:
                assert pooled["mean"][r][c] == pytest.approx(direct["mean"][r][c])
                assert pooled["std"][r][c] == pytest.approx(direct["std"][r][c])
    with pytest.raises(ValueError, match="ddof"):
        pool_matrix_stats([matrix_stats(sequences, ddof=0), matrix_stats(sequences, ddof=1)])


def test_forgetting_summary():
    mean = matrix_from_rows([[0.1, 0.2, 0.3], [0.5], [0.4, 0.6], [0.2, 0.5, 0.7]], 3)
    s = forgetting_summary(mean)
    assert s["diagonal"] == [0.5, 0.6, 0.7]
    assert s["final_row"] == [0.2, 0.5, 0.7]
    assert s["forgetting"] == pytest.approx([0.3, 0.1, 0.0])
    assert s["final_minus_base"] == pytest.approx([0.1, 0.3, 0.4])
    assert s["row_means"] == pytest.approx([0.2, 0.5, 0.5, 1.4 / 3])
    assert s["forgetting_mean"] == pytest.approx(0.2)  # passages that saw later updates
    assert s["final_at_least_base"] is True
    assert "diagonal" in format_summary(s) and "after 3" in format_matrix(mean)


def test_summarize_sequences_and_reference_shape():
    report = summarize_sequences(_sequences())
    assert report["n_sequences"] == 3
    assert report["summary"]["diagonal"] == pytest.approx([2.5 / 3, 2.5 / 3])
    per_sequence_base = [0.25, 0.25, 0.0]
    assert report["spread"]["base_row_mean"]["mean"] == pytest.approx(statistics.fmean(per_sequence_base))
    assert report["spread"]["base_row_mean"]["std"] == pytest.approx(statistics.pstdev(per_sequence_base))
    assert len(REFERENCE["diagonal"]) == len(REFERENCE["final_row"]) == 8
    assert sum(REFERENCE["final_row"]) / 8 == pytest.approx(REFERENCE["final_row_mean"], abs=1e-3)


def test_heatmap_png(tmp_path):
    report = summarize_sequences(_sequences())
    out = save_heatmap(
        [
            {"title": "a", "mean": report["matrix"]["mean"], "std": report["matrix"]["std"]},
            {"title": "b", "mean": report["matrix"]["mean"]},
        ],
        tmp_path / "h.png",
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
