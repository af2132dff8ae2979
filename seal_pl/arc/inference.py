"""Augmented inference views of an ARC test subtask (spec section 1.8, steps 1-3).

Instead of asking the model once, the task is shown in several equivalent forms and the decoded
answers are mapped back and voted on (see :mod:`seal_pl.arc.voting`). The views are:

1. **Leave-n-out variants** (``include_n = [1]``): for every demonstration, the task without it
   (test input unchanged); plus ``permute_n`` (2) random reorderings of each; de-duplicated.
2. **Geometric variants**: for each of Transpose, Flip(0), Flip(1), Rotate(90), Rotate(180), one
   variant from step 1 picked at random has all its grids transformed; the view records the
   name of the inverse (Transpose, Flip(0), Flip(1), Rotate(270), Rotate(180)) that maps the
   model's answer back. A transformed view equal to an existing view is skipped.

Untransformed views carry the inverse name ``"identity"``. :func:`map_back` takes a view's answer
to the original orientation; :func:`to_view` is its inverse, taking a grid in the original
orientation into a view's frame (used to score candidate answers in every view, see
:mod:`seal_pl.arc.scoring`). An optional length filter (injected
``count_tokens``) keeps views shorter than ``max_tokens``; if none survive, leave-more-out
variants (``include_n + [max + 1]``, which are shorter) are added and the build retried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from seal_pl.arc.augment import Augmenter, Flip, Identity, PermuteExamples, Rotate, Transpose, augmenter_from_name
from seal_pl.arc.grids import Grid, Task, unique_tasks

IDENTITY = Identity().name

GEOMETRIC_VIEWS: tuple[Augmenter, ...] = (Transpose(), Flip(0), Flip(1), Rotate(90), Rotate(180))
"""Transforms applied to one random variant each; their inverses name the voting groups."""


@dataclass(frozen=True)
class InferenceView:
    """A prompt-ready variant of a subtask and the name of the map that undoes its transform."""

    task: Task
    inverse_name: str = IDENTITY


def leave_out_variants(task: Task, n: int) -> list[Task]:
    """The task without each choice of ``n`` demonstrations (test unchanged), in combination order.

    With fewer than ``n + 1`` demonstrations there is nothing sensible to drop and the task itself
    is returned alone, so a view always exists.
    """
    if n < 1:
        raise ValueError(f"task {task.task_id}: include_n values must be >= 1, got {n}")
    count = len(task.train)
    if count <= n:
        return [task]
    return [
        task.with_examples(task.train[index] for index in range(count) if index not in dropped)
        for dropped in combinations(range(count), n)
    ]


def _base_variants(task: Task, include_n: Sequence[int], permute_n: int, rng: np.random.Generator) -> list[Task]:
    """Step 1: leave-n-out variants followed by ``permute_n`` demo reorderings of each."""
    variants = [variant for n in include_n for variant in leave_out_variants(task, n)]
    permuter = PermuteExamples()
    permuted = [permuter.apply_to_task(variant, rng) for variant in variants for _ in range(permute_n)]
    return unique_tasks([*variants, *permuted])


def build_inference_views(
    task: Task,
    *,
    include_n: Sequence[int] = (1,),
    permute_n: int = 2,
    seed: int = 0,
    count_tokens: Callable[[Task], int] | None = None,
    max_tokens: int | None = 8192,
) -> list[InferenceView]:
    """All views of ``task`` to query the model with (see the module docstring).

    Args:
        task: a subtask (one test example; its output, if present, is carried along).
        include_n: how many demonstrations each variant leaves out (reference ``[1]``).
        permute_n: random demonstration reorderings per variant (reference 2).
        seed: seed for the reorderings and for picking the variants to transform.
        count_tokens: ``task -> prompt length in tokens`` (incl. the target); ``None`` disables the filter.
        max_tokens: keep views strictly shorter than this (reference 8192).

    Returns:
        Identity views first (in variant order), then the geometric views; possibly empty when
        even leaving out all but one demonstration is too long.
    """
    include_n = sorted(set(include_n))
    if not include_n:
        raise ValueError(f"task {task.task_id}: include_n must name at least one count of demonstrations to leave out")
    while True:
        views = _views_for(task, include_n, permute_n, seed)
        if count_tokens is not None and max_tokens is not None:
            views = [view for view in views if count_tokens(view.task) < max_tokens]
        if views or count_tokens is None or include_n[-1] >= len(task.train) - 1:
            return views
        include_n = [*include_n, include_n[-1] + 1]


def _views_for(task: Task, include_n: Sequence[int], permute_n: int, seed: int) -> list[InferenceView]:
    rng = np.random.default_rng(seed)
    variants = _base_variants(task, include_n, permute_n, rng)
    views = [InferenceView(variant, IDENTITY) for variant in variants]
    seen = set(variants)
    for transform in GEOMETRIC_VIEWS:
        chosen = variants[int(rng.integers(len(variants)))]
        transformed = transform.apply_to_task(chosen)
        if transformed in seen:
            continue
        seen.add(transformed)
        views.append(InferenceView(transformed, transform.inverse().name))
    return views


def map_back(grid: Grid, inverse_name: str) -> Grid:
    """Undo a view's transform on a predicted grid (``"identity"`` returns it unchanged).

    Raises:
        ValueError: unknown ``inverse_name``, or a grid the inverse cannot be applied to.
    """
    return augmenter_from_name(inverse_name).apply_to_grid(grid)


def view_transform(inverse_name: str) -> Augmenter:
    """The transform a view applied to its task: the inverse of the recorded ``inverse_name``.

    Raises:
        ValueError: unknown ``inverse_name``, or one without an inverse (``NotInvertibleError``).
    """
    return augmenter_from_name(inverse_name).inverse()


def to_view(grid: Grid, inverse_name: str) -> Grid:
    """A grid in the original orientation as it reads in a view's frame (the inverse of :func:`map_back`).

    ``map_back(to_view(grid, name), name)`` is ``grid`` for every geometric view, and
    ``to_view(map_back(answer, name), name)`` is the view's own ``answer``.

    Raises:
        ValueError: unknown or non-invertible ``inverse_name``, or a grid the transform cannot be applied to.
    """
    return view_transform(inverse_name).apply_to_grid(np.asarray(grid))
