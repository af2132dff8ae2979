"""Continual self-edits: apply self-edits one passage after another and measure what is forgotten.

A *sequence* is M passages. Before any update every passage's questions are answered (row 0 of the
matrix). Then, for step k = 1..M: the current model writes one self-edit for passage k, an adapter
is trained on it, the update enters the model (how is the *strategy*), and the questions of
passages 1..k are answered again (row k). Over many sequences this gives the (M+1) x M accuracy
matrix of the reference (spec 2.9): the diagonal is what was freshly learned, the last row what is
left after all M updates, and their difference per passage is forgetting.

This module holds the plain-Python parts, unit tested without Lightning:

* drawing sequences (:func:`draw_sequences`), the replay sample (:func:`sample_replay`);
* matrix statistics: per-cell mean and standard deviation over sequences, and the exact pooling
  of such statistics from several runs (:func:`pool_matrix_stats`; the reference averaged the
  standard deviations of its 8 jobs, which is not the standard deviation over its 64 sequences);
* the forgetting summary (:func:`forgetting_summary`), the heatmap (:func:`save_heatmap`) and
  ``results.json`` (:func:`continual_results`);
* one sequence end to end (:class:`ContinualRun`: the exact base weights restored before and after,
  row 0, then per passage a self-edit, an update and a row), handing back its typed records
  (:mod:`seal_pl.knowledge.continual_records`);
* the update strategies, chosen in config by ``class_path``: :class:`Merge` (the reference: merge
  each adapter into the weights), :class:`Replay` (merge, and mix a sample of earlier self-edits
  into every update), :class:`Route` (no merge: one adapter per passage, each question answered by
  its passage's adapter) and :class:`Compose` (no merge: one adapter per passage trained on the base
  weights, the sum of all adapters so far answers every question). A strategy that writes the base
  weights (a merge; Compose adding and taking back the sum) tells the generator backend it is given
  (:meth:`~seal_pl.generation.base.GeneratorBackend.base_weights_changed`), so that a backend serving
  a copy of the weights (vLLM) answers with the current model.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner.lora import AdapterBank
from seal_pl.inner.sequences import TrainSequence
from seal_pl.inner.trainer import AdaptJob
from seal_pl.knowledge.continual_records import ContinualPredictionRecord, ContinualSequenceRecord, ContinualStep
from seal_pl.knowledge.data import Passage
from seal_pl.knowledge.records import GradedAnswer
from seal_pl.pipelines.knowledge import KnowledgeIncorporation

Matrix = list[list[float | None]]

REFERENCE = {
    "source": "SEAL reference results/continual_self_edits/overall_results.json (spec 2.9): 64 sequences of "
    "8 SQuAD val passages, Qwen2.5-7B after 2 ReST-EM rounds, LoRA r32 merged after every step, GPT-4.1 grader",
    "base_row_mean": 0.307,
    "diagonal": [0.383, 0.499, 0.446, 0.440, 0.376, 0.449, 0.385, 0.340],
    "final_row": [0.189, 0.219, 0.164, 0.237, 0.221, 0.275, 0.335, 0.340],
    "final_row_mean": 0.247,
}
"""The reference's committed continual result (accuracy fractions)."""


