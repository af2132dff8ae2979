"""Few-shot ARC with test-time training (TTT): the three evaluation modes of SEAL's ARC domain.

For one ARC task (a source task with one or more test subtasks ``<id>-<k>``) this module runs:

* ``icl`` - the in-context baseline: the base model answers augmented views of each subtask;
* ``fixed`` - TTT with one fixed recipe (default :func:`~seal_pl.arc.self_edit.oracle_config`: every
  augmentation family, loss on output tokens, lr 1e-4, 2 epochs), then the adapted model answers;
* ``self_edit`` - the model writes ``n`` self-edits (JSON training recipes) for the task; each valid
  one drives its own TTT run and its own evaluation. The reward of a (task, self-edit) pair is 1 iff
  the task is solved after TTT with that self-edit; unparseable self-edits and edits over the
  compute cap get reward 0 and a recorded reason. The paper's *success rate* is the mean reward
  over all (task, self-edit) pairs.

TTT data comes from the task's demonstrations only (:func:`~seal_pl.arc.ttt_data.build_ttt_tasks`);
each synthetic task becomes one chat-formatted :class:`~seal_pl.inner.sequences.TrainSequence`
whose loss (strategy ``output_tokens``) covers exactly the assistant answer and the chat
template's end-of-turn tokens, found by rendering the prompt and the full conversation with the
model's own chat template (no hard-coded token ids). Several self-edits train at once in the slots
of one :class:`~seal_pl.inner.lora.AdapterBank`, and every view of every subtask for every trained
adapter is answered in a single batched ``generate`` call whose rows carry their adapter slot.
Answers are decoded, mapped back through the inverse of the view's transform and voted into two
attempts per subtask (pass@2); a task is solved iff all its subtasks are. Voting is the reference
frequency vote (``settings.voting: reference``) or, optionally, ARChitects-style likelihood voting
(``likelihood``): every distinct answer is scored by the adapted model in every view (teacher
forcing, the same adapter slot that generated it) and the two with the highest summed
log-likelihood are the attempts (:mod:`seal_pl.arc.scoring`,
:class:`~seal_pl.pipelines.arc_scoring.TeacherForcedScorer`).

The three modes and the resumable per-task runner over this pipeline are in
:mod:`seal_pl.pipelines.arc_tasks`; every result is a typed record (:mod:`seal_pl.arc.records`).
Plain Python over the shared inner loop and the generator backend; the Lightning module
(:mod:`seal_pl.lightning.arc`) only drives it and writes the records.
"""

from __future__ import annotations

import math
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from seal_pl.arc.grids import Task
from seal_pl.arc.inference import IDENTITY, InferenceView, build_inference_views, map_back
from seal_pl.arc.records import (
    ArcEditRecord,
    Messages,
    SelfEditAttempt,
    SelfEditSample,
    SubtaskPrediction,
    ViewOutput,
)
from seal_pl.arc.scoring import LIKELIHOOD_VIEWS, ScoringPlan, plan_scoring
from seal_pl.arc.self_edit import (
    SelfEditConfig,
    parse_self_edit,
    sample_schema_self_edits,
    self_edit_prompt,
    training_steps,
)
from seal_pl.arc.text import TextRepresenter, decode_prediction, grid_format, task_to_messages
from seal_pl.arc.ttt_data import build_ttt_tasks
from seal_pl.arc.voting import is_solved, vote
from seal_pl.generation.base import GeneratorBackend, SamplingParams
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.sequences import TrainSequence
from seal_pl.inner.trainer import AdaptJob, AdaptResult, InnerLoopConfig, InnerLoopTrainer, check_choice
from seal_pl.pipelines.arc_scoring import ScoreRequest, TeacherForcedScorer

VOTING = ("reference", "likelihood")

SELF_EDIT_SYSTEM_MESSAGE = "You are a helpful assistant that gives the correct output immediately."
"""System message of the self-edit prompt (the reference's ``utils/prompts.py: system_message``)."""

STRATEGY_LOSS_ON = {"output_tokens": "completion", "all_tokens": "all"}
"""Self-edit strategy -> :class:`AdaptJob` ``loss_on``."""

REFERENCE_LORA = LoRASpec(
    r=128, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj", "up_proj"]
)
"""The reference ARC adapter (spec 1.7): r 128, alpha 16, no dropout, q/v/gate/down/up projections."""

REFERENCE_INNER = InnerLoopConfig(
    lr=1e-4,
    epochs=2,
    batch_size=2,
    grad_accum=1,
    schedule="cosine",
    warmup_steps=11,
    loss_on="completion",
    max_length=8192,
    precision="fp32",
)
"""The reference ARC inner loop (spec 1.7): batch 2, cosine, 11 warm-up steps; lr/epochs/loss come
from each self-edit (these are the oracle values, used when a job sets none)."""


