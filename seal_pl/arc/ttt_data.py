"""Test-time-training data for one ARC task (spec section 1.5).

A task's demonstrations are the only supervision available at test time. They are turned into
a small training set of *synthetic tasks*:

1. **Leave-n-out.** For every demonstration ``i`` make a task whose test example is demo ``i``
   and whose demonstrations are the others, minus every choice of ``n - 1`` more (``n = 1``: N
   tasks with N-1 demos; ``n = 2``: N(N-1) tasks with N-2 demos, which for N = 2 means tasks
   with no demonstrations at all). The real test example is never used.
2. **Augment.** Apply every selected augmenter to every base task, drop results with a grid side
   above ``max_grid`` (30), add the base tasks, de-duplicate.
3. **Permute.** ``permute_n`` times per task: recolour with :class:`PermuteColors` (only when at
   least one augmenter was selected) and reorder the demonstrations with
   :class:`PermuteExamples`; add the results, de-duplicate.
4. **Length filter.** Keep tasks whose rendered prompt is shorter than ``max_tokens`` tokens,
   measured by an injected ``count_tokens`` callable (no tokenizer is imported here).

The per-``n`` sets are concatenated and, when more than ``max_examples`` remain, shuffled and cut.
All randomness derives from ``seed`` through independent streams for augmentation, permutation
and the final cut, so the same seed always gives the same list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import combinations

import numpy as np

from seal_pl.arc.augment import Augmenter, PermuteColors, PermuteExamples
from seal_pl.arc.grids import Task, unique_tasks

TokenCounter = Callable[[Task], int]


def leave_n_out_tasks(task: Task, n: int) -> list[Task]:
    """Synthetic tasks that hold out demonstration ``i`` as the test and drop ``n - 1`` others.

    For each ``i`` in order, every combination of ``n - 1`` further demonstrations to drop is
    taken (``itertools.combinations`` order); the remaining demonstrations keep their order.
    Gives ``N * C(N-1, n-1)`` tasks with ``N - n`` demonstrations each (none when ``N < n``).
    """
    if n < 1:
        raise ValueError(f"task {task.task_id}: leave-n-out needs n >= 1, got {n}")
    demos = task.train
    tasks = []
    for held_out in range(len(demos)):
        others = [index for index in range(len(demos)) if index != held_out]
        for dropped in combinations(others, n - 1):
            kept = tuple(demos[index] for index in others if index not in dropped)
            tasks.append(Task(task.task_id, kept, demos[held_out]))
    return tasks


def fits_grid_limit(task: Task, max_grid: int | None) -> bool:
    """True when no grid of ``task`` is taller or wider than ``max_grid`` (``None``: no limit)."""
    return max_grid is None or task.max_side() <= max_grid


def augment_tasks(
    tasks: Sequence[Task], augmenters: Sequence[Augmenter], rng: np.random.Generator, max_grid: int | None = 30
) -> list[Task]:
    """Base tasks followed by every augmenter applied to every base task, de-duplicated.

    Augmented tasks with a grid side above ``max_grid`` are dropped. The loop runs augmenter by
    augmenter, task by task, so the random draws follow a fixed order.
    """
    augmented = [augmenter.apply_to_task(task, rng) for augmenter in augmenters for task in tasks]
    return unique_tasks([*tasks, *(task for task in augmented if fits_grid_limit(task, max_grid))])


def permutation_round(
    tasks: Sequence[Task], rng: np.random.Generator, *, permute_colors: bool, permute_n: int = 1
) -> list[Task]:
    """``tasks`` plus ``permute_n`` recoloured and/or reordered copies of each, de-duplicated."""
    colour_permuter, example_permuter = PermuteColors(), PermuteExamples()
    permuted = []
    for task in tasks:
        for _ in range(permute_n):
            copy = colour_permuter.apply_to_task(task, rng) if permute_colors else task
            permuted.append(example_permuter.apply_to_task(copy, rng))
    return unique_tasks([*tasks, *permuted])


def filter_by_length(tasks: Iterable[Task], count_tokens: TokenCounter | None, max_tokens: int | None) -> list[Task]:
    """Keep tasks with ``count_tokens(task) < max_tokens``; everything when either is ``None``."""
    if count_tokens is None or max_tokens is None:
        return list(tasks)
    return [task for task in tasks if count_tokens(task) < max_tokens]


def cap_tasks(tasks: Sequence[Task], max_examples: int | None, rng: np.random.Generator) -> list[Task]:
    """At most ``max_examples`` tasks: unchanged when under the cap, else a seeded shuffle cut short."""
    if max_examples is None or len(tasks) <= max_examples:
        return list(tasks)
    order = rng.permutation(len(tasks))
    return [tasks[int(index)] for index in order[:max_examples]]


def build_ttt_tasks(
    task: Task,
    augmenters: Sequence[Augmenter],
    *,
    leave_n: Sequence[int] = (1, 2),
    permute_n: int = 1,
    max_grid: int | None = 30,
    count_tokens: TokenCounter | None = None,
    max_tokens: int | None = 8192,
    max_examples: int | None = 250,
    seed: int = 0,
) -> list[Task]:
    """The test-time-training set for ``task`` (see the module docstring for the steps).

    Args:
        task: the task to adapt to; only its demonstrations are used.
        augmenters: augmenters chosen by the self-edit (e.g. :func:`augmenters_for_families`).
        leave_n: how many demonstrations to hold out per synthetic task (reference ``[1, 2]``).
        permute_n: recoloured/reordered copies per task in the permutation round (reference 1).
        max_grid: drop augmented tasks with a grid side above this (reference 30).
        count_tokens: ``task -> number of tokens`` of its rendered prompt; ``None`` skips the filter.
        max_tokens: keep tasks strictly shorter than this (reference 8192).
        max_examples: cap on the returned list (reference ``Nmax = 250``); ``None`` for no cap.
        seed: seed of all random draws.

    Returns:
        Distinct synthetic tasks, leave-1-out ones first, then leave-2-out (unless capped, in
        which case the order is the seeded shuffle).
    """
    if permute_n < 0:
        raise ValueError(f"task {task.task_id}: permute_n must be >= 0, got {permute_n}")
    augment_seed, permute_seed, cap_seed = np.random.SeedSequence(seed).spawn(3)
    augment_rng = np.random.default_rng(augment_seed)
    permute_rng = np.random.default_rng(permute_seed)
    cap_rng = np.random.default_rng(cap_seed)

    collected: list[Task] = []
    for n in leave_n:
        base = leave_n_out_tasks(task, n)
        augmented = augment_tasks(base, augmenters, augment_rng, max_grid)
        permuted = permutation_round(augmented, permute_rng, permute_colors=bool(augmenters), permute_n=permute_n)
        collected.extend(filter_by_length(permuted, count_tokens, max_tokens))
    return cap_tasks(unique_tasks(collected), max_examples, cap_rng)