# ----------------------------------------------------------------------------------- sequences
def draw_sequences(n_passages: int, n_sequences: int, length: int, seed: int = 42) -> list[list[int]]:
    """Passage indices of ``n_sequences`` sequences of ``length`` distinct passages each.

    Sequence ``s`` is ``random.Random(seed + s).sample(range(n_passages), length)``: it depends only on
    its own index, so sharding across processes and resuming never change which passages it holds.
    (The reference drew 8 sequences per job from one generator seeded ``42 + job``.)
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if n_sequences < 0:
        raise ValueError(f"n_sequences must be >= 0, got {n_sequences}")
    if length > n_passages:
        raise ValueError(f"a sequence of {length} distinct passages needs at least {length} passages, got {n_passages}")
    return [random.Random(seed + s).sample(range(n_passages), length) for s in range(n_sequences)]


def replay_size(n_new: int, fraction: float, count: int | None) -> int:
    """How many earlier sequences to replay next to ``n_new`` new ones: ``count``, else ``round(fraction * n_new)``."""
    if count is not None:
        return max(0, count)
    return max(0, round(fraction * n_new))


def sample_replay(history: Sequence[Sequence[str]], n: int, seed: int) -> list[str]:
    """Up to ``n`` training texts of earlier updates, spread evenly over them.

    The earlier updates are visited round-robin in a seeded random order, each giving one of its
    texts (seeded order, no repeats) per round, so every earlier passage is represented before any
    passage contributes twice. Fewer than ``n`` come back only when the history holds fewer texts.
    """
    rng = random.Random(seed)
    pools = [rng.sample(list(texts), len(texts)) for texts in history if texts]
    order = rng.sample(range(len(pools)), len(pools))
    out: list[str] = []
    while len(out) < n and any(pools):
        for index in order:
            if pools[index] and len(out) < n:
                out.append(pools[index].pop())
    return out


# ------------------------------------------------------------------------------------- matrix
def is_valid_cell(row: int, column: int) -> bool:
    """Row 0 holds every passage; row k (after k updates) holds the passages seen so far (columns < k)."""
    return row == 0 or column < row


def matrix_from_rows(rows: Sequence[Sequence[float]], length: int) -> Matrix:
    """The (length+1) x length matrix from its rows (row 0: ``length`` values, row k: ``k`` values)."""
    if len(rows) != length + 1:
        raise ValueError(f"need {length + 1} rows for {length} passages, got {len(rows)}")
    matrix: Matrix = []
    for k, row in enumerate(rows):
        expected = length if k == 0 else k
        if len(row) != expected:
            raise ValueError(f"row {k} needs {expected} values, got {len(row)}")
        matrix.append([float(v) for v in row] + [None] * (length - len(row)))
    return matrix


def _shape(matrices: Sequence[Matrix]) -> int:
    if not matrices:
        raise ValueError("no matrices")
    length = len(matrices[0][0])
    for matrix in matrices:
        if len(matrix) != length + 1 or any(len(row) != length for row in matrix):
            raise ValueError(f"every matrix must be {length + 1} x {length}")
    return length


def matrix_stats(matrices: Sequence[Matrix], ddof: int = 0) -> dict[str, list]:
    """Per cell over sequences: ``n``, ``mean`` and standard deviation ``std`` (``None`` where invalid).

    ``ddof=0`` is the population standard deviation (``numpy.std``'s default, as in the reference);
    ``ddof=1`` the sample standard deviation.
    """
    length = _shape(matrices)
    n_out, mean_out, std_out = [], [], []
    for r in range(length + 1):
        n_row, mean_row, std_row = [], [], []
        for c in range(length):
            values = [m[r][c] for m in matrices if m[r][c] is not None]
            if not is_valid_cell(r, c) or not values:
                n_row.append(0)
                mean_row.append(None)
                std_row.append(None)
                continue
            mean = sum(values) / len(values)
            denominator = len(values) - ddof
            variance = sum((v - mean) ** 2 for v in values) / denominator if denominator > 0 else 0.0
            n_row.append(len(values))
            mean_row.append(mean)
            std_row.append(math.sqrt(variance))
        n_out.append(n_row)
        mean_out.append(mean_row)
        std_out.append(std_row)
    return {"n": n_out, "mean": mean_out, "std": std_out, "ddof": ddof}


def pool(groups: Sequence[tuple[int, float, float]], ddof: int = 0) -> tuple[int, float, float]:
    """Exact (count, mean, std) of the union of groups given as (count, mean, std) each.

    Both the within-group spread and the spread of the group means count:
    ``var = (sum (n_i - ddof) s_i^2 + sum n_i (m_i - m)^2) / (N - ddof)``. Averaging the ``s_i``
    instead (the reference) ignores the second term and the group sizes.
    """
    groups = [(n, m, s) for n, m, s in groups if n > 0]
    total = sum(n for n, _, _ in groups)
    if total == 0:
        return 0, float("nan"), float("nan")
    mean = sum(n * m for n, m, _ in groups) / total
    within = sum((n - ddof) * s * s for n, _, s in groups)
    between = sum(n * (m - mean) ** 2 for n, m, _ in groups)
    denominator = total - ddof
    return total, mean, math.sqrt((within + between) / denominator) if denominator > 0 else 0.0


def pool_matrix_stats(groups: Sequence[dict[str, list]]) -> dict[str, list]:
    """Pool :func:`matrix_stats` outputs of several runs (same shape, same ``ddof``) cell by cell."""
    if not groups:
        raise ValueError("nothing to pool")
    ddof = groups[0].get("ddof", 0)
    if any(g.get("ddof", 0) != ddof for g in groups):
        raise ValueError("cannot pool statistics computed with different ddof")
    length = _shape([g["mean"] for g in groups])
    out = {"n": [], "mean": [], "std": [], "ddof": ddof}
    for r in range(length + 1):
        row_n, row_mean, row_std = [], [], []
        for c in range(length):
            cells = [(g["n"][r][c], g["mean"][r][c], g["std"][r][c]) for g in groups if g["n"][r][c]]
            if not cells:
                row_n.append(0)
                row_mean.append(None)
                row_std.append(None)
                continue
            n, mean, std = pool(cells, ddof)
            row_n.append(n)
            row_mean.append(mean)
            row_std.append(std)
        out["n"].append(row_n)
        out["mean"].append(row_mean)
        out["std"].append(row_std)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def forgetting_summary(mean: Matrix) -> dict:
    """What the matrix says, per passage (column) and averaged.

    * ``base_row``: accuracy before any update; ``diagonal``: right after the passage's own update
      (freshly learned); ``final_row``: after all updates;
    * ``forgetting``: diagonal minus final row (what was learned and then lost; 0 for the last
      passage by construction), ``final_minus_base``: final row minus base row (negative = the
      passage ends below the un-adapted model, the reference's finding);
    * ``row_means``: the mean of each row's valid cells; ``forgetting_mean`` averages the passages
      that saw later updates (all but the last).
    """
    length = len(mean[0])
    base = [mean[0][c] for c in range(length)]
    diagonal = [mean[c + 1][c] for c in range(length)]
    final = [mean[length][c] for c in range(length)]
    forgetting = [None if d is None or f is None else d - f for d, f in zip(diagonal, final)]
    final_minus_base = [None if f is None or b is None else f - b for f, b in zip(final, base)]
    row_means = [
        _mean([v for c, v in enumerate(row) if is_valid_cell(r, c) and v is not None]) for r, row in enumerate(mean)
    ]
    known = [v for v in forgetting[:-1] if v is not None]
    summary = {
        "base_row": base,
        "diagonal": diagonal,
        "final_row": final,
        "forgetting": forgetting,
        "final_minus_base": final_minus_base,
        "row_means": row_means,
        "base_row_mean": row_means[0],
        "diagonal_mean": _mean([v for v in diagonal if v is not None]),
        "final_row_mean": row_means[length],
        "forgetting_mean": _mean(known),
    }
    summary["final_at_least_base"] = (
        None
        if summary["final_row_mean"] is None or summary["base_row_mean"] is None
        else summary["final_row_mean"] >= summary["base_row_mean"]
    )
    return summary


SPREAD_KEYS = ("base_row_mean", "diagonal_mean", "final_row_mean", "forgetting_mean")


def summarize_sequences(matrices: Sequence[Matrix], ddof: int = 0) -> dict:
    """Everything ``results.json`` reports about a set of sequences.

    ``matrix``: per-cell n/mean/std over sequences; ``summary``: :func:`forgetting_summary` of the
    mean matrix; ``spread``: for the summary's averages, their mean and std over sequences (each
    sequence summarised on its own).
    """
    stats = matrix_stats(matrices, ddof)
    per_sequence = [forgetting_summary(m) for m in matrices]
    spread = {}
    for key in SPREAD_KEYS:
        values = [s[key] for s in per_sequence if s[key] is not None]
        spread[key] = {"n": 0, "mean": None, "std": None}
        if values:
            n, mean, std = pool([(1, v, 0.0) for v in values], ddof)
            spread[key] = {"n": n, "mean": mean, "std": std}
    return {
        "n_sequences": len(matrices),
        "matrix": stats,
        "summary": forgetting_summary(stats["mean"]),
        "spread": spread,
    }


def row_label(row: int) -> str:
    return "before" if row == 0 else f"after {row}"


def format_matrix(mean: Matrix, std: Matrix | None = None) -> str:
    """Fixed-width text of a matrix in percent (``mean±std`` when ``std`` is given)."""
    length = len(mean[0])
    width = 12 if std is not None else 7
    lines = [f"{'':<9}" + "".join(f"{f'P{c + 1}':>{width}}" for c in range(length))]
    for r, row in enumerate(mean):
        cells = []
        for c, value in enumerate(row):
            if value is None:
                cells.append(f"{'':>{width}}")
            elif std is not None and std[r][c] is not None:
                cells.append(f"{f'{100 * value:.1f}±{100 * std[r][c]:.1f}':>{width}}")
            else:
                cells.append(f"{100 * value:>{width}.1f}")
        lines.append(f"{row_label(r):<9}" + "".join(cells))
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    def pct(values):
        return " ".join("  -  " if v is None else f"{100 * v:5.1f}" for v in values)

    def one(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    return "\n".join(
        [
            f"base row      {pct(summary['base_row'])}   mean {one(summary['base_row_mean'])}",
            f"diagonal      {pct(summary['diagonal'])}   mean {one(summary['diagonal_mean'])}",
            f"final row     {pct(summary['final_row'])}   mean {one(summary['final_row_mean'])}",
            f"forgetting    {pct(summary['forgetting'])}   mean {one(summary['forgetting_mean'])}",
        ]
    )


def save_heatmap(panels: Sequence[dict], path: str | Path) -> Path:
    """Draw one heatmap per panel (``{"title", "mean", "std"?}``) side by side into a PNG.

    Cells show ``mean`` (and ``±std``) in percent; the diagonal (freshly learned) is outlined; cells
    that do not exist (a passage not yet seen) are blank. Needs matplotlib (imported here only).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(1.2 + 1.1 * len(panels[0]["mean"][0]) * len(panels), 0.9 + 0.55 * len(panels[0]["mean"])),
        squeeze=False,
    )
    image = None
    for ax, panel in zip(axes[0], panels):
        mean = panel["mean"]
        std = panel.get("std")
        length = len(mean[0])
        values = np.array([[np.nan if v is None else 100 * v for v in row] for row in mean], dtype=float)
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for r in range(length + 1):
            for c in range(length):
                if np.isnan(values[r, c]):
                    continue
                text = f"{values[r, c]:.0f}"
                if std is not None and std[r][c] is not None:
                    text += f"\n±{100 * std[r][c]:.0f}"
                ax.text(
                    c, r, text, ha="center", va="center", fontsize=7, color="white" if values[r, c] < 60 else "black"
                )
        for c in range(length):
            ax.add_patch(plt.Rectangle((c - 0.5, c + 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
        ax.set_xticks(range(length), [f"P{c + 1}" for c in range(length)])
        ax.set_yticks(range(length + 1), [row_label(r) for r in range(length + 1)])
        ax.set_xlabel("passage (in order of its update)")
        ax.set_title(panel.get("title", ""), fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label="accuracy (%)", shrink=0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- strategies
class ContinualStrategy:
    """How an update enters the model and which weights answer afterwards (the reference: :class:`Merge`).

    The experiment asks a strategy, at step ``k`` (0-based; ``updates`` = updates done so far):
    how many adapter slots it needs, which slot trains, what to train on, what to do after training,
    and, for answering and writing self-edits, which weights count as "the current model".
    """

    name = "merge"

    def adapter_slots(self, length: int) -> int:
        """Adapter slots needed for a sequence of ``length`` passages."""
        return 1

    def train_slot(self, step: int) -> int:
        """The slot the update of step ``step`` trains."""
        return 0

    def training_texts(self, step: int, new: list[str], history: list[list[str]], seed: int) -> tuple[list[str], int]:
        """Texts to train on at ``step`` (``new``: this self-edit's; ``history``: earlier updates'), and
        how many of them are replayed."""
        return list(new), 0

    def after_update(self, bank: AdapterBank, step: int, slot: int, generator: GeneratorBackend | None = None) -> None:
        """Make the trained adapter part of the model (default: merge it into the weights and tell
        ``generator``, the backend that answers and writes self-edits, that the base weights changed)."""
        bank.merge_into_base(slot)
        if generator is not None:
            generator.base_weights_changed()

    def answer_slot(self, passage_index: int, updates: int) -> int | None:
        """Adapter slot answering the questions of the sequence's passage ``passage_index`` (None = weights)."""
        return None

    @contextmanager
    def current_model(
        self, bank: AdapterBank, updates: int, generator: GeneratorBackend | None = None
    ) -> Iterator[None]:
        """Inside this context the bound model is "the current model" after ``updates`` updates
        (``generator`` is told of every change of the base weights this makes)."""
        yield

    def describe(self) -> dict:
        """Name and parameters, for ``results.json``."""
        return {"name": self.name}


class Merge(ContinualStrategy):
    """The reference: merge every adapter into the weights right after training it (in memory)."""


class Replay(ContinualStrategy):
    """Merge, and train each update on its self-edit plus a sample of earlier updates' training texts.

    Args:
        fraction: replayed texts per new text (1.0 = as many earlier texts as new ones).
        count: a fixed number of replayed texts per update instead of ``fraction``.
    """

    name = "replay"

    def __init__(self, fraction: float = 1.0, count: int | None = None):
        if fraction < 0 or (count is not None and count < 0):
            raise ValueError("replay fraction and count must be >= 0")
        self.fraction = fraction
        self.count = count

    def training_texts(self, step: int, new: list[str], history: list[list[str]], seed: int) -> tuple[list[str], int]:
        replayed = sample_replay(history, replay_size(len(new), self.fraction, self.count), seed)
        return list(new) + replayed, len(replayed)

    def describe(self) -> dict:
        return {"name": self.name, "fraction": self.fraction, "count": self.count}


class _AdapterPerPassage(ContinualStrategy):
    """No merge: update ``k`` trains a fresh adapter in slot ``k`` on the unchanged base weights."""

    def adapter_slots(self, length: int) -> int:
        return length

    def train_slot(self, step: int) -> int:
        return step

    def after_update(self, bank: AdapterBank, step: int, slot: int, generator: GeneratorBackend | None = None) -> None:
        return None


class Route(_AdapterPerPassage):
    """No merge: one adapter slot per passage; a question is answered by its own passage's adapter.

    This routing uses knowledge of which passage a question belongs to (an oracle router; with the
    bundled corpus the topic title in the question prompt identifies it). Self-edits are written
    by the base weights, which never change.
    """

    name = "route"

    def answer_slot(self, passage_index: int, updates: int) -> int | None:
        return passage_index if passage_index < updates else None


class Compose(_AdapterPerPassage):
    """No merge: one adapter per passage, each trained on the base weights; their sum is the current model.

    Unlike :class:`Route` it needs no router (every question sees the sum of all adapters so far);
    unlike :class:`Merge` no adapter is trained on top of another. The sum is added to the weights
    only while answering or writing a self-edit, and the exact weights are put back afterwards.
    """

    name = "compose"

    @contextmanager
    def current_model(
        self, bank: AdapterBank, updates: int, generator: GeneratorBackend | None = None
    ) -> Iterator[None]:
        if updates == 0:
            yield
            return
        saved = {}
        with torch.no_grad():
            for name, layer in bank.iter_layers():
                saved[name] = layer.base.weight.detach().clone()
                delta = sum(layer.lora_B[s] @ layer.lora_A[s] for s in range(updates)) * layer.scaling
                layer.base.weight.add_(delta.to(layer.base.weight.dtype))
        if generator is not None:
            generator.base_weights_changed()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, layer in bank.iter_layers():
                    layer.base.weight.copy_(saved[name])
            if generator is not None:
                generator.base_weights_changed()


# ------------------------------------------------------------------------------ one sequence
@dataclass
class SequenceItem:
    """One sequence to run: its id (``seq-<index>``), index, passages, and self-edits from a file
    (passage id -> completion; empty when the current model writes them)."""

    id: str
    index: int
    passages: list[Passage]
    external: dict[str, str] = field(default_factory=dict)


def sequence_items(
    passages: Sequence[Passage], sequences: Sequence[Sequence[int]], external: dict[str, list[str]]
) -> list[SequenceItem]:
    """One item per drawn sequence (passage indices); with ``external`` self-edits (passage id ->
    completions) each step trains on its passage's first one."""
    items = []
    for s, sequence in enumerate(sequences):
        chosen = [passages[i] for i in sequence]
        items.append(SequenceItem(f"seq-{s:04d}", s, chosen, {p.id: external[p.id][0] for p in chosen if external}))
    return items


class BaseWeights:
    """The exact weights of the adapted layers, kept on the CPU (to spare accelerator memory).

    Merges write into those weights (and nothing else): :meth:`restore` puts them back, empties
    the adapter slots and tells the generator, before and after every sequence.
    """

    def __init__(self, bank: AdapterBank):
        self.weights = {name: layer.base.weight.detach().to("cpu", copy=True) for name, layer in bank.iter_layers()}

    @torch.no_grad()
    def restore(self, bank: AdapterBank, generator: GeneratorBackend) -> None:
        for name, layer in bank.iter_layers():
            layer.base.weight.copy_(self.weights[name])
        bank.reset()
        generator.base_weights_changed(restored=True)


def accuracy(graded: Sequence[GradedAnswer]) -> float:
    return sum(answer.correct for answer in graded) / max(1, len(graded))


class ContinualRun:
    """Runs one sequence: row 0 before any update, then per passage a self-edit, an update that the
    strategy makes part of the model, and the row of every passage so far (spec 2.9).

    Args:
        pipeline: the knowledge pipeline (its inner-loop trainer, generator, grader and settings).
        strategy: how updates enter the model.
        bank: the adapter bank bound to the model.
        base: the exact base weights, restored before and after the sequence.
        seed: step ``k`` of sequence ``s`` samples and trains with ``seed + 1000 * s + k``.
    """

    def __init__(
        self,
        pipeline: KnowledgeIncorporation,
        strategy: ContinualStrategy,
        bank: AdapterBank,
        base: BaseWeights,
        seed: int = 0,
    ):
        self.pipeline, self.strategy, self.bank, self.base, self.seed = pipeline, strategy, bank, base, seed

    @property
    def generator(self) -> GeneratorBackend:
        return self.pipeline.generator

    def answer_row(self, passages: Sequence[Passage], columns: int, updates: int) -> list[list[GradedAnswer]]:
        """Graded answers to the questions of the first ``columns`` passages after ``updates`` updates."""
        graded = []
        with self.strategy.current_model(self.bank, updates, self.generator):
            for j in range(columns):
                predictions = self.pipeline.answer(passages[j], [self.strategy.answer_slot(j, updates)])[0]
                graded.append(self.pipeline.grade(passages[j], predictions))
        return graded

    def run(
        self, item: SequenceItem, on_step: Callable[[ContinualStep, list[list[GradedAnswer]]], None] | None = None
    ) -> tuple[ContinualSequenceRecord, list[ContinualPredictionRecord]]:
        """The sequence's record and every answer; ``on_step(step, row)`` after each update."""
        started = time.perf_counter()
        self.base.restore(self.bank, self.generator)
        rows = [self.answer_row(item.passages, len(item.passages), 0)]
        steps: list[ContinualStep] = []
        history: list[list[str]] = []
        for k, passage in enumerate(item.passages):
            steps.append(self.update(item, k, passage, history))
            answer_started = time.perf_counter()
            rows.append(self.answer_row(item.passages, k + 1, k + 1))
            steps[-1].answer_seconds = round(time.perf_counter() - answer_started, 2)
            if on_step is not None:
                on_step(steps[-1], rows[-1])
        self.base.restore(self.bank, self.generator)
        record = self.sequence_record(item, rows, steps, time.perf_counter() - started)
        answers = [
            ContinualPredictionRecord.of(item.id, r, j, item.passages[j].id, answer)
            for r, row in enumerate(rows)
            for j, graded in enumerate(row)
            for answer in graded
        ]
        return record, answers

    def update(self, item: SequenceItem, k: int, passage: Passage, history: list[list[str]]) -> ContinualStep:
        """Step ``k``: the self-edit (from the file, or written by the current model), training on it
        (and on what the strategy replays), and the strategy's after-update."""
        seed = self.seed + 1000 * item.index + k
        started = time.perf_counter()
        completion = item.external.get(passage.id)
        source = "file" if completion is not None else "model"
        if completion is None:
            with self.strategy.current_model(self.bank, k, self.generator):
                completion = self.pipeline.sample_self_edits([passage], 1, seed=seed)[0][0]
        generate_seconds = time.perf_counter() - started
        texts, empty = self.pipeline.training_sequences(passage, completion)
        train_texts, n_replayed = self.strategy.training_texts(k, texts, history, seed)
        marker = self.pipeline.settings.loss_after_marker
        job = AdaptJob(
            [TrainSequence.after_marker(t, marker) if marker else TrainSequence(t) for t in train_texts],
            seed=seed,
            loss_on="completion" if marker else None,
        )
        slot = self.strategy.train_slot(k)
        result = self.pipeline.trainer.adapt([job], slots=[slot])[0]
        self.strategy.after_update(self.bank, k, slot, self.generator)
        history.append(texts)
        return ContinualStep(
            step=k + 1,
            passage_id=passage.id,
            self_edit_source=source,
            completion=completion,
            completion_was_empty=empty,
            sequences=texts,
            n_replayed=n_replayed,
            replayed=train_texts[len(texts) :],
            losses=result.losses,
            train_steps=result.steps,
            train_tokens=result.train_tokens,
            generate_seconds=round(generate_seconds, 2),
            train_seconds=round(result.seconds, 2),
            answer_seconds=0.0,
        )

    def sequence_record(
        self, item: SequenceItem, rows: list[list[list[GradedAnswer]]], steps: list[ContinualStep], seconds: float
    ) -> ContinualSequenceRecord:
        length = len(item.passages)
        return ContinualSequenceRecord(
            id=item.id,
            index=item.index,
            passage_ids=[p.id for p in item.passages],
            titles=[p.title for p in item.passages],
            strategy=self.strategy.describe(),
            matrix=matrix_from_rows([[accuracy(graded) for graded in row] for row in rows], length),
            n_correct=[[sum(answer.correct for answer in graded) for graded in row] for row in rows],
            n_questions=[[len(graded) for graded in row] for row in rows],
            steps=steps,
            seconds=round(seconds, 1),
        )


def continual_results(
    sequences: Sequence[ContinualSequenceRecord],
    *,
    model: str,
    strategy: dict,
    ddof: int = 0,
    wall_seconds: float = 0.0,
) -> dict[str, Any]:
    """``results.json`` of a set of finished sequences: the matrix statistics over sequences, the
    forgetting summary, empty self-edits, times (``wall_seconds``: this invocation's) and the reference."""
    report = summarize_sequences([r.matrix for r in sequences], ddof=ddof)
    steps = [s for r in sequences for s in r.steps]
    return {
        "experiment": "knowledge_continual",
        "model": model,
        "strategy": strategy,
        "length": len(sequences[0].passage_ids),
        "sequences": [{"id": r.id, "passage_ids": r.passage_ids} for r in sequences],
        **report,
        "empty_self_edits": sum(s.completion_was_empty for s in steps),
        "seconds": {
            "sequences": round(sum(r.seconds for r in sequences), 1),
            "generate": round(sum(s.generate_seconds for s in steps), 1),
            "train": round(sum(s.train_seconds for s in steps), 1),
            "this_invocation": round(wall_seconds, 1),
        },
        "reference": REFERENCE,
    }


def format_results(results: dict[str, Any]) -> str:
    """The mean ± std matrix and the forgetting summary as text."""
    matrix = results["matrix"]
    return format_matrix(matrix["mean"], matrix["std"]) + "\n\n" + format_summary(results["summary"])


def save_results_heatmap(results: dict[str, Any], path: str | Path) -> Path:
    """The heatmap of ``results.json``'s mean ± std matrix, titled with the strategy and count."""
    title = f"{results['strategy']['name']}: {results['n_sequences']} sequences, mean ± std"
    matrix = results["matrix"]
    return save_heatmap([{"title": title, "mean": matrix["mean"], "std": matrix["std"]}], path)