@dataclass
class ARCSettings:
    """Everything between a task and its two attempts, except model, LoRA and optimizer settings.

    Reference values (spec 1.5-1.8) are the defaults; the CPU demo config lowers the caps.

    Args:
        grid_format: grid text format (``numpy``: the reference nested brackets; ``digits``).
        leave_n: TTT data - demonstrations held out per synthetic task (reference ``[1, 2]``).
        permute_n: TTT data - recoloured/reordered copies per synthetic task (reference 1).
        max_grid: TTT data - drop augmented tasks with a grid side above this (reference 30).
        max_examples: TTT data - ``Nmax``, cap on synthetic tasks per run (reference 250).
        max_tokens: keep TTT examples (prompt + answer) and inference views (prompt + answer
            budget) strictly shorter than this many tokens (reference 8192). ``None``: no filter.
        data_seed: seed of the TTT-data augmentation, permutation and cap draws.
        cap_steps: compute cap - a self-edit whose ``epochs * n_examples // cap_batch_size``
            exceeds this is not trained (reference 375 at batch 2). ``None`` disables the cap.
        cap_batch_size: batch size the cap counts steps at (reference 2).
        evaluate_capped: evaluate an edit over the cap with the untrained base model (the
            reference's identity adapter). ``False`` (default) gives it reward 0 without evaluation.
        include_n: inference - demonstrations left out per view (reference ``[1]``).
        inference_permute_n: inference - demo reorderings per leave-out variant (reference 2).
        inference_seed: seed of the inference views.
        max_views: at most this many views per subtask (``None`` = all, the reference). When
            cutting, untransformed and geometric views are taken alternately so voting still sees
            both kinds.
        answer_max_new_tokens: generation budget per answer; ``None`` computes it per task from the
            largest demonstration output (see :meth:`ARCPipeline.answer_budget`).
        answer_budget_factor: multiplier on the largest demonstration answer for the automatic budget.
        answer_budget_extra: tokens added to the automatic budget.
        stop_at_end_marker: stop generating at the answer's end marker (``#``).
        voting: how the decoded answers become two attempts. ``reference`` (default): the
            reference frequency vote (:func:`~seal_pl.arc.voting.vote`). ``likelihood``:
            ARChitects-style product of experts - each distinct answer is scored by teacher
            forcing in every scoring view (transformed into the view's frame, same text format and
            end marker, same adapter slot) and ranked by its summed log-probability; costs a
            forward pass over every view's prompt and every (view, candidate) answer, no decoding
            (:mod:`seal_pl.arc.scoring`).
        likelihood_views: views that score in ``likelihood`` voting: ``all`` inference views or
            only the ``geometric`` (transformed) ones (all when there are none).
        likelihood_max_candidates: score only this many most-voted distinct answers (ties:
            first decoded); ``None`` = all of them.
        likelihood_batch_size: completions per scoring forward pass.
        likelihood_max_batch_tokens: optional cap on padded tokens per scoring forward pass.
        likelihood_share_prompt: run each view's prompt once and reuse its key/value cache for all
            candidates (``False``: one full prompt + answer sequence per row).
        self_edit_sampling: self-edit decoding (reference: temperature 0.8, 128 new tokens).
        self_edit_system_message: system message of the self-edit chat prompt (``None``: none).
        max_attempts: samples per self-edit index at most; a self-edit that is still invalid after
            this many is a recorded failure with reward 0 (the reference resamples without bound).
        lr_range: accepted self-edit learning rates (inclusive).
        max_epochs: accepted self-edit epochs are 1..max_epochs.
        save_raw_outputs: keep every view's raw model output in the prediction records.
    """

    grid_format: Literal["numpy", "digits"] = "numpy"
    leave_n: list[int] = field(default_factory=lambda: [1, 2])
    permute_n: int = 1
    max_grid: int = 30
    max_examples: int | None = 250
    max_tokens: int | None = 8192
    data_seed: int = 0
    cap_steps: int | None = 375
    cap_batch_size: int = 2
    evaluate_capped: bool = False
    include_n: list[int] = field(default_factory=lambda: [1])
    inference_permute_n: int = 2
    inference_seed: int = 0
    max_views: int | None = None
    answer_max_new_tokens: int | None = None
    answer_budget_factor: float = 1.25
    answer_budget_extra: int = 8
    stop_at_end_marker: bool = True
    voting: Literal["reference", "likelihood"] = "reference"
    likelihood_views: Literal["all", "geometric"] = "all"
    likelihood_max_candidates: int | None = None
    likelihood_batch_size: int = 16
    likelihood_max_batch_tokens: int | None = None
    likelihood_share_prompt: bool = True
    self_edit_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(max_new_tokens=128, temperature=0.8, top_p=1.0)
    )
    self_edit_system_message: str | None = SELF_EDIT_SYSTEM_MESSAGE
    max_attempts: int = 3
    lr_range: list[float] = field(default_factory=lambda: [1e-6, 1e-2])
    max_epochs: int = 10
    save_raw_outputs: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_views is not None and self.max_views < 1:
            raise ValueError(f"max_views must be >= 1 or null, got {self.max_views}")
        if len(self.lr_range) != 2 or self.lr_range[0] > self.lr_range[1]:
            raise ValueError(f"lr_range must be [low, high] with low <= high, got {self.lr_range}")
        grid_format(self.grid_format)  # validates the name
        check_choice(self.voting, "voting", VOTING)
        check_choice(self.likelihood_views, "likelihood_views", LIKELIHOOD_VIEWS)
        if self.likelihood_max_candidates is not None and self.likelihood_max_candidates < 1:
            raise ValueError(f"likelihood_max_candidates must be >= 1 or null, got {self.likelihood_max_candidates}")
        if self.likelihood_batch_size < 1:
            raise ValueError(f"likelihood_batch_size must be >= 1, got {self.likelihood_batch_size}")


