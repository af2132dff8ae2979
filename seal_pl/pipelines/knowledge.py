"""Single-passage knowledge incorporation: adapt on a passage (and self-edits), answer closed-book.

For one passage this module produces the rows of the paper's single-passage table:

* ``no_adaptation``: the base model answers the passage's questions with no passage in context;
* ``passage_only``: an adapter trained on the passage alone answers them;
* ``self_edit``: an adapter trained on the model's own self-edit (plus the passage) answers them,
  once per sampled self-edit;
* ``external``: the same with self-edits read from a file (for example written by a stronger model).

All adaptations of a passage go to adapter slots of one :class:`AdapterBank` and train together in
one batched inner loop; their answers come out of one batched generation. Plain Python over the
shared inner loop, the generator backend and a grader; the Lightning module only drives it.

Inputs longer than the model can take are never cut silently. A self-edit prompt that does not fit
the model's context (less the self-edit budget) is built from the longest beginning of the passage
that fits; training sequences longer than the inner loop's ``max_length`` are cut to it by the
trainer. Both are logged as warnings naming the passage and counted in the passage's record
(``truncation``) and in ``results.json`` (``truncated``, see :func:`truncation_summary`). A
closed-book answer prompt that does not fit is refused (:class:`PromptTooLongError`). Inputs that
fit are processed exactly as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from seal_pl.generation.base import GeneratorBackend, Prompt, SamplingParams, render_prompt
from seal_pl.inner.flops import adapter_training_flops
from seal_pl.inner.sequences import TrainSequence, token_length
from seal_pl.inner.trainer import AdaptJob, InnerLoopTrainer
from seal_pl.knowledge.data import Passage
from seal_pl.knowledge.grading import GradeItem, Grader
from seal_pl.knowledge.prompts import (
    ANSWER_STOP_STRINGS,
    PromptStyle,
    PromptTooLongError,
    answer_messages,
    answer_prompt,
    clean_answer,
    fit_context,
    self_edit_messages,
    self_edit_prompt,
)
from seal_pl.knowledge.records import (
    Adaptation,
    ConditionRun,
    GradedAnswer,
    KnowledgeSelfEdit,
    PassageRecord,
    PassageTiming,
    PredictionRecord,
    SampledSelfEdits,
    Truncation,
)
from seal_pl.knowledge.self_edit_stats import self_edit_stats, summarize_self_edit_stats
from seal_pl.knowledge.sequences import build_train_sequences
from seal_pl.records import SFTExample

logger = logging.getLogger(__name__)

Condition = Literal["no_adaptation", "passage_only", "self_edit", "external"]
CONDITIONS: tuple[str, ...] = get_args(Condition)


def adapter_slots(
    conditions: Sequence[str], n_self_edits: int, inner_seeds: int, sampling_group: int, adapters: int | None
) -> int:
    """The evaluation's adapter slots (``adapters``, or one per adaptation of a passage: every
    condition that trains, K self-edits, one external self-edit, times the inner seeds), after
    refusing options that run nothing."""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown conditions {sorted(unknown)}; valid: {list(CONDITIONS)}")
    if n_self_edits < 1 and "self_edit" in conditions:
        raise ValueError("n_self_edits must be >= 1 when the self_edit condition is on")
    if inner_seeds < 1:
        raise ValueError("inner_seeds must be >= 1")
    if sampling_group < 1:
        raise ValueError(f"sampling_group must be >= 1, got {sampling_group}")
    if adapters is None:
        per_seed = ("passage_only" in conditions) + ("self_edit" in conditions) * n_self_edits
        adapters = (per_seed + ("external" in conditions)) * inner_seeds
    return max(1, adapters)


def distillation_examples(
    passages: Sequence[Passage], edits: dict[str, list[str]], prompt_style: PromptStyle, chat_template: bool
) -> list[SFTExample]:
    """Every (passage, self-edit written elsewhere) pair as an SFT example whose prompt is exactly
    the one the E-step samples with."""
    return [
        SFTExample(
            prompt=passage_self_edit_prompt(p, prompt_style, chat_template), completion=completion, context_id=p.id
        )
        for p in passages
        for completion in edits[p.id]
    ]


def passage_self_edit_prompt(passage: Passage, prompt_style: PromptStyle = "implications", chat_template: bool = True):
    """The prompt the policy writes a passage's self-edit from: chat messages, or plain text for base models.

    The E-step samples with it, and the M-step and the distillation data train under the same one.
    """
    return _self_edit_prompt_text(passage.title, passage.context, prompt_style, chat_template)


def _self_edit_prompt_text(title: str, context: str, prompt_style: str, chat_template: bool) -> Prompt:
    if chat_template:
        return self_edit_messages(title, context, prompt_style)
    return self_edit_prompt(title, context, prompt_style)


def _passage_label(passage: Passage) -> str:
    return f"passage {passage.id!r} (title {passage.title[:80]!r})"


@dataclass
class KnowledgeSettings:
    """How self-edits are written, turned into sequences, and how questions are answered.

    Args:
        prompt_style: self-edit prompt style (implications, implications-long, implications-very-long,
            rewrite, self-qa).
        chat_template: use chat-formatted prompts (instruct models); False uses the plain-text prompts
            that base models continue.
        self_edit_sampling: decoding for self-edits (reference: temperature 1.0, top-p 0.95). Its
            ``seed`` is not used: each passage (or sampling group) samples with a seed derived from
            the module's ``seed`` (see ``KnowledgeIncorporationModule``).
        answer_max_new_tokens: answer budget (reference: 64, greedy).
        split_newlines: one training sequence per line / per question-answer block (reference: True).
        drop_preamble: drop a first line that introduces a numbered list.
        loss_after_marker: when set, every training sequence is trained only on the tokens after the
            first occurrence of this string (the whole sequence when absent); null trains on all
            tokens (reference default).
    """

    prompt_style: PromptStyle = "implications"
    chat_template: bool = True
    self_edit_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(max_new_tokens=256, temperature=1.0, top_p=0.95)
    )
    answer_max_new_tokens: int = 64
    split_newlines: bool = True
    drop_preamble: bool = True
    loss_after_marker: str | None = None


class KnowledgeIncorporation:
    """Evaluate passages under the table's conditions.

    Args:
        trainer: the shared inner loop (its bank decides how many adapters train at once).
        generator: backend bound to the same model, tokenizer and bank.
        grader: turns (question, gold answers, prediction) into verdicts.
        settings: prompt and decoding settings.
    """

    def __init__(
        self,
        trainer: InnerLoopTrainer,
        generator: GeneratorBackend,
        grader: Grader,
        settings: KnowledgeSettings | None = None,
    ):
        self.trainer = trainer
        self.generator = generator
        self.grader = grader
        self.settings = settings or KnowledgeSettings()
        self.timing = PassageTiming()
        """Seconds per phase, added up since the caller last reset it (one passage, in the module)."""
        # Per passage id: its self-edit prompt and whether it had to be built from a beginning of
        # the passage (fitting a prompt tokenizes it; the sampler and the records ask again).
        self._self_edit_prompts: dict[str, tuple[Prompt, bool]] = {}
        """Self-edit prompts of passages too long for the context, built once (and warned about once)."""

    # ------------------------------------------------------------------------------ input sizes
    def context_length(self) -> int | None:
        """Tokens the model takes (prompt + generated): the smaller of the generator's ``max_model_len``
        and the model's ``max_position_embeddings``; None when neither is known (nothing is checked)."""
        limits = []
        generator_limit = getattr(self.generator, "max_model_len", None)
        if isinstance(generator_limit, int) and generator_limit > 0:
            limits.append(generator_limit)
        model = getattr(self.generator, "model", None) or getattr(self.trainer, "model", None)
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            limits.append(positions)
        return min(limits) if limits else None

    def _tokenizer(self):
        return getattr(self.generator, "tokenizer", None) or getattr(self.trainer, "tokenizer", None)

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of a prompt as the generator feeds it (chat template applied, no second BOS)."""
        tokenizer = self._tokenizer()
        text, templated = render_prompt(tokenizer, prompt)
        return len(tokenizer(text, add_special_tokens=not templated)["input_ids"])

    def _prompt_budget(self, max_new_tokens: int) -> int | None:
        """Prompt tokens left once ``max_new_tokens`` are reserved; None when the limits are unknown."""
        context = self.context_length()
        if context is None or self._tokenizer() is None:
            return None
        return context - max_new_tokens

    def check_answer_prompts(self, passage: Passage) -> None:
        """Refuse a passage whose closed-book answer prompt (title + question) does not fit the context.

        Raises:
            PromptTooLongError: naming the passage, the question and the sizes.
        """
        new_tokens = self.settings.answer_max_new_tokens
        budget = self._prompt_budget(new_tokens)
        if budget is None:
            return
        for question in passage.questions:
            n = self.prompt_tokens(self.answer_prompt(passage, question.question))
            if n > budget:
                raise PromptTooLongError(
                    f"{_passage_label(passage)}, question {question.id!r}: the closed-book answer prompt has {n} "
                    f"tokens and with the {new_tokens} answer tokens it exceeds the model's context of "
                    f"{self.context_length()} tokens; shorten the question or the title in the data file, or "
                    "lower settings.answer_max_new_tokens"
                )

    def training_truncation(self, passage: Passage, adaptations: Sequence[Adaptation]) -> int:
        """How many distinct training sequences of the passage's adaptations exceed the inner loop's
        ``max_length`` (the trainer keeps their first ``max_length`` tokens); logs a warning when any do."""
        trainer = self.trainer
        if trainer is None or getattr(trainer, "tokenizer", None) is None:
            return 0
        config = trainer.config
        texts = dict.fromkeys(text for adaptation in adaptations for text in adaptation.sequences)
        lengths = [token_length(trainer.tokenizer, TrainSequence(text), append_eos=config.append_eos) for text in texts]
        over = [n for n in lengths if n > config.max_length]
        if over:
            logger.warning(
                "%s: %d training sequence(s) longer than the inner loop's max_length of %d tokens (the longest "
                "has %d) are cut to their first %d tokens, so the rest of the text is not trained on; raise "
                "inner.max_length (within the model's context) or split the passage",
                _passage_label(passage),
                len(over),
                config.max_length,
                max(over),
                config.max_length,
            )
        return len(over)

    # ----------------------------------------------------------------------------------- prompts
    def self_edit_prompt(self, passage: Passage) -> Prompt:
        """The passage's self-edit prompt, built from the longest beginning of the passage that fits
        the model's context less the self-edit budget (the whole passage when it fits).

        Raises:
            PromptTooLongError: not even the prompt without the passage text fits.
        """
        if passage.id not in self._self_edit_prompts:
            self._self_edit_prompts[passage.id] = self._fit_self_edit_prompt(passage)
        return self._self_edit_prompts[passage.id][0]

    def _fit_self_edit_prompt(self, passage: Passage) -> tuple[Prompt, bool]:
        s = self.settings
        prompt = passage_self_edit_prompt(passage, s.prompt_style, s.chat_template)
        new_tokens = s.self_edit_sampling.max_new_tokens
        budget = self._prompt_budget(new_tokens)
        if budget is None:
            return prompt, False
        context = fit_context(
            lambda text: _self_edit_prompt_text(passage.title, text, s.prompt_style, s.chat_template),
            passage.context,
            self.prompt_tokens,
            budget,
        )
        if context is None:
            raise PromptTooLongError(
                f"{_passage_label(passage)}: the self-edit prompt does not fit the model's context of "
                f"{self.context_length()} tokens with {new_tokens} self-edit tokens even without the passage "
                "text; shorten the title, or lower settings.self_edit_sampling.max_new_tokens"
            )
        if context == passage.context:
            return prompt, False
        logger.warning(
            "%s: the self-edit prompt is longer than the model's context of %d tokens less %d self-edit tokens; "
            "it is built from the first %d of the passage's %d characters (the rest is not shown to the model)",
            _passage_label(passage),
            self.context_length(),
            new_tokens,
            len(context),
            len(passage.context),
        )
        return _self_edit_prompt_text(passage.title, context, s.prompt_style, s.chat_template), True

    def self_edit_prompt_shortened(self, passage: Passage) -> bool:
        """Whether the passage's self-edit prompt had to be built from a beginning of the passage."""
        self.self_edit_prompt(passage)
        return self._self_edit_prompts[passage.id][1]

    def answer_prompt(self, passage: Passage, question: str):
        if self.settings.chat_template:
            return answer_messages(passage.title, question)
        return answer_prompt(passage.title, question)

    # ------------------------------------------------------------------------------------ stages
    def sample_self_edits(self, passages: Sequence[Passage], n: int, seed: int) -> list[list[str]]:
        """``n`` self-edits per passage from the current model (adapters off)."""
        per_passage = [self.self_edit_prompt(p) for p in passages]
        prompts = [prompt for prompt in per_passage for _ in range(n)]
        params = SamplingParams(**{**asdict(self.settings.self_edit_sampling), "seed": seed})
        started = time.perf_counter()
        flat = self.generator.generate(prompts, params)
        self.timing.sample_seconds += time.perf_counter() - started
        return [flat[i * n : (i + 1) * n] for i in range(len(passages))]

    def sample_group(
        self, passages: Sequence[Passage], position: int, size: int, n: int, seed: int
    ) -> list[SampledSelfEdits]:
        """The ``n`` self-edits of every passage of the sampling group of ``size`` consecutive
        ``passages`` that holds ``position``, in one generation call with ``seed + group * size``."""
        group = position // size
        members = passages[group * size : (group + 1) * size]
        group_seed = seed + group * size
        sampled = self.sample_self_edits(members, n, seed=group_seed)
        return [
            SampledSelfEdits(passage_id=p.id, group=group, seed=group_seed, completions=completions)
            for p, completions in zip(members, sampled)
        ]

    def training_sequences(self, passage: Passage, completion: str | None) -> tuple[list[str], bool]:
        """Sequences for one adaptation (``None`` completion = passage only) and whether it was empty."""
        s = self.settings
        built = build_train_sequences(
            passage.title,
            passage.context,
            completion or "",
            split_newlines=s.split_newlines,
            drop_preamble=s.drop_preamble,
        )
        return built.sequences, built.completion_was_empty

    def answer(self, passage: Passage, slots: Sequence[int | None]) -> list[list[str]]:
        """Closed-book answers to every question, once per slot (``None`` = base model)."""
        questions = passage.questions
        prompts = [self.answer_prompt(passage, q.question) for _ in slots for q in questions]
        row_slots = [(-1 if slot is None else slot) for slot in slots for _ in questions]
        params = SamplingParams(
            max_new_tokens=self.settings.answer_max_new_tokens, temperature=0.0, stop=list(ANSWER_STOP_STRINGS)
        )
        use_adapters = any(slot is not None for slot in slots)
        raw = self.generator.generate(prompts, params, adapter_slots=row_slots if use_adapters else None)
        answers = [clean_answer(text) for text in raw]
        n = len(questions)
        return [answers[i * n : (i + 1) * n] for i in range(len(slots))]

    def grade(self, passage: Passage, predictions: Sequence[str]) -> list[GradedAnswer]:
        items = [GradeItem(q.question, tuple(q.answers), pred) for q, pred in zip(passage.questions, predictions)]
        verdicts = self.grader.grade(items)
        return [
            GradedAnswer(
                question_id=q.id,
                question=q.question,
                gold=list(q.answers),
                prediction=pred,
                correct=bool(v.correct),
                exact=bool(v.exact),
                f1=float(v.f1),
            )
            for q, pred, v in zip(passage.questions, predictions, verdicts)
        ]

    def adapt_and_answer(
        self, passage: Passage, adaptations: list[Adaptation], seed: int, *, with_base: bool = False
    ) -> tuple[list[list[str]], list[str] | None]:
        """Train every adaptation (in chunks of ``bank.slots``) and return each one's answers.

        With ``with_base`` the base model's answers come out of the first chunk's generation call
        too (rows routed to no adapter), which saves one generation pass per passage.
        """
        slots_available = self.trainer.bank.slots
        answers: list[list[str]] = []
        base: list[str] | None = None
        for start in range(0, len(adaptations), slots_available):
            chunk = adaptations[start : start + slots_available]
            marker = self.settings.loss_after_marker
            jobs = [
                AdaptJob(
                    [TrainSequence.after_marker(t, marker) if marker else TrainSequence(t) for t in a.sequences],
                    seed=seed + a.repeat,
                    loss_on="completion" if marker else None,
                )
                for a in chunk
            ]
            started = time.perf_counter()
            results = self.trainer.adapt(jobs)
            self.timing.train_seconds += time.perf_counter() - started
            for adaptation, result in zip(chunk, results):
                adaptation.losses = result.losses
                adaptation.steps = result.steps
                adaptation.train_tokens = result.train_tokens
                adaptation.processed_tokens = result.processed_tokens
                adaptation.seconds = result.seconds
                self.timing.processed_tokens += result.processed_tokens
            slots: list[int | None] = list(range(len(chunk)))
            started = time.perf_counter()
            if with_base and base is None:
                base, *chunk_answers = self.answer(passage, [None, *slots])
            else:
                chunk_answers = self.answer(passage, slots)
            self.timing.answer_seconds += time.perf_counter() - started
            answers.extend(chunk_answers)
        return answers, base

    def evaluate_passage(
        self,
        passage: Passage,
        *,
        conditions: Sequence[str],
        self_edits: Sequence[str] = (),
        external_edits: Sequence[str] = (),
        baseline_predictions: Sequence[str] | None = None,
        seed: int = 0,
        repeats: int = 1,
    ) -> PassageRecord:
        """All requested conditions for one passage: one :class:`ConditionRun` per adaptation.

        Every adaptation is trained ``repeats`` times with inner-loop seeds ``seed, seed + 1, ...``
        (the reference scores each RL self-edit over 3 seeds). Self-edit and external runs carry
        the self-edit's statistics against the passage (:mod:`seal_pl.knowledge.self_edit_stats`).
        """
        unknown = set(conditions) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"unknown conditions {sorted(unknown)}; valid: {CONDITIONS}")
        self.check_answer_prompts(passage)
        record = PassageRecord(passage_id=passage.id, title=passage.title, conditions={})
        adaptations: list[Adaptation] = []
        for repeat in range(repeats):
            if "passage_only" in conditions:
                sequences, _ = self.training_sequences(passage, None)
                adaptations.append(
                    Adaptation(
                        condition="passage_only",
                        edit_index=0,
                        repeat=repeat,
                        completion="",
                        sequences=sequences,
                        completion_was_empty=True,
                    )
                )
            for condition, edits in (("self_edit", self_edits), ("external", external_edits)):
                if condition in conditions:
                    for index, completion in enumerate(edits):
                        sequences, empty = self.training_sequences(passage, completion)
                        adaptations.append(
                            Adaptation(
                                condition=condition,
                                edit_index=index,
                                repeat=repeat,
                                completion=completion,
                                sequences=sequences,
                                completion_was_empty=empty,
                            )
                        )
        record.truncation = Truncation(
            training_sequences=self.training_truncation(passage, adaptations),
            self_edit_prompt=bool(self_edits) and self.self_edit_prompt_shortened(passage),
        )
        need_base = "no_adaptation" in conditions and baseline_predictions is None
        adapted, base = self.adapt_and_answer(passage, adaptations, seed, with_base=need_base and bool(adaptations))
        if "no_adaptation" in conditions:
            if baseline_predictions is not None:
                base = list(baseline_predictions)
            elif base is None:
                started = time.perf_counter()
                base = self.answer(passage, [None])[0]
                self.timing.answer_seconds += time.perf_counter() - started
            record.conditions["no_adaptation"] = [ConditionRun.of(0, 0, self.grade(passage, base), None)]
        stats_of: dict[str, dict[str, float]] = {}  # per distinct completion (inner seeds repeat it)
        for adaptation, predictions in zip(adaptations, adapted):
            run = ConditionRun.of(
                adaptation.edit_index, adaptation.repeat, self.grade(passage, predictions), adaptation
            )
            if adaptation.condition in ("self_edit", "external"):
                if adaptation.completion not in stats_of:
                    stats_of[adaptation.completion] = self_edit_stats(adaptation.completion, passage.context)
                run.self_edit_stats = stats_of[adaptation.completion]
            record.conditions.setdefault(adaptation.condition, []).append(run)
        return record


