"""The one inner loop: fit fresh LoRA adapters on self-edit data, several at once.

Both domains call :meth:`InnerLoopTrainer.adapt` with a list of :class:`AdaptJob` (one per self-edit).
Jobs are assigned to adapter slots of an :class:`~seal_pl.inner.lora.AdapterBank`; every slot is
reset to the same initial tensors and gets its own AdamW parameter group, learning rate, schedule,
epoch count and loss normalisation. At optimizer step ``t`` every job still running contributes its
``t``-th step's micro-batches to one joint batch whose rows carry their slot index, so K adapters
cost one forward/backward pass. By default the step's sequences are packed end to end into a few
rows (each sequence attends only to itself, each token routes to its own job's adapter), so almost
no compute goes to padding. Because the slots share no parameters, the summed loss gives each
adapter exactly the gradient it would get alone; gradient clipping is applied per adapter, and a job
that has finished is left out of the optimizer step. With one job this is ordinary LoRA training.

Plain PyTorch: no Lightning here, so it is unit-tested in isolation and reused by every stage.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seal_pl.errors import OptionError, check_choice
from seal_pl.inner.lora import AdapterBank
from seal_pl.inner.sequences import (
    IGNORE_INDEX,
    TokenizedSequence,
    TrainSequence,
    balanced_bins,
    collate,
    collate_packed,
    tokenize_sequence,
)
from seal_pl.models.heads import decoder_and_head
from seal_pl.models.loading import Precision
from seal_pl.models.rng import seeded
from seal_pl.models.split import lower_states, split_matches, splittable, upper_forward

Schedule = Literal["linear", "cosine", "constant"]
LossOn = Literal["all", "completion"]
Padding = Literal["packed", "dynamic", "max_length"]
CHOICES = {
    name: get_args(kind)
    for name, kind in (("schedule", Schedule), ("loss_on", LossOn), ("padding", Padding), ("precision", Precision))
}


def check_positive(value: float, option: str, *, allow_zero: bool = False) -> None:
    """Refuse a NaN, infinite, negative (or, unless ``allow_zero``, zero) number, naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OptionError(f"{option} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise OptionError(f"{option} must be {bound}, got {value!r}")


def check_fraction(value: float, option: str) -> None:
    """Refuse a value outside [0, 1) (a fraction of the optimizer steps), naming ``option``."""
    check_positive(value, option, allow_zero=True)
    if value >= 1:
        raise OptionError(f"{option} must be in [0, 1) (a fraction of the steps), got {value!r}")


def check_optimizer_options(lr: float, weight_decay: float, schedule: str, warmup_ratio: float) -> None:
    """Refuse options of :func:`scheduled_adamw` that train nothing, diverge or name no schedule."""
    check_positive(lr, "lr")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    check_choice(schedule, "schedule", CHOICES["schedule"])
    check_fraction(warmup_ratio, "warmup_ratio")


def check_count(value: int, option: str, *, minimum: int) -> None:
    """Refuse a non-integer count, or one below ``minimum``, naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{option} must be an integer >= {minimum}, got {value!r}")


@dataclass
class InnerLoopConfig:
    """Hyper-parameters of one adaptation (a self-edit may override lr, epochs and loss_on).

    Args:
        lr: peak learning rate (AdamW).
        epochs: passes over the self-edit's sequences.
        batch_size: sequences per micro-batch of one adapter.
        grad_accum: micro-batches per optimizer step.
        schedule: ``linear`` (decay to 0, the Hugging Face Trainer default), ``cosine`` or ``constant``.
        warmup_steps: linear warm-up steps (the larger of this and ``warmup_ratio`` wins).
        warmup_ratio: warm-up as a fraction of the job's total steps.
        weight_decay: AdamW weight decay.
        max_grad_norm: per-adapter gradient clipping (0 disables).
        loss_on: ``all`` tokens, or only the ``completion`` part of each sequence.
        padding: ``packed`` (sequences of a step packed end to end into rows of ``pack_length``
            tokens, each attending only to itself: no padding waste), ``dynamic`` (pad to the longest
            row) or ``max_length`` (pad to ``pad_to``, the reference).
        pad_to: width for ``max_length`` padding (reference: 2048).
        pack_length: row width for ``packed`` (raised to the step's longest sequence). Attention is
            computed over the whole row, so shorter rows waste less on masked-out blocks.
        loss_on_padding: keep pad tokens in the loss (reference quirk; needs ``max_length`` or
            ``dynamic`` padding).
        max_length: truncate sequences to this many tokens.
        append_eos: add the EOS token after every sequence.
        shuffle: reshuffle sequences each epoch (seeded per job).
        precision: ``fp32``, or ``bf16`` autocast with fp32 adapter (master) weights.
        seed: default job seed (data order, dropout).
        max_batch_tokens: padded tokens per forward pass; the rows of an optimizer step (all jobs,
            all micro-batches) are sorted by length and split to fit (does not change the result).
            The reference path (``loss_on_padding``) keeps its micro-batches' loss normalisation and
            runs each in row slices within the budget.
        loss_chunk_tokens: the vocabulary projection and loss run over at most this many tokens at
            once, each slice's logits recomputed in the backward pass (a 7B model's 152k-word
            vocabulary in fp32 is 0.6 MB per token); 0: all tokens of a forward at once.
        gradient_checkpointing: recompute the decoder layers' activations in the backward pass
            (less memory for long sequences or many slots, about a third more compute; same
            gradients). The backward pass runs under the adapter routing, so the recomputation
            sees the adapters.
        reuse_frozen_blocks: with ``packed`` padding and adapters only on the upper blocks
            (``lora.layers``), run the blocks below the lowest adapter once per adaptation and start
            every step from their cached outputs, instead of running the whole decoder every step
            (same losses up to float rounding; checked on the model once, else the whole decoder runs).
    """

    lr: PositiveFloat = 3e-4
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 1
    grad_accum: PositiveInt = 1
    schedule: Schedule = "linear"
    warmup_steps: NonNegativeInt = 0
    warmup_ratio: NonNegativeFloat = 0.0
    weight_decay: NonNegativeFloat = 0.0
    max_grad_norm: NonNegativeFloat = 1.0
    loss_on: LossOn = "all"
    padding: Padding = "packed"
    pad_to: PositiveInt = 2048
    pack_length: PositiveInt = 256
    loss_on_padding: bool = False
    max_length: PositiveInt = 2048
    append_eos: bool = False
    shuffle: bool = True
    precision: Precision = "fp32"
    seed: int = 0
    max_batch_tokens: PositiveInt = 4096
    loss_chunk_tokens: NonNegativeInt = 8192
    gradient_checkpointing: bool = False
    reuse_frozen_blocks: bool = True

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            check_choice(getattr(self, name), f"inner.{name}", allowed)
        check_positive(self.lr, "inner.lr")
        for name in ("epochs", "batch_size", "grad_accum", "pad_to", "pack_length", "max_length", "max_batch_tokens"):
            check_count(getattr(self, name), f"inner.{name}", minimum=1)
        check_count(self.warmup_steps, "inner.warmup_steps", minimum=0)
        check_count(self.loss_chunk_tokens, "inner.loss_chunk_tokens", minimum=0)
        for name in ("weight_decay", "max_grad_norm"):
            check_positive(getattr(self, name), f"inner.{name}", allow_zero=True)
        check_fraction(self.warmup_ratio, "inner.warmup_ratio")
        if self.padding == "packed" and self.loss_on_padding:
            raise OptionError(
                "inner.loss_on_padding needs padded batches: set inner.padding to max_length (or dynamic)"
            )


@dataclass
class AdaptJob:
    """One self-edit to learn: its sequences and optional per-job overrides."""

    sequences: list[TrainSequence]
    lr: float | None = None
    epochs: int | None = None
    loss_on: str | None = None
    seed: int | None = None


def check_job(job: AdaptJob, index: int = 0) -> None:
    """Refuse a job whose overrides would train nothing or diverge (lr <= 0 or NaN, epochs < 1).

    Self-edits that ask for such values are turned into recorded failures by their parsers; a job
    that still carries one is a bug upstream, not something to train silently.
    """
    if job.lr is not None:
        check_positive(job.lr, f"job {index}: lr")
    if job.epochs is not None:
        check_count(job.epochs, f"job {index}: epochs", minimum=1)
    if job.loss_on is not None:
        check_choice(job.loss_on, f"job {index}: loss_on", CHOICES["loss_on"])


@dataclass
class AdaptResult:
    """What one adaptation did: per-step losses, counts and time (shared wall time when batched)."""

    slot: int
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    train_tokens: int = 0
    processed_tokens: int = 0
    seconds: float = 0.0


def _chunks(order: list[int], widths: Sequence[int], max_tokens: int) -> Iterator[list[int]]:
    """Cut ``order`` (indices sorted by decreasing width) into runs whose padded size
    (rows x first row's width) stays within ``max_tokens``; a row wider than that runs alone."""
    chunk: list[int] = []
    for index in order:
        if chunk and widths[chunk[0]] * (len(chunk) + 1) > max_tokens:
            yield chunk
            chunk = []
        chunk.append(index)
    if chunk:
        yield chunk


def _head_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``head(hidden)`` (fp32 logits) against ``targets``, one value per row."""
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def lr_lambda(schedule: str, total_steps: int, warmup: int):
    """The ``step -> learning-rate factor`` function of ``torch.optim.lr_scheduler.LambdaLR``: linear
    warm-up over ``warmup`` steps, then ``constant``, or ``linear`` / ``cosine`` decay to 0 at
    ``total_steps``. An unknown ``schedule`` is refused naming the option."""
    check_choice(schedule, "schedule", CHOICES["schedule"])

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return step / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


def scheduled_adamw(
    params: Sequence[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    schedule: str,
    total_steps: int,
    warmup_ratio: float,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` with :func:`lr_lambda`'s schedule over ``total_steps`` optimizer steps
    (at least 1), warm-up ``warmup_ratio`` of them: the optimizer of the policy SFT and of CPT."""
    total = max(1, int(total_steps))
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule, total, int(warmup_ratio * total)))
    return optimizer, scheduler


