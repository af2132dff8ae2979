"""Likelihood voting, pure part: candidates, scoring views, rows in each view's frame, ranking."""

import numpy as np
import pytest

from seal_pl.arc.augment import Rotate, Transpose
from seal_pl.arc.inference import IDENTITY, InferenceView, build_inference_views, map_back, to_view
from seal_pl.arc.records import CandidateScore
from seal_pl.arc.scoring import (
    Candidate,
    candidate_text,
    collect_candidates,
    likelihood_vote,
    plan_scoring,
    rank_by_likelihood,
    scoring_view_indices,
)
from seal_pl.arc.text import DigitRowsGridFormat, TextRepresenter

A = np.array([[1, 2, 3], [4, 5, 6]])
B = np.array([[7, 7], [8, 9]])
C = np.array([[0]])
REPRESENTER = TextRepresenter()


def keys(grids):
    return [np.asarray(g).tolist() for g in grids]


def test_to_view_is_the_inverse_of_map_back():
    for inverse in ("identity", "Transpose", "Flip(0)", "Flip(1)", "Rotate(270)", "Rotate(180)", "Rotate(90)"):
        assert np.array_equal(map_back(to_view(A, inverse), inverse), A)
        assert np.array_equal(to_view(map_back(A, inverse), inverse), A)
    # The view recorded Rotate(270) as its inverse, so it was rotated by 90: the candidate is too.
    assert np.array_equal(to_view(A, "Rotate(270)"), Rotate(90).apply_to_grid(A))
    with pytest.raises(ValueError):
        to_view(A, "NoSuchAugmenter")


def test_candidates_are_distinct_by_votes_then_first_seen_and_capped():
    predictions = [(B, "identity"), (A, "Transpose"), (A, "identity"), (C, "Flip(0)"), (B.astype(np.int64), "x")]
    candidates = collect_candidates(predictions)
    assert keys(c.grid for c in candidates) == keys([B, A, C])  # B and A 2 votes each: B seen first
    assert [c.votes for c in candidates] == [2, 2, 1]
    assert keys(c.grid for c in collect_candidates(predictions, max_candidates=2)) == keys([B, A])
    assert collect_candidates([]) == []
    with pytest.raises(ValueError, match="max_candidates"):
        collect_candidates(predictions, max_candidates=0)
    with pytest.raises(ValueError, match="2-D grid"):
        collect_candidates([(np.array([1, 2]), "identity")])


def test_scoring_views_all_or_geometric():
    views = [InferenceView(None, IDENTITY), InferenceView(None, "Transpose"), InferenceView(None, "Rotate(270)")]
    assert scoring_view_indices(views, "all") == [0, 1, 2]
    assert scoring_view_indices(views, "geometric") == [1, 2]
    assert scoring_view_indices(views[:1], "geometric") == [0], "no geometric view: all views score"
    assert scoring_view_indices([*views, InferenceView(None, "Bogus")]) == [0, 1, 2], "unknown transform skipped"
    with pytest.raises(ValueError, match="likelihood_views"):
        scoring_view_indices(views, "some")


def test_rows_carry_each_candidate_in_each_view_frame(make_task):
    task = make_task(3)
    views = build_inference_views(task)
    plan = plan_scoring(views, [(A, IDENTITY), (B, "Transpose")], REPRESENTER)
    assert len(plan.rows) == len(views) * 2 and plan.needs_scores
    for row in plan.rows:
        view = views[row.view_index]
        grid = plan.candidates[row.candidate_index].grid
        expected = to_view(grid, view.inverse_name)
        assert row.completion == REPRESENTER.grid_format.grid_to_text(expected) + "#"
    # A candidate that is the mapped-back answer of a view is written exactly as that view answered.
    view = next(v for v in views if v.inverse_name == "Rotate(270)")
    answer_in_view = "[[1 4]\n [2 5]\n [3 6]]"
    decoded = map_back(REPRESENTER.grid_format.text_to_grid(answer_in_view), view.inverse_name)
    assert candidate_text(decoded, view, REPRESENTER) == answer_in_view + "#"
    # Same with the digits format and a transpose.
    digits = TextRepresenter(grid_format=DigitRowsGridFormat())
    assert candidate_text(A, InferenceView(task, "Transpose"), digits) == "14\n25\n36#"
    assert np.array_equal(Transpose().apply_to_grid(A), digits.grid_format.text_to_grid("14\n25\n36"))