def scored_self_edits(record: PassageRecord, *, prompt: Prompt, seed: int) -> list[KnowledgeSelfEdit]:
    """The passage's self-edits with their rewards: the mean adapted accuracy over inner-loop seeds.

    Each also gets its per-seed accuracies, its gain over the passage's no-adaptation accuracy and,
    when the ``passage_only`` condition ran, the gain over that (mean over its seeds).
    """
    baseline_runs = record.conditions.get("no_adaptation", [])
    baseline = baseline_runs[0].accuracy if baseline_runs else None
    passage_runs = record.conditions.get("passage_only", [])
    passage_only = sum(r.accuracy for r in passage_runs) / len(passage_runs) if passage_runs else None
    by_edit: dict[int, list[ConditionRun]] = {}
    for run in record.conditions.get("self_edit", []):
        by_edit.setdefault(run.edit_index, []).append(run)
    scored = []
    for index in sorted(by_edit):
        runs = sorted(by_edit[index], key=lambda r: r.repeat)
        accuracies = [run.accuracy for run in runs]
        reward = sum(accuracies) / len(accuracies)
        scored.append(
            KnowledgeSelfEdit(
                id=f"{record.passage_id}/{index}",
                context_id=record.passage_id,
                passage_id=record.passage_id,
                edit_index=index,
                seed=seed,
                prompt=prompt,
                completion=runs[0].adaptation.completion,
                reward=reward,
                accuracy_per_seed=accuracies,
                baseline_accuracy=baseline,
                gain=None if baseline is None else reward - baseline,
                passage_only_accuracy=passage_only,
                gain_over_passage=None if passage_only is None else reward - passage_only,
                stats=runs[0].self_edit_stats,
            )
        )
    return scored


