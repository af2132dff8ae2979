"""Likelihood voting: rank candidate answers by their log-likelihood across augmented views.

The alternative to frequency voting (:mod:`seal_pl.arc.voting`) used by the ARChitects (ARC Prize
2024, "product of experts"): every distinct decoded answer of a subtask is a *candidate*, and each
inference view is an *expert* that judges every candidate, not only the answer it produced itself.
The candidate is carried into the view's frame (the view's own geometric transform, the inverse of
the ``inverse_name`` its answers are mapped back with), written in the same text format as the
answers (grid text + end marker, exactly what the model generates before it stops) and scored by
teacher forcing: the sum of the log-probabilities of its tokens given the view's prompt. A
candidate's score is the sum over the scoring views (the log of the product of the experts'
probabilities); the two best are ``attempt_1`` and ``attempt_2``.

This module is the pure part (no torch): candidate collection and capping, the choice of scoring
views, the rows to score (``(view, candidate, completion text)``), and the ranking once each row
has a log-probability. The model side - one teacher-forced forward per row, batched, through the
adapter slot that generated the answers - is
:class:`seal_pl.pipelines.arc_scoring.TeacherForcedScorer`.

Determinism: candidates are ordered by vote count (number of views that decoded to them), ties by
first appearance in the prediction list; the ranking sorts by total log-likelihood, then vote
count, then that order, so equal scores never depend on hashing or dict order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from seal_pl.arc.grids import Grid
from seal_pl.arc.inference import IDENTITY, InferenceView, to_view, view_transform
from seal_pl.arc.records import CandidateScore, LikelihoodVote
from seal_pl.arc.text import TextRepresenter

LIKELIHOOD_VIEWS = ("all", "geometric")
"""Which views score candidates: every inference view, or only the geometrically transformed ones."""

Prediction = tuple[Grid, str]


@dataclass
class Candidate:
    """A distinct decoded answer (original orientation) with its vote count and first appearance."""

    grid: Grid
    votes: int
    first_seen: int
    view_logprobs: list[float] = field(default_factory=list)
    """Log-probability of the candidate in each scoring view (in :attr:`ScoringPlan.view_indices` order)."""

    @property
    def logprob(self) -> float | None:
        """Total log-likelihood over the scoring views (``None`` before scoring)."""
        return math.fsum(self.view_logprobs) if self.view_logprobs else None

    def to_record(self) -> CandidateScore:
        return CandidateScore(
            grid=[[int(cell) for cell in row] for row in np.asarray(self.grid).tolist()],
            votes=self.votes,
            logprob=self.logprob,
            view_logprobs=list(self.view_logprobs),
        )


def _key(grid: Grid) -> tuple[tuple[int, ...], bytes]:
    return grid.shape, grid.tobytes()


def collect_candidates(predictions: Iterable[Prediction], max_candidates: int | None = None) -> list[Candidate]:
    """Distinct decoded grids, most votes first (ties: first appearance), at most ``max_candidates``.

    Args:
        predictions: ``(grid, group name)`` pairs as for :func:`~seal_pl.arc.voting.vote` (grids
            already mapped back to the original orientation).
        max_candidates: keep only this many (``None`` = all); the cap applies to the vote order.
    """
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1 or None, got {max_candidates}")
    found: dict[tuple[tuple[int, ...], bytes], Candidate] = {}
    for grid, _ in predictions:
        grid = np.asarray(grid)
        if grid.ndim != 2 or grid.size == 0:
            raise ValueError(f"a prediction must be a non-empty 2-D grid, got shape {grid.shape}")
        grid = grid.astype(np.int8)
        key = _key(grid)
        if key in found:
            found[key].votes += 1
        else:
            found[key] = Candidate(grid, 1, len(found))
    ordered = sorted(found.values(), key=lambda candidate: (-candidate.votes, candidate.first_seen))
    return ordered if max_candidates is None else ordered[:max_candidates]


def _usable(view: InferenceView) -> bool:
    try:
        view_transform(view.inverse_name)
    except ValueError:  # unknown name or NotInvertibleError
        return False
    return True


def scoring_view_indices(views: Sequence[InferenceView], which: str = "all") -> list[int]:
    """Indices of the views that score candidates.

    ``all``: every view whose transform can be re-applied; ``geometric``: only the transformed
    ones (inverse other than ``identity``), falling back to all when there are none.
    """
    if which not in LIKELIHOOD_VIEWS:
        raise ValueError(f"unknown likelihood_views {which!r}; available: {list(LIKELIHOOD_VIEWS)}")
    usable = [index for index, view in enumerate(views) if _usable(view)]
    if which == "geometric":
        geometric = [index for index in usable if views[index].inverse_name != IDENTITY]
        if geometric:
            return geometric
    return usable


def candidate_text(grid: Grid, view: InferenceView, representer: TextRepresenter) -> str:
    """The candidate as the model would write it in ``view``: transformed, rendered, end marker."""
    return representer.grid_format.grid_to_text(to_view(grid, view.inverse_name)) + representer.end_marker


@dataclass(frozen=True)
class ScoreRow:
    """One teacher-forced sequence: a candidate's text after one view's prompt."""

    view_index: int
    candidate_index: int
    completion: str


@dataclass
class ScoringPlan:
    """What to score for one subtask, and the ranking once scored."""

    candidates: list[Candidate]
    view_indices: list[int]
    rows: list[ScoreRow]
    n_distinct: int
    """Distinct decoded grids before the ``max_candidates`` cap."""

    @property
    def needs_scores(self) -> bool:
        """Scoring decides nothing with fewer than two candidates; such plans have no rows."""
        return bool(self.rows)

    def apply(self, logprobs: Sequence[float]) -> list[Candidate]:
        """Attach one log-probability per row (in :attr:`rows` order) and return the ranking."""
        if len(logprobs) != len(self.rows):
            raise ValueError(f"{len(logprobs)} scores for {len(self.rows)} rows")
        for candidate in self.candidates:
            candidate.view_logprobs = []
        for row, value in zip(self.rows, logprobs):
            self.candidates[row.candidate_index].view_logprobs.append(float(value))
        return self.ranked()

    def ranked(self) -> list[Candidate]:
        """Candidates by total log-likelihood (highest first), then votes, then first appearance."""
        return rank_by_likelihood(self.candidates)

    def attempts(self) -> tuple[Grid, Grid]:
        """``(attempt_1, attempt_2)``: the two best; one candidate twice; ``[[0]]`` twice without any."""
        ranked = self.ranked()
        if not ranked:
            empty = np.zeros((1, 1), dtype=np.int8)
            return empty, empty.copy()
        return ranked[0].grid, ranked[1].grid if len(ranked) > 1 else ranked[0].grid

    def to_record(self, views: Sequence[InferenceView]) -> LikelihoodVote:
        """The plan as recorded (candidates best first); the caller adds the scoring call's cost."""
        return LikelihoodVote(
            views=list(self.view_indices),
            view_inverses=[views[index].inverse_name for index in self.view_indices],
            n_distinct=self.n_distinct,
            candidates=[candidate.to_record() for candidate in self.ranked()],
            n_rows=len(self.rows),
        )