# ------------------------------------------------------------------------------------------------
# Records


Outcome = ArcEditRecord
"""The evaluation of one (task, self-edit) pair - or of the task in ``icl``/``fixed`` mode (the
record :class:`~seal_pl.arc.records.ArcEditRecord`, filled in as the pair runs)."""


@dataclass
class TTTPlan:
    """A TTT run prepared for one (task, config): its sequences, or why it will not be trained."""

    config: SelfEditConfig
    sequences: list[TrainSequence]
    n_examples: int
    planned_steps: int
    skipped: str | None = None


def task_seed(seed: int, task_id: str) -> int:
    """A per-task seed that does not depend on the task's position (ranks, limits, resumes)."""
    return seed + zlib.crc32(task_id.encode("utf-8")) % 1_000_003


def interleave_views(views: Sequence[InferenceView], max_views: int | None) -> list[InferenceView]:
    """At most ``max_views`` views: untransformed and geometric views alternately, each in order."""
    if max_views is None or len(views) <= max_views:
        return list(views)
    plain = [view for view in views if view.inverse_name == IDENTITY]
    transformed = [view for view in views if view.inverse_name != IDENTITY]
    chosen: list[InferenceView] = []
    while len(chosen) < max_views and (plain or transformed):
        for pool in (plain, transformed):
            if pool and len(chosen) < max_views:
                chosen.append(pool.pop(0))
    return chosen


def _grid_list(grid) -> list[list[int]]:
    return [[int(cell) for cell in row] for row in grid.tolist()]


# ------------------------------------------------------------------------------------------------
# The pipeline