def prediction_records(record: PassageRecord) -> list[PredictionRecord]:
    """Every answer of every run of the passage, one record each."""
    return [
        PredictionRecord(passage_id=record.passage_id, condition=condition, edit_index=run.edit_index, **asdict(answer))
        for condition, runs in record.conditions.items()
        for run in runs
        for answer in run.questions
    ]


def summarize(records: Sequence[PassageRecord]) -> dict[str, dict]:
    """Per condition: accuracy over all (passage, self-edit, question) triples, plus counts.

    ``accuracy`` pools questions (each question of each run counts once); ``passage_mean`` averages the
    per-passage mean accuracy (the reference's "mean over passages"); ``empty_self_edits`` counts
    adaptations whose completion produced no training sequence of its own.
    """
    table: dict[str, dict] = {}
    for condition in CONDITIONS:
        runs = [(r, run) for r in records for run in r.conditions.get(condition, [])]
        if not runs:
            continue
        n_questions = sum(run.n_questions for _, run in runs)
        n_correct = sum(run.n_correct for _, run in runs)
        per_passage: dict[str, list[float]] = {}
        for r, run in runs:
            per_passage.setdefault(r.passage_id, []).append(run.accuracy)
        passage_means = [sum(v) / len(v) for v in per_passage.values()]
        empty = sum(1 for _, run in runs if run.adaptation and run.adaptation.completion_was_empty)
        table[condition] = {
            "accuracy": n_correct / max(1, n_questions),
            "passage_mean": sum(passage_means) / max(1, len(passage_means)),
            "n_correct": n_correct,
            "n_questions": n_questions,
            "n_passages": len(per_passage),
            "n_runs": len(runs),
            "empty_self_edits": empty if condition in ("self_edit", "external") else None,
        }
    return table