def rank_by_likelihood(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Highest total log-likelihood first; ties (and unscored candidates) by votes, then first seen."""

    def key(candidate: Candidate) -> tuple[float, int, int]:
        total = candidate.logprob
        return (-(total if total is not None else -math.inf), -candidate.votes, candidate.first_seen)

    return sorted(candidates, key=key)


def plan_scoring(
    views: Sequence[InferenceView],
    predictions: Iterable[Prediction],
    representer: TextRepresenter,
    *,
    which: str = "all",
    max_candidates: int | None = None,
) -> ScoringPlan:
    """Candidates, scoring views and the rows (view-major) for one subtask.

    With fewer than two candidates there is nothing to decide and no row is planned (the lone
    candidate, if any, is both attempts).
    """
    predictions = list(predictions)
    n_distinct = len(collect_candidates(predictions))
    candidates = collect_candidates(predictions, max_candidates)
    view_indices = scoring_view_indices(views, which)
    rows: list[ScoreRow] = []
    if len(candidates) >= 2:
        rows = [
            ScoreRow(view_index, candidate_index, candidate_text(candidate.grid, views[view_index], representer))
            for view_index in view_indices
            for candidate_index, candidate in enumerate(candidates)
        ]
    return ScoringPlan(candidates, view_indices, rows, n_distinct)


def likelihood_vote(
    views: Sequence[InferenceView],
    predictions: Iterable[Prediction],
    representer: TextRepresenter,
    logprob: Callable[[Sequence[tuple[InferenceView, str]]], Sequence[float]],
    *,
    which: str = "all",
    max_candidates: int | None = None,
) -> tuple[Grid, Grid, ScoringPlan]:
    """``(attempt_1, attempt_2, plan)`` for one subtask.

    Args:
        views: the subtask's inference views (prompts and transforms).
        predictions: their decoded answers mapped back, with group names.
        representer: the text format the answers were generated in.
        logprob: ``[(view, completion text), ...] -> [log p(completion | view's prompt), ...]``.
        which: scoring views, see :func:`scoring_view_indices`.
        max_candidates: score only the most voted candidates.
    """
    plan = plan_scoring(views, predictions, representer, which=which, max_candidates=max_candidates)
    if plan.needs_scores:
        plan.apply(logprob([(views[row.view_index], row.completion) for row in plan.rows]))
    attempt_1, attempt_2 = plan.attempts()
    return attempt_1, attempt_2, plan
