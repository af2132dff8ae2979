"""Augmenters: exact semantics, inverses, task-level consistency, colour maps, the registry."""

import numpy as np
import pytest

from seal_pl.arc.augment import (
    AUGMENTER_REGISTRY,
    Chain,
    Downscale,
    Flip,
    Identity,
    IncreaseHeight,
    IncreaseResolution,
    IncreaseWidth,
    MapColors,
    NotInvertibleError,
    PermuteColors,
    PermuteExamples,
    RandomTranslateXY,
    Reflect,
    Repeat,
    Rotate,
    TakeTile,
    Transpose,
    augmenter_from_name,
    augmenters_for_families,
)
from seal_pl.arc.grids import Example, Task

SHAPES = [(1, 1), (1, 2), (1, 7), (7, 1), (2, 1), (2, 3), (3, 2), (4, 4), (5, 9), (13, 6), (30, 30), (1, 30), (30, 1)]

REFERENCE_ORDER = [
    "Rotate(90)",
    "Rotate(270)",
    "Rotate(180)",
    "Flip(0)",
    "Flip(1)",
    "Reflect(0, reverse=True)",
    "Reflect(1, reverse=True)",
    "Reflect(0, reverse=False)",
    "Reflect(1, reverse=False)",
    "RandomTranslateXY",
    "Transpose",
    "IncreaseResolution(2)",
    "IncreaseHeight(2)",
    "IncreaseWidth(2)",
    "Chain([Rotate(90), IncreaseResolution(2)])",
    "Chain([Rotate(270), IncreaseResolution(2)])",
    "Chain([Rotate(180), IncreaseResolution(2)])",
    "Chain([Flip(0), IncreaseResolution(2)])",
    "Chain([Flip(1), IncreaseResolution(2)])",
    "Chain([Transpose, IncreaseResolution(2)])",
    "Repeat(0, 2)",
    "Repeat(1, 2)",
    "Repeat(2, 2)",
]


def random_grids(seed: int = 0, per_shape: int = 3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 10, size=shape) for shape in SHAPES for _ in range(per_shape)]


def test_families_in_reference_order():
    everything = augmenters_for_families(basic=True, size=True, chain=True, repeat=True)
    assert [augmenter.name for augmenter in everything] == REFERENCE_ORDER
    assert augmenters_for_families(False, False, False, False) == []
    counts = [
        len(augmenters_for_families(*flags))
        for flags in [
            (True, False, False, False),
            (False, True, False, False),
            (False, False, True, False),
            (False, False, False, True),
        ]
    ]
    assert counts == [11, 3, 6, 3]
    assert [a.name for a in augmenters_for_families(False, True, False, True)] == REFERENCE_ORDER[
        11:14
    ] + REFERENCE_ORDER[20:]


@pytest.mark.parametrize("name", sorted(name for name, a in AUGMENTER_REGISTRY.items() if a.invertible))
def test_every_invertible_augmenter_round_trips(name):
    augmenter = AUGMENTER_REGISTRY[name]
    inverse = augmenter.inverse()
    for grid in random_grids():
        augmented = augmenter.apply_to_grid(grid)
        assert np.array_equal(inverse.apply_to_grid(augmented), grid), f"{name} on shape {grid.shape}"


def test_invertible_set_covers_all_deterministic_family_members():
    invertible = {name for name, augmenter in AUGMENTER_REGISTRY.items() if augmenter.invertible}
    assert set(REFERENCE_ORDER) - {"RandomTranslateXY"} <= invertible
    for name in ["RandomTranslateXY", "PermuteColors", "PermuteExamples", "Downscale(2, 2)", "TakeTile(0, 2, 0)"]:
        with pytest.raises(NotInvertibleError, match=name.replace("(", r"\(").replace(")", r"\)")):
            augmenter_from_name(name).inverse()


def test_inverse_names():
    assert Rotate(90).inverse().name == "Rotate(270)"
    assert Rotate(270).inverse().name == "Rotate(90)"
    assert Rotate(180).inverse() == Rotate(180)
    assert Flip(0).inverse() == Flip(0) and Flip(1).inverse() == Flip(1)
    assert Transpose().inverse() == Transpose()
    assert IncreaseResolution(2).inverse() == Downscale(2, 2)
    assert IncreaseHeight(2).inverse() == Downscale(2, 1)
    assert IncreaseWidth(2).inverse() == Downscale(1, 2)
    assert Repeat(2, 2).inverse() == TakeTile(2, 2, 0)
    assert Reflect(0, reverse=True).inverse() == TakeTile(0, 2, 1)
    assert Chain([Rotate(90), IncreaseResolution(2)]).inverse().name == "Chain([Downscale(2, 2), Rotate(270)])"


