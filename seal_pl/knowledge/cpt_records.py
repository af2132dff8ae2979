"""The records of multi-passage continued pretraining (CPT), one kind per file stem (plain Python).

Written by :class:`~seal_pl.lightning.cpt.ContinuedPretrainingModule` into its run directory
(per-rank shards ``<stem>.rank<r>.jsonl``, merged ``<stem>.jsonl`` by rank 0), read back through
these classes only (:mod:`seal_pl.records`):

* ``cpt_self_edits`` - :class:`CPTSelfEditRecord`, one per (passage, self-edit index): the
  completion, where it came from (``model`` or the file) and its sampling seed;
* ``cpt_train_sequences`` - :class:`CPTTrainText`, one per pooled training text (merged file only);
* ``cpt_eval`` - :class:`CPTEvalRecord`, one per (phase, passage): every graded answer;
* ``cpt_predictions`` - :class:`CPTPredictionRecord`, one per (phase, question) (merged file only).

The merged ``cpt_self_edits.jsonl`` is the hand-over file: its lines carry ``passage_id`` and
``completion``, so it reads as any ``self_edits_path``.
"""

from __future__ import annotations

from dataclasses import dataclass

from seal_pl.knowledge.records import GradedAnswer
from seal_pl.records import Record


@dataclass(kw_only=True)
class CPTSelfEditRecord(Record):
    """Self-edit ``edit_index`` of a passage: written by the model (``source: model``, with its
    sampling ``seed``) or taken from a self-edit file (``source``: the file)."""

    KIND = "cpt_self_edit"
    STEM = "cpt_self_edits"

    id: str
    passage_id: str
    edit_index: int
    completion: str
    source: str
    seed: int | None = None

    @classmethod
    def of(cls, passage_id: str, edit_index: int, completion: str, source: str, seed: int | None = None):
        return cls(
            id=f"{passage_id}/{edit_index}",
            passage_id=passage_id,
            edit_index=edit_index,
            completion=completion,
            source=source,
            seed=seed,
        )


@dataclass(kw_only=True)
class CPTTrainText(Record):
    """One pooled training text and the self-edit it comes from (``edit_index`` None: the passage alone)."""

    KIND = "cpt_train_text"
    STEM = "cpt_train_sequences"

    passage_id: str
    edit_index: int | None
    text: str


@dataclass(kw_only=True)
class CPTEvalRecord(Record):
    """One passage's graded answers in one phase (``baseline``, or ``adapted`` after ``global_step``
    optimizer steps; id ``baseline/<passage>`` or ``adapted@<step>/<passage>``)."""

    KIND = "cpt_eval"
    STEM = "cpt_eval"

    id: str
    phase: str
    global_step: int
    passage_id: str
    title: str
    questions: list[GradedAnswer]

    @staticmethod
    def id_of(phase: str, global_step: int, passage_id: str) -> str:
        """Adapted answers are tied to the optimizer step they saw; baseline answers are not."""
        return f"baseline/{passage_id}" if phase == "baseline" else f"adapted@{global_step}/{passage_id}"

    def predictions(self) -> list[CPTPredictionRecord]:
        return [CPTPredictionRecord.of(self.phase, self.passage_id, answer) for answer in self.questions]


@dataclass(kw_only=True)
class CPTPredictionRecord(GradedAnswer, Record):
    """One graded answer of one phase (the fields of :class:`GradedAnswer`, its phase and passage)."""

    KIND = "cpt_prediction"
    STEM = "cpt_predictions"

    phase: str
    passage_id: str

    @classmethod
    def of(cls, phase: str, passage_id: str, answer: GradedAnswer) -> CPTPredictionRecord:
        return cls(phase=phase, passage_id=passage_id, **vars(answer))
