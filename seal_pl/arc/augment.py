"""Grid and task augmenters for ARC test-time training and augmented inference.

An augmenter rewrites every grid of a task with one transformation so that the rule behind the
task still holds (rotate all grids, upscale all grids, recolour all grids with one map, ...).
SEAL's self-edits choose among four *families* (spec table 1.4, 23 augmenters at most):

========  =====================================================================================
basic     Rotate(90), Rotate(270), Rotate(180), Flip(0), Flip(1), Reflect(0, reverse=True),
          Reflect(1, reverse=True), Reflect(0, reverse=False), Reflect(1, reverse=False),
          RandomTranslateXY, Transpose
size      IncreaseResolution(2), IncreaseHeight(2), IncreaseWidth(2)
chain     Chain([g, IncreaseResolution(2)]) for g in Rotate(90), Rotate(270), Rotate(180),
          Flip(0), Flip(1), Transpose
repeat    Repeat(0, 2), Repeat(1, 2), Repeat(2, 2)
========  =====================================================================================

plus two always-on task-level augmenters, :class:`PermuteColors` and :class:`PermuteExamples`.

Every augmenter has a stable ``name`` (used in records and as the voting group of a prediction)
and :func:`augmenter_from_name` rebuilds it from that name through a registry - never ``eval``.
``inverse()`` returns the augmenter that undoes it where one exists; for upscaling, reflecting and
tiling the inverse is a *left* inverse (it recovers the original grid from the augmented one).
Randomness always comes from a ``np.random.Generator`` passed in by the caller.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from seal_pl.arc.grids import Example, Grid, Task

Rng = np.random.Generator

MAX_TRANSLATION = 3
"""RandomTranslateXY shifts by 0..min(3, side - 1) cells along each axis."""


class NotInvertibleError(ValueError):
    """Raised by :meth:`Augmenter.inverse` for augmenters without an inverse."""


class Augmenter(ABC):
    """Base class: maps a grid, or every grid of a task, to its augmented version."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Stable identifier, accepted by :func:`augmenter_from_name`."""

    @abstractmethod
    def apply_to_grid(self, grid: Grid, rng: Rng | None = None) -> Grid:
        """Transform one grid. Random augmenters need ``rng``; deterministic ones ignore it."""

    def apply_to_task(self, task: Task, rng: Rng | None = None) -> Task:
        """Transform every input and known output of the demonstrations and the test example."""
        return _map_task(task, lambda grid: self.apply_to_grid(grid, rng))

    def inverse(self) -> Augmenter:
        """The augmenter that undoes this one.

        Raises:
            NotInvertibleError: when there is none (random augmenters, lossy maps).
        """
        raise NotInvertibleError(f"augmenter {self.name} has no inverse")

    @property
    def invertible(self) -> bool:
        """Whether :meth:`inverse` succeeds."""
        try:
            self.inverse()
        except NotInvertibleError:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Augmenter) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name


def _map_task(task: Task, transform: Callable[[Grid], Grid]) -> Task:
    """Apply ``transform`` to every grid of ``task`` (outputs only where known)."""

    def map_example(example: Example) -> Example:
        output = None if example.output is None else transform(example.output)
        return Example(transform(example.input), output)

    return Task(task.task_id, tuple(map_example(example) for example in task.train), map_example(task.test))


def _require_rng(rng: Rng | None, name: str) -> Rng:
    if rng is None:
        raise ValueError(f"augmenter {name} is random and needs an rng (np.random.Generator)")
    return rng


def _check_choice(value: int, allowed: Iterable[int], what: str, augmenter: str) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{augmenter}: {what} must be one of {allowed}, got {value!r}")