def test_exact_geometric_semantics():
    for grid in random_grids(1, per_shape=1):
        assert np.array_equal(Rotate(90).apply_to_grid(grid), np.rot90(grid, 1))
        assert np.array_equal(Rotate(270).apply_to_grid(grid), np.rot90(grid, 3))
        assert np.array_equal(Rotate(180).apply_to_grid(grid), np.rot90(grid, 2))
        assert np.array_equal(Flip(0).apply_to_grid(grid), grid[::-1])
        assert np.array_equal(Flip(1).apply_to_grid(grid), grid[:, ::-1])
        assert np.array_equal(Transpose().apply_to_grid(grid), grid.T)
    grid = np.array([[1, 2, 3], [4, 5, 6]])
    assert Rotate(90).apply_to_grid(grid).tolist() == [[3, 6], [2, 5], [1, 4]], "counter-clockwise"


def test_exact_size_semantics():
    grid = np.array([[1, 2], [3, 4]])
    assert Reflect(0, reverse=True).apply_to_grid(grid).tolist() == [[3, 4], [1, 2], [1, 2], [3, 4]]
    assert Reflect(0, reverse=False).apply_to_grid(grid).tolist() == [[1, 2], [3, 4], [3, 4], [1, 2]]
    assert Reflect(1, reverse=True).apply_to_grid(grid).tolist() == [[2, 1, 1, 2], [4, 3, 3, 4]]
    assert Reflect(1, reverse=False).apply_to_grid(grid).tolist() == [[1, 2, 2, 1], [3, 4, 4, 3]]
    assert IncreaseResolution(2).apply_to_grid(grid).tolist() == [
        [1, 1, 2, 2],
        [1, 1, 2, 2],
        [3, 3, 4, 4],
        [3, 3, 4, 4],
    ]
    assert IncreaseHeight(2).apply_to_grid(grid).tolist() == [[1, 2], [1, 2], [3, 4], [3, 4]]
    assert IncreaseWidth(2).apply_to_grid(grid).tolist() == [[1, 1, 2, 2], [3, 3, 4, 4]]
    assert Repeat(0, 2).apply_to_grid(grid).tolist() == [[1, 2], [3, 4], [1, 2], [3, 4]]
    assert Repeat(1, 2).apply_to_grid(grid).tolist() == [[1, 2, 1, 2], [3, 4, 3, 4]]
    assert Repeat(2, 2).apply_to_grid(grid).shape == (4, 4)
    assert np.array_equal(Repeat(2, 2).apply_to_grid(grid), np.tile(grid, (2, 2)))
    chained = Chain([Rotate(90), IncreaseResolution(2)]).apply_to_grid(grid)
    assert np.array_equal(chained, IncreaseResolution(2).apply_to_grid(np.rot90(grid)))


def test_lossy_inverses_reject_indivisible_shapes():
    with pytest.raises(ValueError, match="not divisible"):
        Downscale(2, 2).apply_to_grid(np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError, match="not divisible by 2"):
        TakeTile(1, 2, 0).apply_to_grid(np.zeros((2, 3), dtype=int))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Rotate(45),
        lambda: Flip(2),
        lambda: Reflect(2),
        lambda: Repeat(3, 2),
        lambda: Repeat(0, 0),
        lambda: IncreaseResolution(0),
        lambda: TakeTile(0, 2, 2),
        lambda: MapColors([0, 1, 1, 3, 4, 5, 6, 7, 8, 9]),
        lambda: Chain([]),
    ],
)
def test_constructor_validation(build):
    with pytest.raises(ValueError):
        build()


def test_deterministic_augmenter_transforms_every_grid_of_a_task(make_task):
    task = make_task(3, shape=(3, 5))
    for augmenter in augmenters_for_families(True, True, True, True):
        if augmenter.name == "RandomTranslateXY":
            continue
        augmented = augmenter.apply_to_task(task)
        assert augmented.task_id == task.task_id and len(augmented.train) == 3
        for before, after in zip(task.examples(), augmented.examples()):
            assert np.array_equal(after.input, augmenter.apply_to_grid(before.input))
            assert np.array_equal(after.output, augmenter.apply_to_grid(before.output))


def test_task_without_test_output_stays_without(make_task):
    task = make_task(2)
    unsolved = Task(task.task_id, task.train, Example(task.test.input))
    assert Rotate(90).apply_to_task(unsolved).test.output is None
    assert RandomTranslateXY().apply_to_task(unsolved, np.random.default_rng(0)).test.output is None
    assert PermuteColors().apply_to_task(unsolved, np.random.default_rng(0)).test.output is None


def _find_roll(before: np.ndarray, after: np.ndarray) -> set[tuple[int, int]]:
    return {
        (rows, columns)
        for rows in range(before.shape[0])
        for columns in range(before.shape[1])
        if np.array_equal(np.roll(before, (rows, columns), axis=(0, 1)), after)
    }


