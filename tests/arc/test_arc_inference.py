"""Augmented inference views (spec 1.8 steps 1-3) and mapping answers back."""

import numpy as np
import pytest

from seal_pl.arc.grids import Example, Task
from seal_pl.arc.inference import (
    IDENTITY,
    InferenceView,
    build_inference_views,
    leave_out_variants,
    map_back,
)

GEOMETRIC_INVERSES = {"Transpose", "Flip(0)", "Flip(1)", "Rotate(270)", "Rotate(180)"}


def test_leave_out_variants(make_task):
    task = make_task(3)
    variants = leave_out_variants(task, 1)
    assert len(variants) == 3
    assert all(len(variant.train) == 2 and variant.test == task.test for variant in variants)
    assert variants[0].train == task.train[1:]
    assert leave_out_variants(make_task(1), 1) == [make_task(1)], "nothing to drop: the task itself"


def test_views_structure(make_task):
    task = make_task(3, shape=(3, 4))
    views = build_inference_views(task)
    identity = [view for view in views if view.inverse_name == IDENTITY]
    transformed = [view for view in views if view.inverse_name != IDENTITY]
    # 3 leave-one-out variants of 2 demos; each has only 2 orders, so at most 6 distinct.
    assert 3 <= len(identity) <= 6
    assert {view.inverse_name for view in transformed} == GEOMETRIC_INVERSES, "random grids: no symmetric skip"
    assert len({view.task for view in views}) == len(views), "no duplicate views"
    for view in identity:
        assert view.task.test == task.test and len(view.task.train) == 2
        assert set(view.task.train) <= set(task.train)
    assert views[: len(identity)] == identity, "identity views come first"


def test_geometric_views_map_back_to_the_original(make_task):
    task = make_task(4, shape=(2, 5), seed=3)
    for view in build_inference_views(task):
        assert np.array_equal(map_back(view.task.test.input, view.inverse_name), task.test.input)
        assert np.array_equal(map_back(view.task.test.output, view.inverse_name), task.test.output)
    rotated = next(view for view in build_inference_views(task) if view.inverse_name == "Rotate(270)")
    assert rotated.task.test.input.shape == (5, 2)
    assert np.array_equal(rotated.task.test.input, np.rot90(task.test.input))


def test_views_are_seeded(make_task):
    task = make_task(4)
    assert build_inference_views(task, seed=0) == build_inference_views(task, seed=0)
    assert build_inference_views(task, seed=0) != build_inference_views(task, seed=1)


def test_symmetric_task_skips_identical_geometric_views():
    flat = np.full((3, 3), 2)
    task = Task("flat-0", (Example(flat, flat), Example(flat, np.zeros((3, 3), dtype=int))), Example(flat, flat))
    views = build_inference_views(task)
    assert all(view.inverse_name == IDENTITY for view in views)


def test_length_filter_retries_with_more_left_out(make_task):
    task = make_task(4)

    def demos(candidate: Task) -> int:
        return len(candidate.train)

    views = build_inference_views(task, count_tokens=demos, max_tokens=2)
    assert views and all(len(view.task.train) == 1 for view in views)
    assert build_inference_views(task, count_tokens=demos, max_tokens=0) == []
    unfiltered = build_inference_views(task, count_tokens=demos, max_tokens=100)
    assert unfiltered == build_inference_views(task)


def test_map_back():
    grid = np.array([[1, 2, 3]])
    assert np.array_equal(map_back(grid, "identity"), grid)
    assert map_back(grid, "Rotate(270)").tolist() == [[1], [2], [3]], "clockwise quarter turn"
    with pytest.raises(ValueError, match="unknown augmenter name"):
        map_back(grid, "Rotate(45)")


def test_include_n_validation(make_task):
    with pytest.raises(ValueError, match="include_n values must be >= 1"):
        build_inference_views(make_task(3), include_n=(0,))
    with pytest.raises(ValueError, match="task random0-0: include_n must name at least one"):
        build_inference_views(make_task(3), include_n=())
    assert InferenceView(make_task(2)).inverse_name == IDENTITY