def _check_positive(value: int, what: str, augmenter: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{augmenter}: {what} must be a positive integer, got {value!r}")


class GridMap(Augmenter):
    """A deterministic augmenter: the same grid always maps to the same grid."""

    @abstractmethod
    def transform(self, grid: Grid) -> Grid:
        """The transformation itself."""

    def apply_to_grid(self, grid: Grid, rng: Rng | None = None) -> Grid:
        return np.ascontiguousarray(self.transform(np.asarray(grid)))


# --------------------------------------------------------------------------------------------
# Geometric transforms (the dihedral group)


class Identity(GridMap):
    """Leaves grids unchanged; the inverse recorded for untransformed inference views."""

    name = "identity"

    def transform(self, grid: Grid) -> Grid:
        return grid

    def inverse(self) -> Augmenter:
        return self


class Rotate(GridMap):
    """Counter-clockwise rotation by 90, 180 or 270 degrees (``np.rot90`` with k = angle / 90)."""

    def __init__(self, angle: int) -> None:
        _check_choice(angle, (90, 180, 270), "angle", "Rotate")
        self.angle = angle

    @property
    def name(self) -> str:
        return f"Rotate({self.angle})"

    def transform(self, grid: Grid) -> Grid:
        return np.rot90(grid, k=self.angle // 90)

    def inverse(self) -> Augmenter:
        return Rotate(360 - self.angle) if self.angle != 180 else self


class Flip(GridMap):
    """Mirror along an axis: 0 turns the grid upside down, 1 mirrors it left-right. Self-inverse."""

    def __init__(self, axis: int) -> None:
        _check_choice(axis, (0, 1), "axis", "Flip")
        self.axis = axis

    @property
    def name(self) -> str:
        return f"Flip({self.axis})"

    def transform(self, grid: Grid) -> Grid:
        return np.flip(grid, axis=self.axis)

    def inverse(self) -> Augmenter:
        return self


class Transpose(GridMap):
    """Matrix transpose (mirror along the main diagonal). Self-inverse."""

    name = "Transpose"

    def transform(self, grid: Grid) -> Grid:
        return grid.T

    def inverse(self) -> Augmenter:
        return self


# --------------------------------------------------------------------------------------------
# Size-changing transforms and their left inverses


class TakeTile(GridMap):
    """Cut the grid into ``count`` equal tiles along ``axis`` and keep tile ``index``.

    ``axis`` 0 splits rows, 1 splits columns, 2 splits both (keeping tile ``(index, index)``).
    It is the left inverse of :class:`Repeat` and :class:`Reflect`.
    """

    def __init__(self, axis: int, count: int, index: int) -> None:
        _check_choice(axis, (0, 1, 2), "axis", "TakeTile")
        _check_positive(count, "count", "TakeTile")
        _check_choice(index, range(count), "index", "TakeTile")
        self.axis, self.count, self.index = axis, count, index

    @property
    def name(self) -> str:
        return f"TakeTile({self.axis}, {self.count}, {self.index})"

    def transform(self, grid: Grid) -> Grid:
        axes = (0, 1) if self.axis == 2 else (self.axis,)
        for axis in axes:
            side = grid.shape[axis]
            if side % self.count:
                raise ValueError(f"{self.name}: grid side {side} along axis {axis} is not divisible by {self.count}")
            tile = side // self.count
            grid = np.take(grid, range(self.index * tile, (self.index + 1) * tile), axis=axis)
        return grid


class Reflect(GridMap):
    """Join the grid with its mirror image along ``axis`` (0: stacked vertically, 1: side by side).

    ``reverse=True`` puts the mirrored copy first. The result is twice as tall (axis 0) or wide
    (axis 1); the inverse keeps the half that holds the original.
    """

    def __init__(self, axis: int, reverse: bool = True) -> None:
        _check_choice(axis, (0, 1), "axis", "Reflect")
        self.axis, self.reverse = axis, bool(reverse)

    @property
    def name(self) -> str:
        return f"Reflect({self.axis}, reverse={self.reverse})"

    def transform(self, grid: Grid) -> Grid:
        mirrored = np.flip(grid, axis=self.axis)
        parts = (mirrored, grid) if self.reverse else (grid, mirrored)
        return np.concatenate(parts, axis=self.axis)

    def inverse(self) -> Augmenter:
        return TakeTile(self.axis, 2, 1 if self.reverse else 0)


class Downscale(GridMap):
    """Keep every ``row_factor``-th row and ``col_factor``-th column: the left inverse of upscaling."""

    def __init__(self, row_factor: int, col_factor: int) -> None:
        _check_positive(row_factor, "row_factor", "Downscale")
        _check_positive(col_factor, "col_factor", "Downscale")
        self.row_factor, self.col_factor = row_factor, col_factor

    @property
    def name(self) -> str:
        return f"Downscale({self.row_factor}, {self.col_factor})"

    def transform(self, grid: Grid) -> Grid:
        height, width = grid.shape
        if height % self.row_factor or width % self.col_factor:
            raise ValueError(f"{self.name}: grid shape {grid.shape} is not divisible by the factors")
        return grid[:: self.row_factor, :: self.col_factor]


class _Upscale(GridMap):
    """Repeat each row ``row_factor`` times and each column ``col_factor`` times."""

    row_factor = 1
    col_factor = 1

    def transform(self, grid: Grid) -> Grid:
        return np.repeat(np.repeat(grid, self.row_factor, axis=0), self.col_factor, axis=1)

    def inverse(self) -> Augmenter:
        return Downscale(self.row_factor, self.col_factor)


class IncreaseResolution(_Upscale):
    """Every cell becomes a ``factor`` x ``factor`` block."""

    def __init__(self, factor: int) -> None:
        _check_positive(factor, "factor", "IncreaseResolution")
        self.factor = self.row_factor = self.col_factor = factor

    @property
    def name(self) -> str:
        return f"IncreaseResolution({self.factor})"


class IncreaseHeight(_Upscale):
    """Every row is repeated ``factor`` times."""

    def __init__(self, factor: int) -> None:
        _check_positive(factor, "factor", "IncreaseHeight")
        self.factor = self.row_factor = factor

    @property
    def name(self) -> str:
        return f"IncreaseHeight({self.factor})"


class IncreaseWidth(_Upscale):
    """Every column is repeated ``factor`` times."""

    def __init__(self, factor: int) -> None:
        _check_positive(factor, "factor", "IncreaseWidth")
        self.factor = self.col_factor = factor

    @property
    def name(self) -> str:
        return f"IncreaseWidth({self.factor})"


class Repeat(GridMap):
    """Tile the grid ``times`` times: axis 0 vertically, 1 horizontally, 2 both (``times`` x ``times``)."""

    def __init__(self, axis: int, times: int) -> None:
        _check_choice(axis, (0, 1, 2), "axis", "Repeat")
        _check_positive(times, "times", "Repeat")
        self.axis, self.times = axis, times

    @property
    def name(self) -> str:
        return f"Repeat({self.axis}, {self.times})"

    def transform(self, grid: Grid) -> Grid:
        reps = {0: (self.times, 1), 1: (1, self.times), 2: (self.times, self.times)}[self.axis]
        return np.tile(grid, reps)

    def inverse(self) -> Augmenter:
        return TakeTile(self.axis, self.times, 0)


# --------------------------------------------------------------------------------------------
# Composition


class Chain(Augmenter):
    """Apply ``steps`` one after the other (e.g. a rotation followed by 2x upscaling)."""

    def __init__(self, steps: Sequence[Augmenter]) -> None:
        if not steps:
            raise ValueError("Chain: needs at least one step")
        self.steps = tuple(steps)

    @property
    def name(self) -> str:
        return "Chain([" + ", ".join(step.name for step in self.steps) + "])"

    def apply_to_grid(self, grid: Grid, rng: Rng | None = None) -> Grid:
        for step in self.steps:
            grid = step.apply_to_grid(grid, rng)
        return grid

    def apply_to_task(self, task: Task, rng: Rng | None = None) -> Task:
        for step in self.steps:
            task = step.apply_to_task(task, rng)
        return task

    def inverse(self) -> Augmenter:
        return Chain([step.inverse() for step in reversed(self.steps)])


# --------------------------------------------------------------------------------------------
# Colours


class MapColors(GridMap):
    """Recolour with a fixed permutation ``mapping`` of 0-9 (``mapping[c]`` is the new colour of c)."""

    def __init__(self, mapping: Sequence[int]) -> None:
        mapping = tuple(int(colour) for colour in mapping)
        if sorted(mapping) != list(range(10)):
            raise ValueError(f"MapColors: mapping must be a permutation of 0-9, got {mapping}")
        self.mapping = mapping
        self._lookup = np.array(mapping, dtype=np.int8)

    @property
    def name(self) -> str:
        return "MapColors(" + "".join(str(colour) for colour in self.mapping) + ")"

    def transform(self, grid: Grid) -> Grid:
        return self._lookup[grid]

    def inverse(self) -> Augmenter:
        inverse = [0] * 10
        for source, target in enumerate(self.mapping):
            inverse[target] = source
        return MapColors(inverse)


class PermuteColors(Augmenter):
    """Random recolouring that keeps colour 0 (the background) fixed.

    Every other colour used anywhere in the task (test output included) goes to a random colour
    from 1-9 that the task does not use; once those run out, the remaining colours are shuffled
    among the used colours not yet taken. Colours absent from the task fill the leftover slots
    in increasing order, so the draw is a bijection of 0-9 and always has an inverse. One map is
    drawn per task and applied to all of its grids; :meth:`draw_mapping` exposes it.
    """

    name = "PermuteColors"

    def draw_mapping(self, grids: Iterable[Grid], rng: Rng) -> MapColors:
        """Draw the colour map for a set of grids (see class docstring)."""
        used = sorted({int(colour) for grid in grids for colour in np.unique(grid)} - {0})
        available = set(range(1, 10))
        mapping = list(range(10))
        for colour in rng.permutation(used):
            pool = sorted(available - set(used)) or sorted(available)
            target = pool[int(rng.integers(len(pool)))]
            mapping[int(colour)] = target
            available.remove(target)
        absent = [colour for colour in range(1, 10) if colour not in used]
        for source, target in zip(absent, sorted(available)):
            mapping[source] = target
        return MapColors(mapping)

    def apply_to_grid(self, grid: Grid, rng: Rng | None = None) -> Grid:
        return self.draw_mapping([grid], _require_rng(rng, self.name)).apply_to_grid(grid)

    def apply_to_task(self, task: Task, rng: Rng | None = None) -> Task:
        return self.draw_mapping(task.grids(), _require_rng(rng, self.name)).apply_to_task(task)


# --------------------------------------------------------------------------------------------
# Other random augmenters


class RandomTranslateXY(Augmenter):
    """Cyclic shift (``np.roll``) by a random number of rows and columns.

    The shift along each axis is drawn from 0..min(3, side - 1). On a task the draw is shared:
    all inputs get one shift and all outputs a second one, with ``side`` the smallest input
    (respectively output) side, so no grid is rolled by its full size or more.
    """

    name = "RandomTranslateXY"

    @staticmethod
    def _draw_shift(shapes: Sequence[tuple[int, ...]], rng: Rng) -> tuple[int, int]:
        height = min(shape[0] for shape in shapes)
        width = min(shape[1] for shape in shapes)
        rows = int(rng.integers(0, min(MAX_TRANSLATION, height - 1) + 1))
        columns = int(rng.integers(0, min(MAX_TRANSLATION, width - 1) + 1))
        return rows, columns

    @staticmethod
    def _roll(grid: Grid, shift: tuple[int, int]) -> Grid:
        return np.roll(np.asarray(grid), shift, axis=(0, 1))

    def apply_to_grid(self, grid: Grid, rng: Rng | None = None) -> Grid:
        shift = self._draw_shift([np.shape(grid)], _require_rng(rng, self.name))
        return self._roll(grid, shift)

    def apply_to_task(self, task: Task, rng: Rng | None = None) -> Task:
        rng = _require_rng(rng, self.name)
        examples = task.examples()
        input_shift = self._draw_shift([example.input.shape for example in examples], rng)
        output_shapes = [example.output.shape for example in examples if example.output is not None]
        output_shift = self._draw_shift(output_shapes, rng) if output_shapes else (0, 0)

        def shift_example(example: Example) -> Example:
            output = None if example.output is None else self._roll(example.output, output_shift)
            return Example(self._roll(example.input, input_shift), output)

        return Task(task.task_id, tuple(shift_example(example) for example in task.train), shift_example(task.test))


class PermuteExamples(Augmenter):
    """Random reordering of the demonstrations (the test example stays). A no-op on one grid."""

    name = "PermuteExamples"

    def apply_to_grid(self, grid: Grid, rng: Rng | None = None) -> Grid:
        return np.asarray(grid)

    def apply_to_task(self, task: Task, rng: Rng | None = None) -> Task:
        order = _require_rng(rng, self.name).permutation(len(task.train))
        return task.with_examples(task.train[int(index)] for index in order)


# --------------------------------------------------------------------------------------------
# Families and the name registry


def basic_augmenters() -> list[Augmenter]:
    """The 11 augmenters of ``use_basic_augmentations``, in the reference order."""
    return [
        Rotate(90),
        Rotate(270),
        Rotate(180),
        Flip(0),
        Flip(1),
        Reflect(0, reverse=True),
        Reflect(1, reverse=True),
        Reflect(0, reverse=False),
        Reflect(1, reverse=False),
        RandomTranslateXY(),
        Transpose(),
    ]


def size_augmenters() -> list[Augmenter]:
    """The 3 augmenters of ``use_size_augmentations``."""
    return [IncreaseResolution(2), IncreaseHeight(2), IncreaseWidth(2)]


def chain_augmenters() -> list[Augmenter]:
    """The 6 augmenters of ``use_chain_augmentations``: a geometric map, then 2x upscaling."""
    geometric = [Rotate(90), Rotate(270), Rotate(180), Flip(0), Flip(1), Transpose()]
    return [Chain([step, IncreaseResolution(2)]) for step in geometric]


def repeat_augmenters() -> list[Augmenter]:
    """The 3 augmenters of ``use_repeat_augmentations``: tile 2x vertically, horizontally, both."""
    return [Repeat(0, 2), Repeat(1, 2), Repeat(2, 2)]


def augmenters_for_families(basic: bool, size: bool, chain: bool, repeat: bool) -> list[Augmenter]:
    """The augmenters selected by a self-edit's four family flags, in the reference order (<= 23)."""
    selected: list[Augmenter] = []
    for enabled, family in (
        (basic, basic_augmenters),
        (size, size_augmenters),
        (chain, chain_augmenters),
        (repeat, repeat_augmenters),
    ):
        if enabled:
            selected.extend(family())
    return selected


def _build_registry() -> dict[str, Augmenter]:
    """Every named augmenter the pipeline can produce, with the inverses of the invertible ones."""
    known: list[Augmenter] = [
        Identity(),
        PermuteColors(),
        PermuteExamples(),
        *augmenters_for_families(basic=True, size=True, chain=True, repeat=True),
    ]
    registry: dict[str, Augmenter] = {}
    while known:
        augmenter = known.pop()
        if augmenter.name in registry:
            continue
        registry[augmenter.name] = augmenter
        if augmenter.invertible:
            known.append(augmenter.inverse())
    return registry


AUGMENTER_REGISTRY: dict[str, Augmenter] = _build_registry()
"""Name -> augmenter for the standard augmenters and their inverses."""

_MAP_COLORS_NAME = re.compile(r"MapColors\((\d{10})\)")


def augmenter_from_name(name: str) -> Augmenter:
    """Rebuild an augmenter from its ``name`` (registry lookup; colour maps parsed from digits).

    Raises:
        ValueError: for a name that is not registered.
    """
    if name in AUGMENTER_REGISTRY:
        return AUGMENTER_REGISTRY[name]
    match = _MAP_COLORS_NAME.fullmatch(name)
    if match:
        return MapColors([int(digit) for digit in match.group(1)])
    raise ValueError(f"unknown augmenter name {name!r}")