def test_translate_shares_one_shift_for_inputs_and_one_for_outputs():
    rng = np.random.default_rng(5)

    # Grids of distinct cells make the roll that produced a result unique.
    def unique_grid(shape):
        return rng.permutation(10)[: shape[0] * shape[1]].reshape(shape)

    train = tuple(Example(unique_grid((3, 3)), unique_grid((2, 4))) for _ in range(3))
    task = Task("t-0", train, Example(unique_grid((3, 3)), unique_grid((2, 4))))
    input_shifts, output_shifts = set(), set()
    for seed in range(20):
        shifted = RandomTranslateXY().apply_to_task(task, np.random.default_rng(seed))
        inputs = [_find_roll(b.input, a.input) for b, a in zip(task.examples(), shifted.examples())]
        outputs = [_find_roll(b.output, a.output) for b, a in zip(task.examples(), shifted.examples())]
        assert all(len(found) == 1 and found == inputs[0] for found in inputs)
        assert all(len(found) == 1 and found == outputs[0] for found in outputs)
        input_shifts |= inputs[0]
        output_shifts |= outputs[0]
    assert all(rows <= 2 and columns <= 2 for rows, columns in input_shifts), "at most side - 1 on 3x3 inputs"
    assert all(rows <= 1 and columns <= 3 for rows, columns in output_shifts), "bounds from the 2x4 outputs"
    assert len(input_shifts) > 3 and len(output_shifts) > 3, "shifts vary with the seed"


def test_translate_bounds_and_seeding():
    row = np.arange(10).reshape(1, 10)
    for seed in range(30):
        shifted = RandomTranslateXY().apply_to_grid(row, np.random.default_rng(seed))
        shift = int(np.argmax(shifted[0] == 0))
        assert 0 <= shift <= 3, "a 1xN grid shifts only along columns, by at most 3"
    first = RandomTranslateXY().apply_to_grid(np.arange(16).reshape(4, 4) % 10, np.random.default_rng(3))
    again = RandomTranslateXY().apply_to_grid(np.arange(16).reshape(4, 4) % 10, np.random.default_rng(3))
    assert np.array_equal(first, again)
    with pytest.raises(ValueError, match="needs an rng"):
        RandomTranslateXY().apply_to_grid(row)


def _colour_map(before: Task, after: Task) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for old, new in zip(before.grids(), after.grids()):
        for source, target in zip(old.ravel().tolist(), new.ravel().tolist()):
            assert mapping.setdefault(source, target) == target, "one colour map for the whole task"
    return mapping


@pytest.mark.parametrize("colours", [2, 4, 6, 10])
def test_permute_colors_keeps_zero_and_is_one_bijection(make_task, colours):
    for seed in range(10):
        task = make_task(3, shape=(4, 4), seed=seed, colours=colours)
        permuted = PermuteColors().apply_to_task(task, np.random.default_rng(seed))
        mapping = _colour_map(task, permuted)
        assert mapping.get(0, 0) == 0
        assert len(set(mapping.values())) == len(mapping), "injective on the task's colours"
        used = set(mapping) - {0}
        unused = set(range(1, 10)) - used
        targets = set(mapping.values()) - {0}
        assert len(targets & unused) == min(len(used), len(unused)), "unused colours are taken first"


def test_permute_colors_map_inverse_and_test_output(make_task):
    task = make_task(2, shape=(2, 2), colours=3)
    # Colour 7 appears only in the held-out output; it must still be recoloured consistently.
    task = Task(task.task_id, task.train, Example(task.test.input, [[7, 7], [0, 1]]))
    mapping = PermuteColors().draw_mapping(task.grids(), np.random.default_rng(0))
    assert sorted(mapping.mapping) == list(range(10)) and mapping.mapping[0] == 0
    assert mapping.mapping[7] not in {1, 2, 7}
    recoloured = mapping.apply_to_task(task)
    assert mapping.inverse().apply_to_task(recoloured) == task
    assert augmenter_from_name(mapping.name) == mapping
    assert augmenter_from_name(mapping.inverse().name).apply_to_task(recoloured) == task


def test_permute_colors_when_all_colours_are_used():
    grid = np.arange(10).reshape(2, 5)
    for seed in range(5):
        mapping = PermuteColors().draw_mapping([grid], np.random.default_rng(seed))
        assert mapping.mapping[0] == 0 and sorted(mapping.mapping) == list(range(10))
    assert len({PermuteColors().draw_mapping([grid], np.random.default_rng(seed)).name for seed in range(5)}) > 1


def test_permute_examples(make_task):
    task = make_task(5)
    orders = set()
    for seed in range(10):
        permuted = PermuteExamples().apply_to_task(task, np.random.default_rng(seed))
        assert permuted.test == task.test
        assert sorted(map(hash, permuted.train)) == sorted(map(hash, task.train))
        orders.add(tuple(task.train.index(example) for example in permuted.train))
    assert len(orders) > 5
    assert np.array_equal(PermuteExamples().apply_to_grid(task.test.input), task.test.input)


def test_registry_round_trips_names():
    for name, augmenter in AUGMENTER_REGISTRY.items():
        assert augmenter.name == name
        assert augmenter_from_name(name) is augmenter
    assert augmenter_from_name("identity") == Identity()
    for bad in ["Rotate(45)", "__import__('os')", "MapColors(0123)", ""]:
        with pytest.raises(ValueError, match="unknown augmenter name"):
            augmenter_from_name(bad)