def truncation_summary(records: Sequence[PassageRecord]) -> dict[str, Any]:
    """``results.json``'s ``truncated``: how many passages had training sequences cut to ``max_length``
    or a self-edit prompt built from a beginning of the passage, and which (records' ``truncation``)."""
    cut_training = [(r.passage_id, r.truncation.training_sequences) for r in records if r.truncation.training_sequences]
    cut_prompt = [r.passage_id for r in records if r.truncation.self_edit_prompt]
    ids = sorted({pid for pid, _ in cut_training} | set(cut_prompt))
    return {
        "passages": len(ids),
        "training_passages": len(cut_training),
        "training_sequences": sum(n for _, n in cut_training),
        "self_edit_prompts": len(cut_prompt),
        "passage_ids": ids,
    }


def unique_predictions(predictions: Iterable[PredictionRecord]) -> list[PredictionRecord]:
    """One prediction per (passage, condition, self-edit, question): the first written (a passage
    re-run after a kill mid-write appends its answers again)."""
    seen: set[tuple] = set()
    unique = []
    for prediction in predictions:
        if prediction.key not in seen:
            seen.add(prediction.key)
            unique.append(prediction)
    return unique


def knowledge_results(
    records: Sequence[PassageRecord], *, model: str, n_params: int, wall_seconds: float
) -> dict[str, Any]:
    """``results.json`` of an evaluation: the table, truncations, where the time went, the training
    FLOPs (``n_params``: the frozen base model's parameters) and what the self-edits looked like.

    ``adapt_seconds`` is the wall time of the batched inner loops: adapters trained together share
    one wall time, counted once per batch (``timing.train_seconds``).
    """
    timing = {f.name: 0.0 for f in fields(PassageTiming)}
    for record in records:
        if record.timing is not None:
            for name, value in asdict(record.timing).items():
                timing[name] += value
    train_flops = adapter_training_flops(n_params, int(timing["processed_tokens"]))
    return {
        "experiment": "knowledge_single_passage",
        "model": model,
        "n_passages": len(records),
        "conditions": summarize(records),
        "truncated": truncation_summary(records),
        "wall_seconds_this_invocation": round(wall_seconds, 1),
        "adapt_seconds": round(timing["train_seconds"], 1),
        "timing": {
            **{k: round(v, 1) for k, v in timing.items() if k.endswith("seconds")},
            "processed_tokens": int(timing["processed_tokens"]),
            "n_params": n_params,
            "train_flops": train_flops,
            "train_flops_per_second": train_flops / timing["train_seconds"] if timing["train_seconds"] else None,
        },
        "self_edit_stats": {
            condition: summarize_self_edit_stats(
                run.self_edit_stats
                for r in records
                for run in r.conditions.get(condition, [])
                if run.self_edit_stats is not None
            )
            for condition in ("self_edit", "external")
            if any(condition in r.conditions for r in records)
        },
    }


def format_table(table: dict[str, dict]) -> str:
    """The summary as a fixed-width text table."""
    lines = [f"{'condition':<15} {'accuracy':>9} {'correct':>8} {'questions':>10} {'passages':>9} {'runs':>5}"]
    for condition, row in table.items():
        lines.append(
            f"{condition:<15} {100 * row['accuracy']:>8.1f}% {row['n_correct']:>8} {row['n_questions']:>10} "
            f"{row['n_passages']:>9} {row['n_runs']:>5}"
        )
    return "\n".join(lines)
