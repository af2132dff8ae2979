"""The knowledge-incorporation records (plain Python): what one passage's evaluation produces.

Written by :class:`~seal_pl.lightning.KnowledgeIncorporationModule` into its run directory as each
passage finishes, read by its summary, by ``seal restem`` and by the scripts, always through these
classes (:mod:`seal_pl.records`): one file stem, one kind.

=================  ==========================  ================================================
file stem          kind                        one record per
=================  ==========================  ================================================
``passages``       :class:`PassageRecord`      passage: every condition's runs, answers, traces
``predictions``    :class:`PredictionRecord`   (passage, condition, self-edit, question)
``self_edits``     :class:`KnowledgeSelfEdit`  sampled self-edit: prompt, reward, gains, stats
``samples``        :class:`SampledSelfEdits`   passage of a sampling group, sampled before scoring
=================  ==========================  ================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seal_pl.records import Record, ScoredSelfEdit


@dataclass(kw_only=True)
class Adaptation:
    """One adapter trained for a passage: its condition, training data and training trace."""

    condition: str
    edit_index: int
    repeat: int
    completion: str
    sequences: list[str]
    completion_was_empty: bool
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    train_tokens: int = 0
    processed_tokens: int = 0
    seconds: float = 0.0


@dataclass
class PassageTiming:
    """Wall seconds one passage spent in each phase (adapters trained together share one time)."""

    sample_seconds: float = 0.0
    train_seconds: float = 0.0
    answer_seconds: float = 0.0
    processed_tokens: int = 0


@dataclass(kw_only=True)
class GradedAnswer:
    """One closed-book answer and its grade."""

    question_id: str
    question: str
    gold: list[str]
    prediction: str
    correct: bool
    exact: bool
    f1: float


@dataclass(kw_only=True)
class ConditionRun:
    """One adaptation of a passage (or the un-adapted model) answering every question.

    ``self_edit_stats`` (see :mod:`seal_pl.knowledge.self_edit_stats`) is set for the self-edit
    and external conditions.
    """

    edit_index: int
    repeat: int
    accuracy: float
    n_correct: int
    n_questions: int
    questions: list[GradedAnswer]
    adaptation: Adaptation | None
    self_edit_stats: dict[str, float] | None = None

    @classmethod
    def of(cls, edit_index: int, repeat: int, graded: list[GradedAnswer], adaptation: Adaptation | None):
        correct = sum(q.correct for q in graded)
        return cls(
            edit_index=edit_index,
            repeat=repeat,
            accuracy=correct / max(1, len(graded)),
            n_correct=correct,
            n_questions=len(graded),
            questions=graded,
            adaptation=adaptation,
        )


@dataclass
class Truncation:
    """What had to be cut for a passage: training sequences cut to ``max_length`` (how many), and
    whether the self-edit prompt was built from a beginning of the passage."""

    training_sequences: int = 0
    self_edit_prompt: bool = False


@dataclass(kw_only=True)
class PassageRecord(Record):
    """Everything one passage's evaluation produced, per condition."""

    KIND = "knowledge_passage"
    STEM = "passages"

    passage_id: str
    title: str
    conditions: dict[str, list[ConditionRun]]
    truncation: Truncation = field(default_factory=Truncation)
    timing: PassageTiming | None = None


@dataclass(kw_only=True)
class PredictionRecord(Record):
    """One answer of one condition's run: the unit the paired bootstrap resamples."""

    KIND = "knowledge_prediction"
    STEM = "predictions"

    passage_id: str
    condition: str
    edit_index: int
    question_id: str
    question: str
    gold: list[str]
    prediction: str
    correct: bool
    exact: bool
    f1: float

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.passage_id, self.condition, self.edit_index, self.question_id)


@dataclass(kw_only=True)
class KnowledgeSelfEdit(ScoredSelfEdit):
    """One sampled self-edit of a passage and its reward (the E-step's record).

    ``reward``: adapted accuracy averaged over the inner-loop seeds (``accuracy_per_seed``);
    ``gain``: over the un-adapted model (``baseline_accuracy``; None without ``no_adaptation``);
    ``gain_over_passage``: over training on the passage alone (None without ``passage_only``).
    """

    KIND = "knowledge_self_edit"
    STEM = "self_edits"

    passage_id: str
    accuracy_per_seed: list[float]
    baseline_accuracy: float | None
    gain: float | None
    passage_only_accuracy: float | None
    gain_over_passage: float | None
    stats: dict[str, float] | None = None


@dataclass(kw_only=True)
class SampledSelfEdits(Record):
    """The K self-edits of one passage of a sampling group, written before any is scored."""

    KIND = "knowledge_samples"
    STEM = "samples"

    passage_id: str
    group: int
    seed: int
    completions: list[str]
