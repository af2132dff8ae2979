"""The one inner loop: fit fresh LoRA adapters on self-edit data, several at once.

Both domains call :meth:`InnerLoopTrainer.adapt` with a list of :class:`AdaptJob` (one per self-edit).
Jobs are assigned to adapter slots of an :class:`~seal_pl.inner.lora.AdapterBank`; every slot is
reset to the same initial tensors and gets its own AdamW parameter group, learning rate, schedule,
epoch count and loss normalisation. At optimizer step ``t`` every job still running contributes its
``t``-th step's micro-batches to one joint batch whose rows carry their slot index, so K adapters
cost one forward/backward pass. Because the slots share no parameters, the summed loss gives each
adapter exactly the gradient it would get alone; gradient clipping is applied per adapter, and a job
that has finished is left out of the optimizer step. With one job this is ordinary LoRA training.

Plain PyTorch: no Lightning here, so it is unit-tested in isolation and reused by every stage.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seal_pl.inner.lora import AdapterBank
from seal_pl.inner.sequences import IGNORE_INDEX, TokenizedSequence, TrainSequence, collate, tokenize_sequence


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
        padding: ``dynamic`` (pad to the longest row) or ``max_length`` (pad to ``pad_to``).
        pad_to: width for ``max_length`` padding (reference: 2048).
        loss_on_padding: keep pad tokens in the loss (reference quirk; only meaningful with padding).
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
    padding: str = "dynamic"
    pad_to: int = 2048
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
        optimizer = torch.optim.AdamW(groups)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16")
        was_training = self.model.training
        self.model.train()
        try:
            with torch.random.fork_rng(devices=[]), torch.enable_grad():
                torch.manual_seed(c.seed if jobs[0].seed is None else jobs[0].seed)
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
        elapsed = time.perf_counter() - started
        for result in results:
            result.seconds = elapsed
        return results

    def _train_step(self, step, active, plans, tokenized, slots, results, device, autocast) -> None:
        """One optimizer step's forward/backward passes for every active job.

        Each job's loss is the sum of its token losses over all micro-batches of the step divided by
        its number of loss tokens in the step (the Hugging Face Trainer's normalisation with gradient
        accumulation), so the rows of a step can be regrouped freely: they are sorted by length and
        cut into chunks of at most ``max_batch_tokens`` padded tokens, which keeps padding small.
        The reference path (``loss_on_padding``) keeps its micro-batches, since there the mean runs
        over each padded micro-batch.
        """
        c = self.config
        step_loss = {j: 0.0 for j in active}
        if c.loss_on_padding:
            n_micro = max(len(plans[j][step]) for j in active)
            for m in range(n_micro):
                members = [(j, r) for j in active if m < len(plans[j][step]) for r in plans[j][step][m]]
                # Mean over the micro-batch's label positions, pads included, then / micro-batches.
                per_batch = {j: len(plans[j][step]) for j in active}
                self._forward_backward(members, tokenized, slots, per_batch, step_loss, results, device, autocast, True)
        else:
            members = [(j, r) for j in active for micro in plans[j][step] for r in micro]
            denominators = {
                j: max(1, sum(tokenized[j][r].n_loss_tokens for micro in plans[j][step] for r in micro)) for j in active
            }
            members.sort(key=lambda m: len(tokenized[m[0]][m[1]].input_ids), reverse=True)
            chunk: list[tuple[int, int]] = []
            for member in members:
                width = len(tokenized[chunk[0][0]][chunk[0][1]].input_ids) if chunk else 0
                width = max(width, len(tokenized[member[0]][member[1]].input_ids))
                if chunk and width * (len(chunk) + 1) > c.max_batch_tokens:
                    self._forward_backward(chunk, tokenized, slots, denominators, step_loss, results, device, autocast)
                    chunk = []
                chunk.append(member)
            if chunk:
                self._forward_backward(chunk, tokenized, slots, denominators, step_loss, results, device, autocast)
        for j in active:
            results[j].losses.append(step_loss[j])
            results[j].steps += 1

    def _forward_backward(
        self, members, tokenized, slots, denominators, step_loss, results, device, autocast, per_batch_mean=False
    ) -> None:
        """Forward and backward one batch of (job, row) members; job j's loss is divided by denominators[j]
        (times its number of label positions in this batch when ``per_batch_mean``)."""
        c = self.config
        rows = [tokenized[j][r] for j, r in members]
        owners = [j for j, _ in members]
        batch = collate(
            rows, self.tokenizer.pad_token_id, padding=c.padding, pad_to=c.pad_to, loss_on_padding=c.loss_on_padding
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        shift_labels = batch["labels"][:, 1:]  # [batch, seq-1]
        with self.bank.route(torch.tensor([slots[j] for j in owners])), autocast:
            token_loss = self._token_losses(batch, shift_labels)  # [batch, seq-1]
        row_loss = token_loss.sum(dim=1)
        row_count = (shift_labels != IGNORE_INDEX).sum(dim=1)
        real_tokens = batch["attention_mask"].sum(dim=1)
        owner_tensor = torch.tensor(owners, device=device)
        total = row_loss.new_zeros(())
        for j in sorted(set(owners)):
            mask = owner_tensor == j
            denominator = denominators[j] * (row_count[mask].sum().clamp(min=1) if per_batch_mean else 1)
            job_loss = row_loss[mask].sum() / denominator
            total = total + job_loss
            step_loss[j] += float(job_loss.detach())
            results[j].train_tokens += int(real_tokens[mask].sum())
            results[j].processed_tokens += int(mask.sum()) * batch["input_ids"].size(1)  # padding included
        total.backward()

    def _token_losses(self, batch: dict[str, torch.Tensor], shift_labels: torch.Tensor) -> torch.Tensor:
        """Per-token cross-entropy; the vocabulary projection runs only at positions with a label."""
        model = self.model
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        head = model.get_output_embeddings()
        plain_head = decoder is not None and isinstance(head, torch.nn.Linear) and not any(
            getattr(model.config, name, None) for name in ("final_logit_softcapping", "logit_scale")
        )
        losses = torch.zeros(shift_labels.shape, dtype=torch.float32, device=shift_labels.device)
        keep = shift_labels != IGNORE_INDEX
        if plain_head:
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            logits = head(hidden[:, :-1][keep]).float()  # [n_label_tokens, vocab]
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = logits[:, :-1][keep].float()
        losses[keep] = F.cross_entropy(logits, shift_labels[keep], reduction="none")
        return losses