class ARCPipeline:
    """TTT, augmented inference and self-edits for ARC tasks.

    Args:
        tokenizer: the model's tokenizer (chat template, token counts).
        generator: a backend bound to the same model, tokenizer and adapter bank.
        trainer: the shared inner loop (``None`` is enough for ``icl``).
        settings: data, inference and self-edit settings.
        scorer: for ``voting: likelihood`` (and :class:`SchemaSelfEdits`), anything with
            ``score([ScoreRequest, ...]) -> [float]``; default: a :class:`TeacherForcedScorer` bound
            to the generator's model, tokenizer and adapter bank (built on first use).
        writer: how self-edits are written (default :class:`FreeTextSelfEdits`).
    """

    def __init__(
        self,
        tokenizer,
        generator: GeneratorBackend,
        trainer: InnerLoopTrainer | None = None,
        settings: ARCSettings | None = None,
        scorer=None,
        writer: SelfEditWriter | None = None,
    ):
        self.tokenizer = tokenizer
        self.writer = writer or FreeTextSelfEdits()
        self.generator = generator
        self.trainer = trainer
        self.settings = settings or ARCSettings()
        self.scorer = scorer
        self.representer = TextRepresenter(grid_format=grid_format(self.settings.grid_format))

    # ------------------------------------------------------------------------------ formatting
    def messages(self, task: Task) -> tuple[list[dict[str, str]], str | None]:
        """``([system, user], target)`` for a task (target ``None`` when the test output is unknown)."""
        return task_to_messages(task, self.representer)

    def render(self, task: Task) -> tuple[str, str | None]:
        """The chat-template text of the prompt (with generation prompt) and of the full conversation."""
        messages, target = self.messages(task)
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if target is None:
            return prompt, None
        full = self.tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": target}], tokenize=False)
        return prompt, full

    def train_sequence(self, task: Task) -> TrainSequence:
        """The task as one chat training text whose completion is the assistant answer.

        ``completion_start`` is where the assistant's answer begins: the length of the rendered
        prompt (with generation prompt) when the full conversation extends it, else the last
        occurrence of the answer text in the full conversation.
        """
        prompt, full = self.render(task)
        if full is None:
            raise ValueError(f"task {task.task_id}: a training example needs a test output")
        if full.startswith(prompt):
            start = len(prompt)
        else:
            target = self.messages(task)[1]
            start = full.rfind(target)
            if start < 0:
                raise ValueError(f"task {task.task_id}: cannot locate the answer in the chat-template text")
        return TrainSequence(full, completion_start=start, templated=True)

    def count_tokens(self, task: Task) -> int:
        """Tokens of the full conversation (prompt + answer) of a task with a known test output."""
        prompt, full = self.render(task)
        return len(self.tokenizer(full if full is not None else prompt, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, task: Task) -> int:
        """Tokens of the prompt (with generation prompt) only."""
        return len(self.tokenizer(self.render(task)[0], add_special_tokens=False)["input_ids"])

    def answer_budget(self, task: Task) -> int:
        """``max_new_tokens`` for the answers of ``task``.

        The fixed ``answer_max_new_tokens`` when set, else ``ceil(factor * n) + extra`` where ``n``
        is the token count of the largest demonstration answer in either orientation (views may be
        transposed or rotated). The test output is never looked at.
        """
        s = self.settings
        if s.answer_max_new_tokens is not None:
            return s.answer_max_new_tokens
        longest = 0
        for example in task.train:
            for grid in (example.output, example.output.T):
                text = self.representer.grid_format.grid_to_text(grid) + self.representer.end_marker
                longest = max(longest, len(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
        return math.ceil(s.answer_budget_factor * longest) + s.answer_budget_extra

    # ------------------------------------------------------------------------------------- TTT
    def ttt_tasks(self, task: Task, config: SelfEditConfig, seed: int | None = None) -> list[Task]:
        """Synthetic training tasks for ``task`` under ``config``'s augmentation families."""
        s = self.settings
        return build_ttt_tasks(
            task,
            config.augmenters(),
            leave_n=s.leave_n,
            permute_n=s.permute_n,
            max_grid=s.max_grid,
            count_tokens=self.count_tokens if s.max_tokens is not None else None,
            max_tokens=s.max_tokens,
            max_examples=s.max_examples,
            seed=s.data_seed if seed is None else seed,
        )

    def plan(self, task: Task, config: SelfEditConfig, tasks: Sequence[Task] | None = None) -> TTTPlan:
        """Build the training set of one (task, config) and apply the compute cap.

        ``tasks`` may pass an already built training set for the config's augmentation families.
        """
        s = self.settings
        tasks = self.ttt_tasks(task, config) if tasks is None else list(tasks)
        steps = training_steps(config, len(tasks), s.cap_batch_size)
        if s.cap_steps is not None and steps > s.cap_steps:
            reason = (
                f"compute cap: {config.epochs} epochs x {len(tasks)} examples // batch {s.cap_batch_size} = "
                f"{steps} steps > {s.cap_steps}"
            )
            return TTTPlan(config, [], len(tasks), steps, skipped=reason)
        if not tasks:
            return TTTPlan(config, [], 0, 0, skipped="no training examples (all filtered out)")
        return TTTPlan(config, [self.train_sequence(t) for t in tasks], len(tasks), steps)

    def job(self, plan: TTTPlan, seed: int) -> AdaptJob:
        """The inner-loop job of a plan: the config's lr, epochs and loss strategy."""
        config = plan.config
        return AdaptJob(
            sequences=plan.sequences,
            lr=config.learning_rate,
            epochs=config.epochs,
            loss_on=STRATEGY_LOSS_ON[config.strategy],
            seed=seed,
        )

    def train(self, plans: Sequence[TTTPlan], seeds: Sequence[int]) -> list[AdaptResult]:
        """Train up to ``bank.slots`` plans together (plan ``i`` -> slot ``i``), e.g. several
        (task, config) pairs; the adapters stay in their slots for :meth:`infer_groups`."""
        if self.trainer is None:
            raise RuntimeError("TTT needs an InnerLoopTrainer")
        if len(plans) > self.trainer.bank.slots:
            raise ValueError(f"{len(plans)} plans for {self.trainer.bank.slots} adapter slots")
        jobs = [self.job(plan, seed) for plan, seed in zip(plans, seeds, strict=True)]
        return self.trainer.adapt(jobs, slots=list(range(len(jobs))))

    # ------------------------------------------------------------------------------- inference
    def views(self, subtask: Task, budget: int) -> list[InferenceView]:
        """The inference views of a subtask that fit ``max_tokens`` with ``budget`` answer tokens."""
        s = self.settings
        count = None
        if s.max_tokens is not None:

            def count(view_task: Task) -> int:
                return self.prompt_tokens(view_task) + budget

        views = build_inference_views(
            subtask,
            include_n=s.include_n,
            permute_n=s.inference_permute_n,
            seed=s.inference_seed,
            count_tokens=count,
            max_tokens=s.max_tokens,
        )
        return interleave_views(views, s.max_views)

    def answer_params(self, budget: int) -> SamplingParams:
        stop = [self.representer.end_marker] if self.settings.stop_at_end_marker and self.representer.end_marker else []
        return SamplingParams(max_new_tokens=budget, temperature=0.0, stop=stop)

    def infer(self, subtasks: Sequence[Task], slots: Sequence[int | None]) -> list[list[SubtaskPrediction]]:
        """Two attempts per subtask, once per adapter slot (``None`` = base model).

        Every view of every subtask for every slot goes into one ``generate`` call. Returns
        ``results[slot_index][subtask_index]`` predictions (attempts as nested lists, ``solved`` =
        pass@2, ``None`` when the subtask's answer is unknown).
        """
        return self.infer_groups([(subtasks, slot) for slot in slots])

    def infer_groups(self, groups: Sequence[tuple[Sequence[Task], int | None]]) -> list[list[SubtaskPrediction]]:
        """Like :meth:`infer` for ``(subtasks, slot)`` groups: e.g. several tasks, each with its own
        adapter, answered in one ``generate`` call whose rows carry their slot."""
        subtasks_all = [subtask for subtasks, _ in groups for subtask in subtasks]
        if not subtasks_all:
            return [[] for _ in groups]
        budget = max(self.answer_budget(subtask) for subtask in subtasks_all)
        views_cache: dict[int, list[InferenceView]] = {}

        def views_of(subtask: Task) -> list[InferenceView]:
            if id(subtask) not in views_cache:
                views_cache[id(subtask)] = self.views(subtask, budget)
            return views_cache[id(subtask)]

        prompts: list[list[dict[str, str]]] = []
        row_slots: list[int] = []
        for subtasks, slot in groups:
            for subtask in subtasks:
                for view in views_of(subtask):
                    prompts.append(self.messages(view.task)[0])
                    row_slots.append(-1 if slot is None else slot)
        use_adapters = any(slot is not None for _, slot in groups)
        outputs = (
            self.generator.generate(
                prompts, self.answer_params(budget), adapter_slots=row_slots if use_adapters else None
            )
            if prompts
            else []
        )
        results: list[list[SubtaskPrediction]] = []
        pending: list[tuple[SubtaskPrediction, Task, list[InferenceView], ScoringPlan, int | None]] = []
        cursor = 0
        for subtasks, slot in groups:
            per_group = []
            for subtask in subtasks:
                subtask_views = views_of(subtask)
                texts = outputs[cursor : cursor + len(subtask_views)]
                cursor += len(subtask_views)
                if self.settings.voting == "likelihood":
                    predictions, view_records = self.decode(subtask_views, texts)
                    record = self._record(subtask, subtask_views, predictions, view_records, budget)
                    plan = plan_scoring(
                        subtask_views,
                        predictions,
                        self.representer,
                        which=self.settings.likelihood_views,
                        max_candidates=self.settings.likelihood_max_candidates,
                    )
                    pending.append((record, subtask, subtask_views, plan, slot))
                else:
                    record = self.score(subtask, subtask_views, texts, budget)
                per_group.append(record)
            results.append(per_group)
        if pending:
            self._likelihood_vote(pending)
        return results

    def decode(
        self, views: Sequence[InferenceView], texts: Sequence[str]
    ) -> tuple[list[tuple[Any, str]], list[ViewOutput]]:
        """Decoded answers mapped back (``(grid, inverse name)``) and one output record per view."""
        predictions = []
        outputs = []
        for view, text in zip(views, texts):
            grid = decode_prediction(text, self.representer)
            error = None
            if grid is None:
                error = "unparseable"
            else:
                try:
                    grid = map_back(grid, view.inverse_name)
                except ValueError as exc:
                    grid, error = None, f"map_back failed: {exc}"
            if grid is not None:
                predictions.append((grid, view.inverse_name))
            output = text if self.settings.save_raw_outputs else None
            outputs.append(ViewOutput(view.inverse_name, grid is not None, error, output))
        return predictions, outputs

    def _record(self, subtask: Task, views, predictions, view_outputs, budget: int) -> SubtaskPrediction:
        """The prediction with the reference vote's attempts (likelihood voting replaces them)."""
        attempt_1, attempt_2 = vote(predictions)
        record = SubtaskPrediction(
            subtask_id=subtask.task_id,
            attempts=[_grid_list(attempt_1), _grid_list(attempt_2)],
            solved=None,
            n_views=len(views),
            n_decoded=len(predictions),
            max_new_tokens=budget,
            voting=self.settings.voting,
            views=view_outputs,
        )
        _set_verdict(record, subtask)
        return record

    def score(
        self, subtask: Task, views: Sequence[InferenceView], texts: Sequence[str], budget: int
    ) -> SubtaskPrediction:
        """Decode, map back and vote (reference voting) the answers of one subtask's views."""
        predictions, view_records = self.decode(views, texts)
        return self._record(subtask, views, predictions, view_records, budget)

    def likelihood_scorer(self):
        """The scorer of ``voting: likelihood`` and :class:`SchemaSelfEdits` (a :class:`TeacherForcedScorer`
        on the generator's model)."""
        if self.scorer is None:
            model = getattr(self.generator, "model", None)
            if model is None:
                raise RuntimeError(
                    "voting 'likelihood' and SchemaSelfEdits score text with the model: bind the generator to a model "
                    "or pass ARCPipeline(scorer=...)"
                )
            s = self.settings
            self.scorer = TeacherForcedScorer(
                batch_size=s.likelihood_batch_size,
                max_batch_tokens=s.likelihood_max_batch_tokens,
                precision=getattr(self.generator, "precision", "fp32"),
                share_prompt=s.likelihood_share_prompt,
            ).bind(model, self.tokenizer, getattr(self.generator, "bank", None))
        return self.scorer

    def _likelihood_vote(self, pending) -> None:
        """Score every planned (view, candidate) row of all subtasks and slots in one scorer call,
        then replace each record's attempts by the two most likely candidates."""
        requests: list[ScoreRequest] = []
        for _, _, views, plan, slot in pending:
            prompts = {}
            for row in plan.rows:
                if row.view_index not in prompts:
                    prompts[row.view_index] = self.messages(views[row.view_index].task)[0]
                requests.append(ScoreRequest(prompts[row.view_index], row.completion, slot))
        started = time.perf_counter()
        scores = list(self.likelihood_scorer().score(requests)) if requests else []
        seconds = time.perf_counter() - started
        cursor = 0
        for record, subtask, views, plan, _ in pending:
            plan.apply(scores[cursor : cursor + len(plan.rows)])
            cursor += len(plan.rows)
            record.reference_attempts, record.reference_solved = record.attempts, record.solved
            attempt_1, attempt_2 = plan.attempts()
            record.attempts = [_grid_list(attempt_1), _grid_list(attempt_2)]
            _set_verdict(record, subtask)
            record.likelihood = plan.to_record(views)
            record.likelihood.call_rows, record.likelihood.call_seconds = len(requests), round(seconds, 3)

    # ------------------------------------------------------------------------------- self-edits
    def self_edit_messages(self, task: Task) -> list[dict[str, str]]:
        """The chat prompt asking for a self-edit (demonstrations only; the test input is not shown)."""
        messages = []
        if self.settings.self_edit_system_message:
            messages.append({"role": "system", "content": self.settings.self_edit_system_message})
        messages.append({"role": "user", "content": self_edit_prompt(task)})
        return messages

    def sample_self_edits(self, task: Task, n: int | Sequence[int], seed: int) -> list[SelfEditSample]:
        """Self-edits for a task: ``n`` of them, or the given edit indices, written by ``writer``."""
        indices = list(range(n)) if isinstance(n, int) else list(n)
        return self.writer.write(self, task, indices, seed)

    # ------------------------------------------------------------------------------- evaluation
    def run_icl(self, task_id: str, subtasks: Sequence[Task]) -> Outcome:
        """The in-context baseline for one task: base model, augmented inference, voting."""
        started = time.perf_counter()
        predictions = self.infer(subtasks, [None])[0]
        outcome = Outcome(task_id, 0, "icl", subtasks=predictions)
        outcome.infer_seconds = time.perf_counter() - started
        _finalize(outcome)
        return outcome

    def run_configs(
        self,
        task_id: str,
        subtasks: Sequence[Task],
        edits: Sequence[SelfEditSample],
        *,
        mode: str,
        seed: int,
        prompt: Messages | None = None,
        on_outcome=None,
    ) -> list[Outcome]:
        """TTT + evaluation for each self-edit of a task (valid ones; the rest get reward 0).

        Training data comes from the demonstrations, shared by all subtasks of the task, so one
        adapter per self-edit answers every subtask. Trainable edits run in chunks of
        ``bank.slots``: the chunk trains together, then all views x subtasks x adapters are
        answered in one generate call. ``on_outcome(outcome)`` is called as each one is final.
        ``mode`` labels the records; with the self-edit ``prompt`` (``self_edit`` mode) each record
        carries it and the edit's completion, so solved pairs can go straight into ReST-EM.
        """
        if self.trainer is None:
            raise RuntimeError("TTT needs an InnerLoopTrainer")
        reference = subtasks[0]
        outcomes: list[Outcome] = []
        trainable: list[tuple[Outcome, TTTPlan]] = []
        untrained: list[Outcome] = []
        data_cache: dict[tuple[bool, ...], list[Task]] = {}  # edits with the same families share data

        def emit(outcome: Outcome) -> None:
            _finalize(outcome)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        for edit in edits:
            outcome = Outcome(
                task_id,
                edit.edit_index,
                mode,
                config=None if edit.config is None else edit.config.to_dict(),
                prompt=prompt,
                completion=None if prompt is None else edit.completion,
                valid=edit.valid,
                reason=edit.reason,
            )
            if edit.config is None:
                outcome.skipped = "invalid self-edit"
                outcome.solved, outcome.reward = False, 0
                emit(outcome)
                continue
            families = (edit.config.basic, edit.config.size, edit.config.chain, edit.config.repeat)
            if families not in data_cache:
                data_cache[families] = self.ttt_tasks(reference, edit.config)
            plan = self.plan(reference, edit.config, data_cache[families])
            outcome.n_train_examples, outcome.planned_steps = plan.n_examples, plan.planned_steps
            if plan.skipped is not None:
                outcome.skipped = plan.skipped
                if self.settings.evaluate_capped:
                    untrained.append(outcome)
                else:
                    outcome.solved, outcome.reward = False, 0
                    emit(outcome)
                continue
            trainable.append((outcome, plan))

        if untrained:
            started = time.perf_counter()
            base = self.infer(subtasks, [None])[0]
            seconds = time.perf_counter() - started
            for outcome in untrained:
                outcome.subtasks, outcome.infer_seconds = base, seconds
                emit(outcome)

        width = self.trainer.bank.slots
        for start in range(0, len(trainable), width):
            chunk = trainable[start : start + width]
            results = self.train([plan for _, plan in chunk], [seed + outcome.edit_index for outcome, _ in chunk])
            for (outcome, _), result in zip(chunk, results):
                outcome.trained = True
                outcome.losses = [float(loss) for loss in result.losses]
                outcome.steps = result.steps
                outcome.train_tokens = result.train_tokens
                outcome.train_seconds = result.seconds
            started = time.perf_counter()
            predictions = self.infer(subtasks, list(range(len(chunk))))
            seconds = time.perf_counter() - started
            for (outcome, _), per_slot in zip(chunk, predictions):
                outcome.subtasks, outcome.infer_seconds = per_slot, seconds
                emit(outcome)
        return sorted(outcomes, key=lambda outcome: outcome.edit_index)


# ------------------------------------------------------------------------------------------------
# How self-edits are written


class SelfEditWriter(ABC):
    """Writes a task's self-edits (chosen in config by ``class_path``)."""

    @abstractmethod
    def write(self, pipeline: ARCPipeline, task: Task, indices: list[int], seed: int) -> list[SelfEditSample]:
        """One :class:`SelfEditSample` per index, in order; ``seed`` is the task's seed."""


class FreeTextSelfEdits(SelfEditWriter):
    """The reference: the model writes the JSON freely; a reply that does not parse is resampled.

    Each index is sampled up to ``settings.max_attempts`` times with ``settings.self_edit_sampling``.
    Every round samples all indices still lacking a valid config in one batched call (seed
    ``seed + 1000 * round``). Every sample and its parse outcome are kept in ``attempts``; an index
    still invalid after the last round keeps its last completion and rejection reason (reward 0).
    """

    def write(self, pipeline: ARCPipeline, task: Task, indices: list[int], seed: int) -> list[SelfEditSample]:
        s = pipeline.settings
        samples = {k: SelfEditSample(k, "", None, "not sampled") for k in indices}
        pending = list(indices)
        prompt = pipeline.self_edit_messages(task)
        for attempt in range(s.max_attempts):
            if not pending:
                break
            params = SamplingParams(**{**asdict(s.self_edit_sampling), "seed": seed + 1000 * attempt})
            outputs = pipeline.generator.generate([prompt] * len(pending), params)
            still = []
            for k, text in zip(pending, outputs):
                parsed = parse_self_edit(text, lr_range=tuple(s.lr_range), max_epochs=s.max_epochs)
                sample = samples[k]
                sample.attempts.append(SelfEditAttempt(text, parsed.ok, parsed.error))
                sample.completion, sample.config, sample.reason = text, parsed.config, parsed.error
                if not parsed.ok:
                    still.append(k)
            pending = still
        return [samples[k] for k in indices]


class SchemaSelfEdits(SelfEditWriter):
    """Beyond the reference: the model picks every field's value among allowed options, by likelihood.

    The JSON layout is fixed; at each field (four families, strategy, learning rate, epochs) the
    policy scores every option after the text so far (teacher forcing, one batched call per field
    for all indices) and one is drawn from ``softmax(log p / temperature)``. Every self-edit is
    valid, so a small model that never writes parseable JSON still expresses its preferences, and
    ReST-EM's SFT on the kept JSON texts shifts them. Index ``k`` uses seed ``seed + k``.

    Args:
        lr_choices: learning rates on offer (must lie in ``settings.lr_range``).
        epoch_choices: epoch counts on offer (1..``settings.max_epochs``).
        temperature: sampling temperature over the options (0 = most likely option).
    """

    def __init__(
        self,
        lr_choices: list[float] | None = None,
        epoch_choices: list[int] | None = None,
        temperature: float = 1.0,
    ):
        self.lr_choices = list(lr_choices or [1e-5, 5e-5, 1e-4, 3e-4, 1e-3])
        self.epoch_choices = list(epoch_choices or [1, 2, 3, 4, 5])
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.temperature = temperature

    def write(self, pipeline: ARCPipeline, task: Task, indices: list[int], seed: int) -> list[SelfEditSample]:
        s = pipeline.settings
        low, high = s.lr_range
        if any(not low <= lr <= high for lr in self.lr_choices):
            raise ValueError(
                f"SchemaSelfEdits: lr_choices {self.lr_choices} must lie in settings.lr_range {s.lr_range}"
            )
        if any(not 1 <= e <= s.max_epochs for e in self.epoch_choices):
            raise ValueError(f"SchemaSelfEdits: epoch_choices {self.epoch_choices} must lie in 1..{s.max_epochs}")
        scorer = pipeline.likelihood_scorer()
        prompt = pipeline.self_edit_messages(task)

        def score(prefixes, options):
            requests = [
                ScoreRequest(prompt, prefix + option) for prefix, opts in zip(prefixes, options) for option in opts
            ]
            flat = scorer.score(requests)
            out, cursor = [], 0
            for opts in options:
                out.append(list(flat[cursor : cursor + len(opts)]))
                cursor += len(opts)
            return out

        written = sample_schema_self_edits(
            score, len(indices), [seed + k for k in indices], self.lr_choices, self.epoch_choices, self.temperature
        )
        samples = []
        for k, (config, text, probabilities) in zip(indices, written):
            attempt = SelfEditAttempt(text, True, None, option_probabilities=probabilities)
            samples.append(SelfEditSample(k, text, config, None, [attempt]))
        return samples


def _set_verdict(record: SubtaskPrediction, subtask: Task) -> None:
    """Pass@2 of the prediction's attempts (``None`` when the subtask's answer is unknown)."""
    truth = subtask.test.output
    record.solved = None if truth is None else bool(is_solved(record.attempts, truth))


def _finalize(outcome: Outcome) -> None:
    """Task solved iff every subtask is (``None`` when an answer is unknown); reward = solved."""
    if not outcome.subtasks:
        if outcome.reward is None or outcome.solved is None:
            outcome.solved, outcome.reward = False, 0
        return
    verdicts = [subtask.solved for subtask in outcome.subtasks]
    if any(verdict is None for verdict in verdicts):
        outcome.solved, outcome.reward = None, None
    else:
        outcome.solved = all(verdicts)
        outcome.reward = int(outcome.solved)


def fixed_edit(config: SelfEditConfig) -> SelfEditSample:
    """A fixed recipe wrapped as the single "self-edit" of ``fixed`` mode."""
    return SelfEditSample(0, "", config, None)
