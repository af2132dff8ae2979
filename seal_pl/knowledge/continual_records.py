"""The records of the continual self-edits experiment, one kind per file stem (plain Python).

Written by :class:`~seal_pl.lightning.continual.ContinualSelfEditsModule` as each sequence
finishes (per-rank shards ``<stem>.rank<r>.jsonl``; rank 0 merges them into ``<stem>.jsonl``), read
back through these classes only (:mod:`seal_pl.records`):

* ``continual_sequences`` - :class:`ContinualSequenceRecord`, one per sequence: its accuracy
  matrix, correct/question counts per cell, the strategy, and every step
  (:class:`ContinualStep`: the self-edit, training texts, replayed texts, losses, times);
* ``continual_predictions`` - :class:`ContinualPredictionRecord`, one per (sequence, row, column,
  question): every graded answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seal_pl.knowledge.records import GradedAnswer
from seal_pl.records import Record, read_all_typed, rewrite_typed

Matrix = list[list[float | None]]


@dataclass(kw_only=True)
class ContinualStep:
    """Step ``step`` (1-based) of a sequence: one self-edit, one update, the row answered after it."""

    step: int
    passage_id: str
    self_edit_source: str
    completion: str
    completion_was_empty: bool
    sequences: list[str]
    n_replayed: int
    replayed: list[str]
    losses: list[float]
    train_steps: int
    train_tokens: int
    generate_seconds: float
    train_seconds: float
    answer_seconds: float


@dataclass(kw_only=True)
class ContinualSequenceRecord(Record):
    """One sequence of M passages: the (M+1) x M accuracy matrix and every step that made it."""

    KIND = "continual_sequence"
    STEM = "continual_sequences"

    id: str
    index: int
    passage_ids: list[str]
    titles: list[str]
    strategy: dict[str, Any]
    matrix: Matrix
    n_correct: list[list[int]]
    n_questions: list[list[int]]
    steps: list[ContinualStep]
    seconds: float


@dataclass(kw_only=True)
class ContinualPredictionRecord(GradedAnswer, Record):
    """One graded answer: question of passage ``column`` of the sequence after ``row`` updates."""

    KIND = "continual_prediction"
    STEM = "continual_predictions"

    sequence_id: str
    row: int
    column: int
    passage_id: str

    @classmethod
    def of(cls, sequence_id: str, row: int, column: int, passage_id: str, answer: GradedAnswer):
        fields = {f.name: getattr(answer, f.name) for f in dataclasses.fields(GradedAnswer)}
        return cls(sequence_id=sequence_id, row=row, column=column, passage_id=passage_id, **fields)

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.sequence_id, self.row, self.column, self.question_id)


def merge_continual(run_dir: str | Path) -> list[ContinualSequenceRecord]:
    """Merge every rank's shards into ``continual_sequences.jsonl`` and ``continual_predictions.jsonl``
    and return the finished sequences by id (nothing is written when there is none).

    A sequence killed after some of its answers were written is redone in full: the later
    (finished) answers win, and answers of sequences without a record are left out.
    """
    by_id = {r.id: r for r in read_all_typed(ContinualSequenceRecord.shards(run_dir), ContinualSequenceRecord)}
    ordered = [by_id[key] for key in sorted(by_id)]
    if not ordered:
        return []
    answers = read_all_typed(ContinualPredictionRecord.shards(run_dir), ContinualPredictionRecord)
    unique = {p.key: p for p in answers if p.sequence_id in by_id}
    rewrite_typed(ContinualPredictionRecord.merged(run_dir), [unique[k] for k in sorted(unique)])
    rewrite_typed(ContinualSequenceRecord.merged(run_dir), ordered)
    return ordered
