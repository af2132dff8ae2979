"""Frequency voting over augmented predictions, pass@2 and task-level scoring."""

import numpy as np
import pytest

from seal_pl.arc.voting import (
    column_majority,
    group_candidates,
    is_solved,
    rank_candidates,
    row_majority,
    task_results,
    vote,
)

A = np.array([[1, 1], [1, 1]])
B = np.array([[2, 2], [2, 2]])
X = np.array([[3, 3], [3, 3]])
Y = np.array([[4, 4], [4, 4]])

TRUTH = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])


def wrong_in_row(row: int) -> np.ndarray:
    """TRUTH with one row replaced: views that each get a different row wrong."""
    grid = TRUTH.copy()
    grid[row] = 0
    return grid


def same(grid_a, grid_b) -> bool:
    return np.array_equal(np.asarray(grid_a), np.asarray(grid_b))


def test_clear_majority():
    predictions = [(A, "identity")] * 5 + [(B, "identity")] * 2 + [(A, "Transpose"), (B, "Flip(0)")]
    attempt_1, attempt_2 = vote(predictions)
    assert same(attempt_1, A) and same(attempt_2, B)


def test_agreement_across_groups_beats_raw_count():
    # X is frequent in one group only; A is nominated by every group.
    predictions = [(X, "identity")] * 4 + [(A, "identity")] + [(A, "Transpose")] * 2 + [(A, "Flip(1)")] * 2
    assert same(vote(predictions)[0], A)


def test_tie_between_second_and_third_goes_to_the_identity_favourite():
    predictions = [(A, "identity")] * 3 + [(Y, "identity")] + [(A, "Transpose")] * 3 + [(X, "Transpose")] * 2
    ranked = rank_candidates(predictions)
    # X and Y are both nominated twice; X has more votes overall but Y has the identity vote.
    assert [grid.tolist()[0][0] for grid in ranked] == [1, 4, 3]
    attempt_1, attempt_2 = vote(predictions)
    assert same(attempt_1, A) and same(attempt_2, Y)


def test_without_identity_votes_the_total_count_decides():
    predictions = [(A, "identity")] * 3 + [(Y, "Flip(0)")] + [(A, "Transpose")] * 3 + [(X, "Transpose")] * 2
    assert same(vote(predictions)[1], X)


def wrong_on_diagonal(index: int) -> np.ndarray:
    """TRUTH with one diagonal cell replaced: every row and every column is right in most views."""
    grid = TRUTH.copy()
    grid[index, index] = 0
    return grid


def test_majority_fill_in_reconstructs_an_unseen_answer():
    predictions = [
        (wrong_on_diagonal(0), "identity"),
        (wrong_on_diagonal(1), "Transpose"),
        (wrong_on_diagonal(2), "Flip(0)"),
    ]
    attempt_1, attempt_2 = vote(predictions)
    assert same(attempt_1, TRUTH), "no view is right, but the row-wise majority over all views is"
    assert same(attempt_2, wrong_on_diagonal(0)), "tied runners-up: first nominated, also the identity view"
    assert is_solved((attempt_1, attempt_2), TRUTH)
    assert not is_solved(vote(predictions[:1]), TRUTH)


def test_majority_reconstructions():
    grids = [wrong_in_row(0), wrong_in_row(1), wrong_in_row(2)]
    assert same(row_majority(grids), TRUTH)
    columns = [TRUTH.copy() for _ in range(3)]
    for index, grid in enumerate(columns):
        grid[:, index] = 0
    assert same(column_majority(columns), TRUTH)
    odd_shape = [np.ones((2, 2), dtype=int)] + grids
    assert same(row_majority(odd_shape), TRUTH), "the most common shape wins"


def test_group_candidates_fill_only_when_short():
    population = [wrong_in_row(0), wrong_in_row(1), wrong_in_row(2)]
    assert [g.tolist() for g in group_candidates(population)] == [g.tolist() for g in population]
    filled = group_candidates([wrong_in_row(1)], fill_population=population)
    # Row-wise majority first (TRUTH); the column-wise one ties everywhere and so is the first-seen grid.
    assert [g.tolist() for g in filled] == [wrong_in_row(1).tolist(), TRUTH.tolist(), wrong_in_row(0).tolist()]
    assert len(group_candidates([A, A])) == 1, "a lone grid's own majority adds nothing new"


def test_group_ranking_ties_go_to_first_seen():
    assert [g.tolist() for g in group_candidates([B, A, A, B, X, Y])] == [B.tolist(), A.tolist(), X.tolist()]


def test_no_predictions_and_single_prediction():
    attempt_1, attempt_2 = vote([])
    assert attempt_1.tolist() == [[0]] and attempt_2.tolist() == [[0]]
    attempt_1, attempt_2 = vote([(A, "identity")])
    assert same(attempt_1, A) and same(attempt_2, A)


def test_vote_is_order_stable_and_validates():
    predictions = [(A, "identity"), (B, "Transpose"), (A, "Flip(0)"), (B, "identity")]
    assert all(same(x, y) for x, y in zip(vote(predictions), vote(list(predictions))))
    with pytest.raises(ValueError, match="unknown voting mode 'likelihood'"):
        vote(predictions, mode="likelihood")
    with pytest.raises(ValueError, match="2-D grid"):
        vote([(np.array([1, 2]), "identity")])


def test_is_solved_pass_at_two():
    assert is_solved((A, B), B)
    assert not is_solved((A, B), X)
    assert not is_solved((A, A), np.array([[1, 1, 1]])), "shape mismatch is wrong, not an error"


def test_task_results_need_every_subtask():
    results = task_results({"t1-0": True, "t1-1": False, "t2-0": True, "t3-0": False})
    assert results == {"t1": False, "t2": True, "t3": False}
