"""TensorBoard reporting shared by every stage: curves, scalars, texts, the closing report (plain Python).

A :class:`Board` wraps a writer with ``SummaryWriter``'s ``add_scalar``/``add_text`` interface, or
nothing: with another logger (or none) every call is a no-op, so a stage never checks which logger
it runs under. Curves keep one step count per tag in a dictionary the caller owns, so values
appended by several passes of one module (or several boards over one writer) continue one curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class Board:
    """A TensorBoard writer (or none) and the next step of each curve."""

    def __init__(self, writer: Any | None = None, curve_steps: dict[str, int] | None = None):
        self.writer = writer if hasattr(writer, "add_scalar") else None
        self.curve_steps = curve_steps if curve_steps is not None else {}

    def scalar(self, tag: str, value: float | None, step: int) -> None:
        """One point (a None value is left out)."""
        if self.writer is not None and value is not None:
            self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def curve(self, tag: str, values: Sequence[float]) -> None:
        """Append ``values`` to the curve ``tag`` (steps continue where the last call stopped)."""
        start = self.curve_steps.get(tag, 0)
        for offset, value in enumerate(values):
            self.scalar(tag, value, start + offset)
        self.curve_steps[tag] = start + len(values)

    def report(self, scalars: Mapping[str, float | None], text: str) -> None:
        """The closing report: ``results/<key>`` scalars (None left out) and the text, flushed."""
        if self.writer is None:
            return
        for key, value in scalars.items():
            self.scalar(f"results/{key}", value, 0)
        self.writer.add_text("results", "```\n" + text + "\n```", 0)
        self.writer.flush()
