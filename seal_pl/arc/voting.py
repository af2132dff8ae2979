"""Two answers per ARC subtask from many augmented predictions (spec section 1.8, voting).

Each prediction is a decoded grid, already mapped back to the original orientation, tagged with
its *group*: the inverse-transform name of the view it came from (``"identity"`` for
untransformed views). Frequency voting works in two levels:

1. **Per group.** For the group ``all`` (every prediction) and each group present - identity,
   Transpose, Flip(0), Flip(1), Rotate(180), Rotate(270) in that order, then any other name in
   sorted order - take the three most frequent grids. When a group has fewer than three
   distinct grids, add the *row-wise majority* (most common shape, then the most common row at
   each row index) and then the *column-wise majority* (same by columns) when they are new, up
   to three. Both reconstructions are computed over **all** predictions: over a group's own one
   or two distinct grids they would only reproduce one of them, whereas over everything they
   can combine the rows that most views agree on into an answer no single view produced.
2. **Pooled.** All nominated candidates are pooled; a candidate's pooled frequency is the number
   of groups that nominated it. The three most frequent form the final ranking. If the second
   and third have the same pooled frequency, the one predicted more often in the identity group
   comes second. The first two are ``attempt_1`` and ``attempt_2``.

Ties are broken deterministically: within a group, and for the shape and each row (column) of
a majority reconstruction, by first appearance in the prediction list;
in the pool by the total number of predictions of the grid, then by first nomination (groups in
the order above). With a single candidate both attempts are that grid; with no predictions both
are ``[[0]]``.

This is the reference voting (``ARCSettings.voting: reference``). The alternative,
``likelihood``, ranks the same decoded answers by the model's log-likelihood across views
(:mod:`seal_pl.arc.scoring`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from seal_pl.arc.grids import Grid, split_subtask_id

ALL_GROUP = "all"
IDENTITY_GROUP = "identity"
GROUP_ORDER = (IDENTITY_GROUP, "Transpose", "Flip(0)", "Flip(1)", "Rotate(180)", "Rotate(270)")
"""The reference groups, in the order their candidates are pooled (after ``all``)."""

CANDIDATES_PER_GROUP = 3
VOTING_MODES = ("frequency",)

Prediction = tuple[Grid, str]
GridKey = tuple[tuple[int, ...], bytes]


def _as_prediction_grid(grid: Grid) -> Grid:
    array = np.asarray(grid)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"a prediction must be a non-empty 2-D grid, got shape {array.shape}")
    return array.astype(np.int8)


def _key(grid: Grid) -> GridKey:
    return grid.shape, grid.tobytes()


def _by_frequency(items: Iterable[Hashable]) -> list[Hashable]:
    """Distinct items, most frequent first; equal counts keep the order of first appearance."""
    counts = Counter(items)
    return sorted(counts, key=lambda item: -counts[item])


def _majority_rows(grids: Sequence[Grid]) -> Grid:
    """Most common shape (first seen on ties), then the most common row at each row index."""
    shape = _by_frequency(grid.shape for grid in grids)[0]
    same_shape = [grid for grid in grids if grid.shape == shape]
    rows = [_by_frequency(grid[index].tobytes() for grid in same_shape)[0] for index in range(shape[0])]
    return np.stack([np.frombuffer(row, dtype=np.int8) for row in rows])


def row_majority(grids: Sequence[Grid]) -> Grid:
    """Row-wise majority reconstruction of ``grids`` (see module docstring)."""
    return _majority_rows([_as_prediction_grid(grid) for grid in grids])


def column_majority(grids: Sequence[Grid]) -> Grid:
    """Column-wise majority reconstruction: the row-wise one on the transposed grids."""
    return _majority_rows([np.ascontiguousarray(_as_prediction_grid(grid).T) for grid in grids]).T.copy()


def group_candidates(grids: Sequence[Grid], fill_population: Sequence[Grid] | None = None) -> list[Grid]:
    """Up to three candidates for one group: its most frequent grids, then majority fill-ins.

    Args:
        grids: the group's predictions.
        fill_population: predictions the row/column-wise majorities are computed over when the
            group has fewer than three distinct grids (default: ``grids``).
    """
    grids = [_as_prediction_grid(grid) for grid in grids]
    first: dict[GridKey, Grid] = {}
    for grid in grids:
        first.setdefault(_key(grid), grid)
    chosen = [first[key] for key in _by_frequency(_key(grid) for grid in grids)[:CANDIDATES_PER_GROUP]]
    if len(chosen) >= CANDIDATES_PER_GROUP:
        return chosen
    population = grids if fill_population is None else fill_population
    for fill in (row_majority(population), column_majority(population)):
        if len(chosen) < CANDIDATES_PER_GROUP and all(_key(fill) != _key(candidate) for candidate in chosen):
            chosen.append(fill)
    return chosen


def _groups(predictions: Sequence[Prediction]) -> dict[str, list[Grid]]:
    """``all`` plus each present group, in pooling order."""
    by_name: dict[str, list[Grid]] = {}
    for grid, name in predictions:
        by_name.setdefault(name, []).append(grid)
    ordered = [name for name in GROUP_ORDER if name in by_name]
    ordered += sorted(name for name in by_name if name not in GROUP_ORDER)
    return {ALL_GROUP: [grid for grid, _ in predictions], **{name: by_name[name] for name in ordered}}


def rank_candidates(predictions: Iterable[Prediction]) -> list[Grid]:
    """The final top-3 ranking (fewer when fewer distinct candidates exist)."""
    predictions = [(_as_prediction_grid(grid), str(name)) for grid, name in predictions]
    if not predictions:
        return []
    groups = _groups(predictions)
    total = Counter(_key(grid) for grid, _ in predictions)
    identity = Counter(_key(grid) for grid in groups.get(IDENTITY_GROUP, []))

    nominations: Counter[GridKey] = Counter()
    first_nomination: dict[GridKey, int] = {}
    grids: dict[GridKey, Grid] = {}
    everything = groups[ALL_GROUP]
    for grids_in_group in groups.values():
        for candidate in group_candidates(grids_in_group, fill_population=everything):
            key = _key(candidate)
            nominations[key] += 1
            first_nomination.setdefault(key, len(first_nomination))
            grids.setdefault(key, candidate)

    ranked = sorted(nominations, key=lambda key: (-nominations[key], -total[key], first_nomination[key]))
    top = ranked[:CANDIDATES_PER_GROUP]
    if len(top) == 3 and nominations[top[1]] == nominations[top[2]] and identity[top[2]] > identity[top[1]]:
        top[1], top[2] = top[2], top[1]
    return [grids[key] for key in top]


def vote(predictions: Iterable[Prediction], mode: str = "frequency") -> tuple[Grid, Grid]:
    """``(attempt_1, attempt_2)`` for one subtask from ``(grid, group name)`` predictions.

    Args:
        predictions: decoded grids mapped back to the original orientation, with their group.
        mode: voting rule; only ``"frequency"`` exists here. Likelihood voting (ARChitects-style
            product of experts) needs the model and lives in :mod:`seal_pl.arc.scoring`; the
            pipeline picks it with ``ARCSettings.voting: likelihood``.

    Raises:
        ValueError: for an unknown ``mode`` or a prediction that is not a 2-D grid.
    """
    if mode not in VOTING_MODES:
        raise ValueError(f"unknown voting mode {mode!r}; available: {list(VOTING_MODES)}")
    ranked = rank_candidates(predictions)
    if not ranked:
        empty = np.zeros((1, 1), dtype=np.int8)
        return empty, empty.copy()
    return ranked[0], ranked[1] if len(ranked) > 1 else ranked[0]


def is_solved(attempts: Sequence[Grid], truth: Grid) -> bool:
    """Pass@2: ``truth`` equals one of the attempts (shape and every cell)."""
    truth = np.asarray(truth)
    return any(np.array_equal(np.asarray(attempt), truth) for attempt in attempts)


def task_results(subtask_solved: Mapping[str, bool]) -> dict[str, bool]:
    """Per source task: solved iff every one of its subtasks (``<id>-<k>``) is solved."""
    results: dict[str, bool] = {}
    for subtask_id, solved in subtask_solved.items():
        source_id = split_subtask_id(subtask_id)[0]
        results[source_id] = results.get(source_id, True) and bool(solved)
    return results
