"""seal_pl.stats.exchange_null: the resampling-only null of a comparison between two evaluations."""

from __future__ import annotations

import pytest

from seal_pl.stats import exchange_null


def test_same_samples_on_both_sides_look_like_noise():
    groups = [([[1, 0, 1], [0, 0, 1]], [[1, 0, 1], [0, 0, 1]]) for _ in range(5)]
    result = exchange_null(groups, permutations=300, seed=1)
    assert result["observed"] == {"difference": 0.0, "a_better": 0, "b_better": 0}
    assert result["p_value"] == 1.0 and result["n"] == 15
    null = result["null"]
    assert null["difference"]["low"] <= 0.0 <= null["difference"]["high"]
    # dealing one passage's two different samples at random moves its first question half the time
    assert 0 < null["a_better"]["mean"] < 5 and null["a_better"]["low"] <= null["a_better"]["high"]


def test_a_real_difference_is_far_outside_the_null():
    groups = [([[1, 1], [1, 1], [1, 1]], [[0, 0], [0, 0], [0, 0]]) for _ in range(8)]
    result = exchange_null(groups, permutations=500, seed=0)
    assert result["observed"] == {"difference": 1.0, "a_better": 16, "b_better": 0}
    assert result["p_value"] < 0.01
    assert result["null"]["a_better"]["high"] < 16 and abs(result["null"]["difference"]["mean"]) < 0.2


def test_whole_self_edits_move_together_and_the_seed_fixes_the_draws():
    # one sample knows both questions, the other neither: a side's two questions always agree, so a
    # permutation moves either both questions of a passage or none
    groups = [([[1, 1]], [[0, 0]])] * 3
    result = exchange_null(groups, permutations=400, seed=3)
    for key in ("a_better", "b_better"):
        assert result["null"][key]["low"] % 2 == 0 and result["null"][key]["high"] % 2 == 0
    assert exchange_null(groups, permutations=400, seed=3) == result


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="at least one group"):
        exchange_null([])
    with pytest.raises(ValueError, match="each side"):
        exchange_null([([[1]], [])])
    with pytest.raises(ValueError, match="same, non-empty questions"):
        exchange_null([([[1, 0]], [[1]])])
    with pytest.raises(ValueError, match="permutations"):
        exchange_null([([[1]], [[0]])], permutations=0)
    with pytest.raises(ValueError, match="confidence"):
        exchange_null([([[1]], [[0]])], confidence=1.0)
