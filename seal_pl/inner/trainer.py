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

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
from seal_pl.models.rng import seeded


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
    """

    lr: float = 3e-4
    epochs: int = 10
    batch_size: int = 1
    grad_accum: int = 1
    schedule: str = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    loss_on: str = "all"
    padding: str = "packed"
    pad_to: int = 2048
    pack_length: int = 256
    loss_on_padding: bool = False
    max_length: int = 2048
    append_eos: bool = False
    shuffle: bool = True
    precision: str = "fp32"
    seed: int = 0
    max_batch_tokens: int = 4096

    def __post_init__(self) -> None:
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"schedule must be linear, cosine or constant, got {self.schedule!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.padding not in ("packed", "dynamic", "max_length"):
            raise ValueError(f"padding must be packed, dynamic or max_length, got {self.padding!r}")
        if self.padding == "packed" and self.loss_on_padding:
            raise ValueError("loss_on_padding needs padded batches: set padding to max_length (or dynamic)")


@dataclass
class AdaptJob:
    """One self-edit to learn: its sequences and optional per-job overrides."""

    sequences: list[TrainSequence]
    lr: float | None = None
    epochs: int | None = None
    loss_on: str | None = None
    seed: int | None = None


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


def _lr_lambda(schedule: str, total_steps: int, warmup: int):
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
        for _ in range(max(0, epochs)):
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
        started = time.perf_counter()
        self.bank.reset(slots)
        results = [AdaptResult(slot=s) for s in slots]
        tokenized = [self.tokenize(job) for job in jobs]
        plans = [self._plan(rows, job) if rows else [] for rows, job in zip(tokenized, jobs)]
        if not any(plans):
            return results

        device = next(iter(self.bank.layers.values())).base.weight.device
        groups = []
        lambdas = []
        for job, slot, plan in zip(jobs, slots, plans):
            lr = c.lr if job.lr is None else job.lr
            groups.append({"params": self.bank.parameters(slot), "lr": lr, "weight_decay": c.weight_decay})
            warmup = max(c.warmup_steps, int(c.warmup_ratio * len(plan)))
            lambdas.append(_lr_lambda(c.schedule, len(plan), warmup))
        self.bank.train_mode(True)
        # The fused kernel (CPU and CUDA) does one pass over all slots' tensors: same update, ~2x less time.
        optimizer = torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda"))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16")
        was_training = self.model.training
        self.model.train()
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
                # Mean over the micro-batch's label positions, pads included, then / micro-batches.
                per_batch = {j: len(plans[j][step]) for j in active}
                batch = self._padded_batch(members, tokenized)
                self._forward_backward(batch, slots, per_batch, step_loss, results, device, autocast, True)
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
        for j in active:
            results[j].losses.append(step_loss[j])
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
        return batch

    def _forward_backward(
        self, batch, slots, denominators, step_loss, results, device, autocast, per_batch_mean=False
    ) -> None:
        """Forward and backward one batch; job j's loss is its summed token loss divided by
        denominators[j] (times its number of label positions in this batch when ``per_batch_mean``)."""
        batch = {k: v.to(device) for k, v in batch.items()}
        owner, targets, real = batch["owner"], batch["targets"], batch["attention_mask"]  # each [batch, seq]
        slot_of_job = torch.tensor(slots, device=device)
        packed = "position_ids" in batch
        # Packed rows mix jobs, so they route per token; padded rows route per row.
        routing = torch.where(real.bool(), slot_of_job[owner], -1) if packed else slot_of_job[owner[:, 0]]
        with self.bank.route(routing), autocast:
            token_loss = self._token_losses(batch, targets, packed)  # [batch, seq]
        labelled = targets != IGNORE_INDEX
        total = token_loss.new_zeros(())
        for j in owner.unique().tolist():
            mask = owner == j
            denominator = denominators[j] * (labelled[mask].sum().clamp(min=1) if per_batch_mean else 1)
            job_loss = token_loss[mask].sum() / denominator
            total = total + job_loss
            step_loss[j] += float(job_loss.detach())
            results[j].train_tokens += int(real[mask].sum())
            results[j].processed_tokens += int(mask.sum())  # padding included
        total.backward()

    def _token_losses(self, batch: dict[str, torch.Tensor], targets: torch.Tensor, packed: bool) -> torch.Tensor:
        """Per-token cross-entropy against ``targets`` (already shifted); the vocabulary projection
        runs only at positions with a target."""
        decoder, head = decoder_and_head(self.model)
        if packed:
            # No attention mask: the restarting position ids tell the mask builder where blocks end.
            inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        else:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        losses = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
        keep = targets != IGNORE_INDEX
        if decoder is not None:
            hidden = decoder(**inputs, use_cache=False).last_hidden_state
            logits = head(hidden[keep]).float()  # [n_label_tokens, vocab]
        else:
            logits = self.model(**inputs, use_cache=False).logits[keep].float()
        losses[keep] = F.cross_entropy(logits, targets[keep], reduction="none")
        return losses

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
