"""Text forms of ARC grids, examples and tasks, and chat messages for the model.

Grid formats (chosen by name, see :data:`GRID_FORMATS`):

``numpy`` (the reference format; what ``str()`` prints for an integer numpy array)
    The grid is wrapped in one pair of square brackets; each row is wrapped in its own pair, its
    cells written as single digits separated by single spaces; rows are separated by a newline
    followed by one space. A 2x2 grid with rows ``0 1`` and ``2 3`` reads ``[[0 1]\\n [2 3]]``; a
    1x1 grid reads ``[[5]]``. (numpy's line wrapping at 75 characters never triggers for grids
    of at most 30 single-digit columns.) The parser is lenient about layout: it drops every
    ``#``, skips text before the first ``[[`` and after the matching ``]]``, and accepts any
    whitespace between cells and rows. Anything else that is off (ragged rows, non-digit cells,
    missing brackets, text between rows) gives ``None``.

``digits``
    One line per row, one character (0-9) per cell, no separators: ``01\\n23``. The grid is the
    first block of non-empty lines; text after a blank line is ignored.

An example becomes a *query* ``<input grid> -> `` and an *answer* ``<output grid>#``; the
separator and the end marker are configurable in :class:`TextRepresenter`. A task becomes a
system message (instructions, a line describing the grid format, every demonstration as
``query + answer + "\\n"``), a user message (the test query) and a target (the test answer).
Turning messages into token ids with a model's chat template happens elsewhere.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from seal_pl.arc.grids import Example, Grid, Task

_DIGITS = frozenset("0123456789")
_BRACKETED_ROW = re.compile(r"\[([^\[\]]*)\]")


def _rows_to_grid(rows: list[list[str]]) -> Grid | None:
    """Digit tokens per row -> int8 grid, or ``None`` when empty, ragged or not single digits."""
    if not rows or not rows[0]:
        return None
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        return None
    if any(token not in _DIGITS for row in rows for token in row):
        return None
    return np.array([[int(token) for token in row] for row in rows], dtype=np.int8)


class GridFormat(ABC):
    """Two-way conversion between a grid and text. ``text_to_grid`` never raises."""

    name: str
    description: str
    """One sentence for the prompt telling the model how grids are written."""

    @abstractmethod
    def grid_to_text(self, grid: Grid) -> str:
        """Render a grid."""

    @abstractmethod
    def text_to_grid(self, text: str) -> Grid | None:
        """Parse a grid; ``None`` for anything that is not one."""


class NumpyGridFormat(GridFormat):
    """Nested brackets, as numpy prints integer arrays (the reference format)."""

    name = "numpy"
    description = (
        "Grids are written as nested arrays: one bracketed row per line, with the colour of each cell "
        "given as a digit from 0 to 9."
    )

    def grid_to_text(self, grid: Grid) -> str:
        rows = ["[" + " ".join(str(cell) for cell in row) + "]" for row in np.asarray(grid).tolist()]
        return "[" + "\n ".join(rows) + "]"

    def text_to_grid(self, text: str) -> Grid | None:
        if not isinstance(text, str):
            return None
        text = text.replace("#", "")
        start = text.find("[[")
        end = text.find("]]", start + 1)
        if start < 0 or end < 0:
            return None
        body = text[start + 1 : end + 1]
        if _BRACKETED_ROW.sub("", body).strip():
            return None
        return _rows_to_grid([row.split() for row in _BRACKETED_ROW.findall(body)])


class DigitRowsGridFormat(GridFormat):
    """One line of digits per row, no separators (compact: about one token per cell)."""

    name = "digits"
    description = "Grids are written one row per line, each cell as a single digit from 0 to 9 giving its colour."

    def grid_to_text(self, grid: Grid) -> str:
        return "\n".join("".join(str(cell) for cell in row) for row in np.asarray(grid).tolist())

    def text_to_grid(self, text: str) -> Grid | None:
        if not isinstance(text, str):
            return None
        rows: list[list[str]] = []
        for line in text.replace("#", "").strip().splitlines():
            line = line.strip()
            if not line:
                break
            rows.append(list(line))
        return _rows_to_grid(rows)


GRID_FORMATS: dict[str, type[GridFormat]] = {"numpy": NumpyGridFormat, "digits": DigitRowsGridFormat}


def grid_format(name: str) -> GridFormat:
    """The grid format registered under ``name``."""
    if name not in GRID_FORMATS:
        raise ValueError(f"unknown grid format {name!r}; choose from {sorted(GRID_FORMATS)}")
    return GRID_FORMATS[name]()


def grid_to_text(grid: Grid) -> str:
    """Render ``grid`` in the reference (numpy) format."""
    return NumpyGridFormat().grid_to_text(grid)


def text_to_grid(text: str) -> Grid | None:
    """Parse the reference (numpy) format; ``None`` when ``text`` holds no well-formed grid."""
    return NumpyGridFormat().text_to_grid(text)


@dataclass(frozen=True)
class TextRepresenter:
    """How examples are written: a grid format, the input/output separator and an end marker."""

    grid_format: GridFormat = field(default_factory=NumpyGridFormat)
    io_separator: str = " -> "
    end_marker: str = "#"

    def query(self, example: Example) -> str:
        """``<input grid><separator>``: what the model sees before it answers."""
        return self.grid_format.grid_to_text(example.input) + self.io_separator

    def answer(self, example: Example) -> str:
        """``<output grid><end marker>``: what the model should produce."""
        if example.output is None:
            raise ValueError("cannot render the answer of an example without an output grid")
        return self.grid_format.grid_to_text(example.output) + self.end_marker


DEFAULT_SYSTEM_INSTRUCTION = (
    "You are solving a visual reasoning puzzle made of coloured grids. Every input grid below is "
    "turned into its output grid by one hidden rule, and the rule is the same for all pairs. Study "
    "the demonstrations, work out the rule, and apply it to the last input. Write your answer as a "
    "single grid in exactly the same format as the demonstration outputs."
)


def task_to_messages(
    task: Task, representer: TextRepresenter | None = None, system_instruction: str | None = None
) -> tuple[list[dict[str, str]], str | None]:
    """Chat messages for ``task`` and the expected assistant reply.

    Returns:
        ``(messages, target)``: ``messages`` is ``[system, user]`` where the system message holds
        the instruction, the grid-format line and every demonstration as ``query + answer + "\\n"``
        and the user message is the test query; ``target`` is the test answer (``None`` when the
        test output is unknown).
    """
    representer = representer or TextRepresenter()
    instruction = DEFAULT_SYSTEM_INSTRUCTION if system_instruction is None else system_instruction
    demonstrations = "".join(representer.query(example) + representer.answer(example) + "\n" for example in task.train)
    system = f"{instruction}\n{representer.grid_format.description}\n\n{demonstrations}"
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": representer.query(task.test)},
    ]
    target = None if task.test.output is None else representer.answer(task.test)
    return messages, target


_FENCED_BLOCK = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)


def decode_prediction(text: str, representer: TextRepresenter | None = None) -> Grid | None:
    """Parse a model reply into a grid, or ``None`` when it holds none.

    Uses the inside of the first fenced code block when there is one, cuts the reply at the end
    marker, collapses runs of spaces, then parses with the representer's grid format.
    """
    if not isinstance(text, str):
        return None
    representer = representer or TextRepresenter()
    fenced = _FENCED_BLOCK.search(text)
    if fenced:
        text = fenced.group(1)
    if representer.end_marker:
        text = text.split(representer.end_marker, 1)[0]
    text = re.sub(r" {2,}", " ", text)
    return representer.grid_format.text_to_grid(text)