@dataclass
class FrozenPrefix:
    """Block ``start``'s input for each (job, sequence) of one adaptation: ``states[j][r]`` [len, hidden]."""

    start: int
    states: list[list[torch.Tensor]]

    def rows(self, bins: list[list[tuple[int, int]]], width: int) -> torch.Tensor:
        """The packed rows [len(bins), width, hidden] of the (job, sequence) members in ``bins``; the
        padding tail is zeros (it forms a block of its own and carries no target)."""
        first = self.states[bins[0][0][0]][bins[0][0][1]]
        out = first.new_zeros(len(bins), width, first.shape[-1])
        for b, members in enumerate(bins):
            offset = 0
            for j, r in members:
                state = self.states[j][r]
                out[b, offset : offset + len(state)] = state
                offset += len(state)
        return out


class InnerLoopTrainer:
    """Trains adapter slots of an :class:`AdapterBank` on self-edit sequences.

    Args:
        model: the (frozen) causal LM the bank is attached to.
        tokenizer: its tokenizer (needs a pad token).
        bank: the adapter bank; ``adapt`` can run up to ``bank.slots`` jobs at once.
        config: default hyper-parameters.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        bank: AdapterBank,
        config: InnerLoopConfig | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.bank = bank
        self.config = config or InnerLoopConfig()
        self._packing_checked = False  # set by the first packed step's probe
        self._split_checked: dict[int, bool] = {}  # lowest adapted block -> the split probe passed
        self._prefix: FrozenPrefix | None = None  # the current adaptation's cached lower-block states

    def tokenize(self, job: AdaptJob) -> list[TokenizedSequence]:
        c = self.config
        return [
            tokenize_sequence(
                self.tokenizer, s, loss_on=job.loss_on or c.loss_on, max_length=c.max_length, append_eos=c.append_eos
            )
            for s in job.sequences
        ]

    def _plan(self, rows: list[TokenizedSequence], job: AdaptJob) -> list[list[list[int]]]:
        """Optimizer steps -> micro-batches -> row indices for one job."""
        c = self.config
        epochs = c.epochs if job.epochs is None else job.epochs
        rng = random.Random(c.seed if job.seed is None else job.seed)
        micro: list[list[int]] = []
        for _ in range(epochs):
            order = list(range(len(rows)))
            if c.shuffle:
                rng.shuffle(order)
            micro.extend(order[i : i + c.batch_size] for i in range(0, len(order), c.batch_size))
        return [micro[i : i + c.grad_accum] for i in range(0, len(micro), c.grad_accum)]

    def adapt(self, jobs: Sequence[AdaptJob], slots: Sequence[int] | None = None) -> list[AdaptResult]:
        """Reset the jobs' slots and train each job's adapter; slot ``i`` gets job ``i`` by default.

        Afterwards the adapters stay in their slots for evaluation (``bank.route(slot)``) until the
        next ``adapt`` or ``bank.reset``.
        """
        c = self.config
        slots = list(range(len(jobs))) if slots is None else list(slots)
        if len(slots) != len(jobs) or len(set(slots)) != len(slots):
            raise ValueError("need one distinct slot per job")
        for index, job in enumerate(jobs):
            check_job(job, index)
        started = time.perf_counter()
        self.bank.reset(slots)
        results = [AdaptResult(slot=s) for s in slots]
        tokenized = [self.tokenize(job) for job in jobs]
        plans = [self._plan(rows, job) if rows else [] for rows, job in zip(tokenized, jobs)]
        if not any(plans):
            return results

        device = next(iter(self.bank.layers.values())).base.weight.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16")
        self._prefix = self._frozen_prefix(tokenized, device, autocast)
        groups = []
        lambdas = []
        for job, slot, plan in zip(jobs, slots, plans):
            lr = c.lr if job.lr is None else job.lr
            groups.append({"params": self.bank.parameters(slot), "lr": lr, "weight_decay": c.weight_decay})
            warmup = max(c.warmup_steps, int(c.warmup_ratio * len(plan)))
            lambdas.append(lr_lambda(c.schedule, len(plan), warmup))
        self.bank.train_mode(True)
        # The fused kernel (CPU and CUDA) does one pass over all slots' tensors: same update, ~2x less time.
        optimizer = torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda"))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        was_training = self.model.training
        self.model.train()
        checkpointing = c.gradient_checkpointing and hasattr(self.model, "gradient_checkpointing_enable")
        if checkpointing:  # non-reentrant: the frozen inputs need no grad; recomputed under the routing
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        try:
            with seeded(c.seed if jobs[0].seed is None else jobs[0].seed), torch.enable_grad():
                for step in range(max(len(p) for p in plans)):
                    active = [j for j, plan in enumerate(plans) if step < len(plan)]
                    self._train_step(step, active, plans, tokenized, slots, results, device, autocast)
                    for j, group in enumerate(optimizer.param_groups):
                        if j in active:
                            if c.max_grad_norm > 0:
                                torch.nn.utils.clip_grad_norm_(group["params"], c.max_grad_norm)
                        else:
                            for p in group["params"]:
                                p.grad = None
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
        finally:
            self._prefix = None
            if checkpointing:
                self.model.gradient_checkpointing_disable()
            self.bank.train_mode(False)
            self.model.train(was_training)
            self.bank.touch(slots)
        elapsed = time.perf_counter() - started
        for result in results:
            result.seconds = elapsed
        return results

    def _train_step(self, step, active, plans, tokenized, slots, results, device, autocast) -> None:
        """One optimizer step's forward/backward passes for every active job.

        Each job's loss is the sum of its token losses over all micro-batches of the step divided by
        its number of loss tokens in the step (the Hugging Face Trainer's normalisation with gradient
        accumulation), so the rows of a step can be regrouped freely: ``packed`` packs them end to end
        into rows, ``dynamic`` sorts them by length; either way forward passes hold at most
        ``max_batch_tokens`` tokens. The reference path (``loss_on_padding``) keeps its
        micro-batches, since there the mean runs over each padded micro-batch.
        """
        c = self.config
        step_loss = {j: 0.0 for j in active}
        if c.loss_on_padding:
            n_micro = max(len(plans[j][step]) for j in active)
            for m in range(n_micro):
                members = [(j, r) for j in active if m < len(plans[j][step]) for r in plans[j][step][m]]
                batch = self._padded_batch(members, tokenized)  # on the host: int tensors, small
                # Mean over the micro-batch's label positions, pads included, then / micro-batches;
                # counted on the whole micro-batch, so that it can run in row slices within the budget.
                labelled = batch["targets"] != IGNORE_INDEX
                owner = batch["owner"]
                denominators = {
                    j: len(plans[j][step]) * max(1, int(labelled[owner == j].sum())) for j in owner.unique().tolist()
                }
                rows, width = batch["input_ids"].shape
                per_slice = max(1, c.max_batch_tokens // width)
                for first in range(0, rows, per_slice):
                    part = {key: value[first : first + per_slice] for key, value in batch.items()}
                    self._forward_backward(part, slots, denominators, step_loss, results, device, autocast)
            self._count_steps(active, step_loss, results)
            return
        members = [(j, r) for j in active for micro in plans[j][step] for r in micro]
        denominators = {
            j: max(1, sum(tokenized[j][r].n_loss_tokens for micro in plans[j][step] for r in micro)) for j in active
        }
        lengths = [len(tokenized[j][r].input_ids) for j, r in members]
        if c.padding == "packed":
            self._check_packing()
            bins = balanced_bins(lengths, c.pack_length)
            widths = [sum(lengths[i] for i in b) for b in bins]
            order = sorted(range(len(bins)), key=lambda b: -widths[b])
            for chunk in _chunks(order, widths, c.max_batch_tokens):
                batch = self._packed_batch([bins[b] for b in chunk], members, tokenized)
                self._forward_backward(batch, slots, denominators, step_loss, results, device, autocast)
        else:
            order = sorted(range(len(members)), key=lambda i: -lengths[i])
            for chunk in _chunks(order, lengths, c.max_batch_tokens):
                batch = self._padded_batch([members[i] for i in chunk], tokenized)
                self._forward_backward(batch, slots, denominators, step_loss, results, device, autocast)
        self._count_steps(active, step_loss, results)

    @staticmethod
    def _count_steps(active, step_loss, results) -> None:
        """Record the step's loss of every active job: the step's one read-back from the device."""
        on_device = [j for j in active if torch.is_tensor(step_loss[j])]
        values = (
            dict(zip(on_device, torch.stack([step_loss[j].float() for j in on_device]).tolist())) if on_device else {}
        )
        for j in active:
            # Not values.get(j, float(...)): the default would be read back for every job.
            results[j].losses.append(values[j] if j in values else float(step_loss[j]))
            results[j].steps += 1

    def _padded_batch(self, members, tokenized) -> dict[str, torch.Tensor]:
        """Right-padded rows of (job, row) members; ``owner`` [batch, seq] is the job of every token."""
        c = self.config
        batch = collate(
            [tokenized[j][r] for j, r in members],
            self.tokenizer.pad_token_id,
            padding="max_length" if c.padding == "max_length" else "dynamic",
            pad_to=c.pad_to,
            loss_on_padding=c.loss_on_padding,
        )
        labels = batch.pop("labels")
        targets = torch.full_like(labels, IGNORE_INDEX)
        targets[:, :-1] = labels[:, 1:]  # logits at t predict token t+1
        batch["targets"] = targets
        batch["owner"] = torch.tensor([j for j, _ in members]).unsqueeze(1).expand_as(labels)
        return batch

    def _packed_batch(self, bins, members, tokenized) -> dict[str, torch.Tensor]:
        """Packed rows of the members in ``bins``; a padding tail is counted for its row's first job."""
        ordered = [members[i] for b in bins for i in b]
        batch = collate_packed(
            [[tokenized[j][r] for j, r in (members[i] for i in b)] for b in bins], self.tokenizer.pad_token_id
        )
        segment = batch.pop("segment")
        segment_owner = torch.tensor([j for j, _ in ordered])
        first_owner = torch.tensor([members[b[0]][0] for b in bins]).unsqueeze(1).expand_as(segment)
        batch["owner"] = torch.where(segment >= 0, segment_owner[segment.clamp(min=0)], first_owner)
        batch["attention_mask"] = (segment >= 0).long()  # real tokens (not given to the model)
        if self._prefix is not None:
            batch["inputs_embeds"] = self._prefix.rows([[members[i] for i in b] for b in bins], segment.shape[1])
        return batch

    def _forward_backward(self, batch, slots, denominators, step_loss, results, device, autocast) -> None:
        """Forward and backward one batch; job j's loss is its summed token loss divided by denominators[j]."""
        # Token counts come from the host copies: nothing in this step waits for the device.
        host_owner, host_real, host_targets = batch["owner"], batch["attention_mask"], batch["targets"]
        jobs = host_owner.unique().tolist()
        for j in jobs:
            on_host = host_owner == j
            results[j].train_tokens += int(host_real[on_host].sum())
            results[j].processed_tokens += int(on_host.sum())  # padding included
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        owner, targets = batch["owner"], batch["targets"]  # each [batch, seq]
        slot_of_job = torch.tensor(slots)
        packed = "position_ids" in batch
        # Packed rows mix jobs, so they route per token; padded rows route per row. Built on the host:
        # the bank groups positions by slot there and moves the index tensors to the device.
        routing = (
            torch.where(host_real.bool(), slot_of_job[host_owner], -1) if packed else slot_of_job[host_owner[:, 0]]
        )
        # Positions with a target, found on the host (boolean indexing on the device would sync).
        keep = (host_targets.flatten() != IGNORE_INDEX).nonzero().flatten().to(device, non_blocking=True)
        # The backward pass runs under the routing too: with gradient checkpointing it recomputes
        # the decoder layers, and without the routing they would run without adapters.
        with self.bank.route(routing):
            with autocast:
                token_loss = self._token_losses(batch, targets, keep, packed)  # [batch, seq]
            total = token_loss.new_zeros(())
            for j in jobs:
                # A masked sum, not boolean indexing: that would need the count on the host (a sync).
                job_loss = torch.where(owner == j, token_loss, 0.0).sum() / denominators[j]
                total = total + job_loss
                step_loss[j] = step_loss[j] + job_loss.detach()
            total.backward()

    def _token_losses(
        self, batch: dict[str, torch.Tensor], targets: torch.Tensor, keep: torch.Tensor, packed: bool
    ) -> torch.Tensor:
        """Per-token cross-entropy against ``targets`` (already shifted) at the flat positions ``keep``.

        The vocabulary projection runs only at those positions, and in slices of
        ``loss_chunk_tokens`` rows when there are more: each slice's logits are recomputed in the
        backward pass instead of kept (the head carries no adapter), so the fp32 logits held at
        once are [loss_chunk_tokens, vocab] however many tokens a batch has.
        """
        decoder, head = decoder_and_head(self.model)
        if "inputs_embeds" in batch:  # packed rows whose lower blocks ran once (see _frozen_prefix)
            output = upper_forward(decoder, self._prefix.start, batch["inputs_embeds"], batch["position_ids"])
            return self._head_losses(output.last_hidden_state, head, targets, keep)
        if packed:
            # No attention mask: the restarting position ids tell the mask builder where blocks end.
            inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        else:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if decoder is None:  # no separate head: the model's own logits
            losses = torch.zeros(targets.numel(), dtype=torch.float32, device=targets.device)
            logits = self.model(**inputs, use_cache=False).logits.flatten(0, 1).index_select(0, keep)
            losses[keep] = F.cross_entropy(logits.float(), targets.flatten().index_select(0, keep), reduction="none")
            return losses.view(targets.shape)
        return self._head_losses(decoder(**inputs, use_cache=False).last_hidden_state, head, targets, keep)

    def _head_losses(
        self, last_hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Per-token cross-entropy [batch, seq] of the head on ``last_hidden`` at the flat positions ``keep``."""
        losses = torch.zeros(targets.numel(), dtype=torch.float32, device=targets.device)
        wanted = targets.flatten().index_select(0, keep)  # [n_label_tokens]
        hidden = last_hidden.flatten(0, 1).index_select(0, keep)
        chunk = self.config.loss_chunk_tokens
        if chunk == 0 or len(keep) <= chunk:
            losses[keep] = _head_cross_entropy(head, hidden, wanted)
            return losses.view(targets.shape)
        parts = [
            checkpoint(
                _head_cross_entropy,
                head,
                hidden[first : first + chunk],
                wanted[first : first + chunk],
                use_reentrant=False,
            )
            for first in range(0, len(keep), chunk)
        ]
        losses[keep] = torch.cat(parts)
        return losses.view(targets.shape)

    def _frozen_prefix(self, tokenized, device, autocast) -> FrozenPrefix | None:
        """The lower blocks' outputs for every sequence of this adaptation, when they can be reused.

        Only for ``packed`` padding (padded rows would need the pad tokens' states too), a decoder
        the split can run, and adapters all at or above some block ``start > 0``. Identical token
        sequences (every self-edit of a passage also trains on the passage) are run once.
        """
        c = self.config
        decoder, _ = decoder_and_head(self.model)
        if not (c.reuse_frozen_blocks and c.padding == "packed" and splittable(decoder)):
            return None
        adapted = {id(layer) for layer in self.bank.layers.values()}
        inside = [sum(id(m) in adapted for m in block.modules()) for block in decoder.layers]
        start = next((i for i, n in enumerate(inside) if n), 0)
        if start == 0 or sum(inside) != len(adapted):
            return None
        lower = [m for block in decoder.layers[:start] for m in block.modules()]
        if getattr(self.model.config, "attention_dropout", 0) or any(
            isinstance(m, torch.nn.Dropout) and m.p > 0 for m in lower
        ):
            return None  # cached states would freeze the lower blocks' dropout
        if start not in self._split_checked:
            with self.bank.route(None):
                self._split_checked[start] = split_matches(decoder, start, device)
        if not self._split_checked[start]:
            return None
        unique: dict[tuple[int, ...], int] = {}
        for rows in tokenized:
            for row in rows:
                unique.setdefault(tuple(row.input_ids), len(unique))
        sequences = [TokenizedSequence(input_ids=list(ids), labels=list(ids)) for ids in unique]
        lengths = [len(s.input_ids) for s in sequences]
        states: list[torch.Tensor | None] = [None] * len(sequences)
        bins = balanced_bins(lengths, c.pack_length)
        widths = [sum(lengths[i] for i in b) for b in bins]
        order = sorted(range(len(bins)), key=lambda b: -widths[b])
        with self.bank.route(None), autocast:
            for chunk in _chunks(order, widths, c.max_batch_tokens):
                batch = collate_packed([[sequences[i] for i in bins[b]] for b in chunk], self.tokenizer.pad_token_id)
                hidden = lower_states(
                    decoder, start, batch["input_ids"].to(device), batch["position_ids"].to(device)
                )  # [rows, width, hidden]
                for row, b in enumerate(chunk):
                    offset = 0
                    for i in bins[b]:
                        states[i] = hidden[row, offset : offset + lengths[i]]
                        offset += lengths[i]
        by_member = [[states[unique[tuple(row.input_ids)]] for row in rows] for rows in tokenized]
        return FrozenPrefix(start=start, states=by_member)

    def _check_packing(self) -> None:
        """Once per trainer: verify that this model keeps packed sequences apart (its mask builder
        must read block boundaries from restarting position ids), else fail with a clear error.

        The second of two packed sequences must match it run alone far more closely than the same
        tokens run as one sequence (which attends across the boundary); a relative test, so bf16
        weights pass on their own rounding noise.
        """
        if self._packing_checked:
            return
        vocab = self.model.get_input_embeddings().num_embeddings
        first, second = [i % vocab for i in (11, 12, 13, 14, 15)], [i % vocab for i in (21, 22, 23, 24)]
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self.bank.route(None):
                device = next(iter(self.bank.layers.values())).base.weight.device
                both = torch.tensor([first + second], device=device)
                alone = model(input_ids=torch.tensor([second], device=device), use_cache=False).logits[0].float()
                positions = torch.tensor([list(range(len(first))) + list(range(len(second)))], device=device)
                packed = model(input_ids=both, position_ids=positions, use_cache=False).logits[0, len(first) :]
                joined = model(input_ids=both, use_cache=False).logits[0, len(first) :]
        finally:
            model.train(was_training)
        packed_error = (packed.float() - alone).abs().max().item()
        joined_error = (joined.float() - alone).abs().max().item()
        if packed_error > 1e-4 and packed_error > 0.1 * joined_error:
            raise RuntimeError(
                f"{type(model).__name__} lets packed sequences attend across their boundaries with this "
                f"transformers version (packed vs alone: {packed_error:.3g}, joined: {joined_error:.3g}); "
                "set the inner loop's padding to 'dynamic'"
            )
        self._packing_checked = True