def test_fewer_than_two_candidates_are_not_scored(make_task):
    views = build_inference_views(make_task(3))
    plan = plan_scoring(views, [(A, IDENTITY), (A, "Transpose")], REPRESENTER)
    assert not plan.needs_scores and plan.rows == []
    assert keys(plan.attempts()) == keys([A, A])
    empty = plan_scoring(views, [], REPRESENTER)
    assert keys(empty.attempts()) == [[[0]], [[0]]]

    def never(rows):
        raise AssertionError("nothing to score")

    assert keys(likelihood_vote(views, [(B, IDENTITY)], REPRESENTER, never)[:2]) == keys([B, B])


def test_ranking_by_total_log_likelihood_product_of_experts(make_task):
    views = build_inference_views(make_task(3))[:3]
    # A has the most votes but B is more likely in total: -1 + -1 + -9 = -11 vs -3 * 3 = -9.
    predictions = [(A, IDENTITY), (A, IDENTITY), (B, "Transpose"), (C, "Flip(0)")]
    table = {("A", 0): -1.0, ("A", 1): -1.0, ("A", 2): -9.0, ("B", 0): -3.0, ("B", 1): -3.0, ("B", 2): -3.0}
    names = {
        (i, REPRESENTER.grid_format.grid_to_text(to_view(g, v.inverse_name)) + "#"): n
        for n, g in (("A", A), ("B", B), ("C", C))
        for i, v in enumerate(views)
    }
    calls = []

    def logprob(rows):
        calls.append(len(rows))
        return [table.get((names[views.index(view), text], views.index(view)), -50.0) for view, text in rows]

    first, second, plan = likelihood_vote(views, predictions, REPRESENTER, logprob)
    assert keys([first, second]) == keys([B, A]) and calls == [9]
    ranked = plan.ranked()
    assert [c.logprob for c in ranked] == [-9.0, -11.0, -150.0]
    assert ranked[0].view_logprobs == [-3.0, -3.0, -3.0]
    record = plan.to_record(views)
    assert record.candidates[0] == CandidateScore(grid=B.tolist(), votes=1, logprob=-9.0, view_logprobs=[-3.0] * 3)
    assert record.views == [0, 1, 2] and record.n_distinct == 3 and record.n_rows == 9
    # The cap keeps the most voted (A, then B seen before C): C is never scored.
    calls.clear()
    capped = likelihood_vote(views, predictions, REPRESENTER, logprob, max_candidates=2)[2]
    assert calls == [6] and capped.n_distinct == 3 and len(capped.candidates) == 2


def test_ties_are_deterministic():
    tie = [Candidate(A, 1, 0, [-2.0]), Candidate(B, 2, 1, [-1.0, -1.0]), Candidate(C, 2, 2, [-2.0])]
    assert keys(c.grid for c in rank_by_likelihood(tie)) == keys([B, C, A]), "equal scores: votes, then first seen"
    assert keys(c.grid for c in rank_by_likelihood(list(reversed(tie)))) == keys([B, C, A])
    unscored = [Candidate(A, 1, 0), Candidate(B, 3, 1)]
    assert keys(c.grid for c in rank_by_likelihood(unscored)) == keys([B, A])


def test_apply_checks_the_number_of_scores(make_task):
    views = build_inference_views(make_task(3))
    plan = plan_scoring(views, [(A, IDENTITY), (B, IDENTITY)], REPRESENTER, which="geometric")
    assert {views[i].inverse_name for i in plan.view_indices} == {
        "Transpose",
        "Flip(0)",
        "Flip(1)",
        "Rotate(270)",
        "Rotate(180)",
    }
    with pytest.raises(ValueError, match="scores for"):
        plan.apply([0.0])
