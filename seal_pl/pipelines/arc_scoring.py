"""Teacher-forced log-likelihood of completions under the model and its adapter slots.

:class:`TeacherForcedScorer` returns, for each row ``(prompt, completion, slot)``, the sum of the
log-probabilities of the completion's tokens given the prompt, computed in one forward pass (no
sampling) with the row's adapter slot (``None`` or ``-1`` = the base model). Prompts are rendered
and tokenized exactly as :class:`~seal_pl.generation.hf.HFGenerator` does before generating (chat
messages through the chat template, no extra special tokens), and the completion is tokenized on
its own and appended, as generated tokens are; so a completion the model generated greedily scores
its own (canonically tokenized) text.

Two ways to batch:

* ``share_prompt=True`` (default): rows are grouped by (prompt, slot); the prompt runs once, and
  its key/value cache is repeated for a batch of completions (ARC likelihood voting scores every
  candidate in every view, so each prompt is shared by all candidates). Cost about
  ``views x (prompt + candidates x answer)`` tokens.
* ``share_prompt=False``: each row is one full sequence (prompt + completion), rows sorted by
  length and right-padded in batches; about ``views x candidates x (prompt + answer)`` tokens, for
  models whose cache cannot be repeated along the batch.

The vocabulary projection runs only at the positions that predict completion tokens. Log-softmax
is taken in float32 (also under ``precision: bf16`` autocast).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from seal_pl.generation.base import Prompt, render_prompt
from seal_pl.inner.trainer import check_choice
from seal_pl.models.heads import decoder_and_head


@dataclass(frozen=True)
class ScoreRequest:
    """A completion to score after a prompt, with the adapter slot (``None``/-1 = base model)."""

    prompt: Prompt
    completion: str
    slot: int | None = None


class _NullContext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


class TeacherForcedScorer:
    """Sum of completion-token log-probabilities per row, batched, with per-row adapter slots.

    Args:
        batch_size: rows (completions) per forward pass.
        max_batch_tokens: optional cap on padded tokens per forward pass (with ``share_prompt``, the
            repeated prompt cache counts once per row); a single row always runs.
        precision: ``fp32`` or ``bf16`` (autocast).
        share_prompt: run each distinct (prompt, slot) once and reuse its cache (see module docstring).
    """

    def __init__(
        self,
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
        precision: Literal["fp32", "bf16"] = "fp32",
        share_prompt: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_choice(precision, "precision", ("fp32", "bf16"))
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.precision = precision
        self.share_prompt = share_prompt
        self.model = None
        self.tokenizer = None
        self.bank = None

    def bind(self, model, tokenizer, bank=None) -> TeacherForcedScorer:
        self.model, self.tokenizer, self.bank = model, tokenizer, bank
        return self

    # ---------------------------------------------------------------------------------- helpers
    def _route(self, slots):
        if self.bank is None:
            if slots is not None and any(slot is not None and slot >= 0 for slot in _as_list(slots)):
                raise ValueError("adapter slots given but the scorer has no adapter bank")
            return _NullContext()
        return self.bank.route(slots)

    def _autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _forward(self, input_ids, attention_mask, positions, past_key_values=None):
        """Log-softmax rows at ``positions`` (a bool mask [batch, seq]) and the returned cache."""
        decoder, head = decoder_and_head(self.model)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": past_key_values is not None}
        if past_key_values is not None:
            kwargs["past_key_values"] = past_key_values
        if decoder is not None:
            hidden = decoder(**kwargs).last_hidden_state
            logits = head(hidden[positions]).float()
        else:
            logits = self.model(**kwargs).logits[positions].float()
        return F.log_softmax(logits, dim=-1)

    def _tokenize(self, requests: Sequence[ScoreRequest]) -> tuple[list[list[int]], list[list[int]], list[str]]:
        prompt_cache: dict[str, list[int]] = {}
        rendered: dict[int, tuple[str, bool]] = {}  # the same prompt object is rendered once
        prompt_ids, completion_ids, prompt_texts = [], [], []
        for request in requests:
            if id(request.prompt) not in rendered:
                rendered[id(request.prompt)] = render_prompt(self.tokenizer, request.prompt)
            text, templated = rendered[id(request.prompt)]
            key = f"{int(templated)}{text}"
            if key not in prompt_cache:
                prompt_cache[key] = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
            prompt_ids.append(prompt_cache[key])
            completion_ids.append(self.tokenizer(request.completion, add_special_tokens=False)["input_ids"])
            prompt_texts.append(key)
        return prompt_ids, completion_ids, prompt_texts

    def _chunks(self, order: Sequence[int], width_of) -> list[list[int]]:
        """Consecutive runs of ``order`` within ``batch_size`` rows and ``max_batch_tokens``."""
        chunks: list[list[int]] = []
        chunk: list[int] = []
        width = 0
        for index in order:
            new_width = max(width, width_of(index))
            too_many = len(chunk) >= self.batch_size
            too_long = self.max_batch_tokens is not None and new_width * (len(chunk) + 1) > self.max_batch_tokens
            if chunk and (too_many or too_long):
                chunks.append(chunk)
                chunk, new_width = [], width_of(index)
            chunk.append(index)
            width = new_width
        if chunk:
            chunks.append(chunk)
        return chunks

    # ------------------------------------------------------------------------------------ score
    @torch.no_grad()
    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """``log p(completion | prompt)`` per request (0.0 for an empty completion), in order."""
        if self.model is None or self.tokenizer is None:
            raise RuntimeError("TeacherForcedScorer.bind(model, tokenizer, bank) must be called before score()")
        requests = list(requests)
        if not requests:
            return []
        prompt_ids, completion_ids, prompt_keys = self._tokenize(requests)
        if any(not ids for ids in prompt_ids):
            raise ValueError("a prompt rendered to zero tokens; nothing to condition on")
        scores = [0.0] * len(requests)
        live = [i for i in range(len(requests)) if completion_ids[i]]
        slots = [-1 if r.slot is None else int(r.slot) for r in requests]
        if self.share_prompt:
            self._score_shared(live, prompt_ids, completion_ids, prompt_keys, slots, scores)
        else:
            self._score_full(live, prompt_ids, completion_ids, slots, scores)
        return scores

    def _score_full(self, live, prompt_ids, completion_ids, slots, scores) -> None:
        device = self.model.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        length = {i: len(prompt_ids[i]) + len(completion_ids[i]) for i in live}
        order = sorted(live, key=lambda i: length[i])
        for chunk in self._chunks(order, length.__getitem__):
            width = max(length[i] for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            positions = torch.zeros((len(chunk), width), dtype=torch.bool)
            targets = []
            for row, i in enumerate(chunk):
                sequence = prompt_ids[i] + completion_ids[i]
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
                start = len(prompt_ids[i]) - 1  # the position that predicts the first completion token
                positions[row, start : start + len(completion_ids[i])] = True
                targets.extend(completion_ids[i])
            with self._route([slots[i] for i in chunk]), self._autocast(device):
                logprobs = self._forward(ids.to(device), mask.to(device), positions.to(device))
            picked = logprobs.gather(1, torch.tensor(targets, device=device).unsqueeze(1)).squeeze(1).double().cpu()
            cursor = 0
            for i in chunk:
                n = len(completion_ids[i])
                scores[i] = float(picked[cursor : cursor + n].sum())
                cursor += n

    def _score_shared(self, live, prompt_ids, completion_ids, prompt_keys, slots, scores) -> None:
        groups: dict[tuple[str, int], list[int]] = {}
        for i in live:
            groups.setdefault((prompt_keys[i], slots[i]), []).append(i)
        for (_, slot), members in groups.items():
            self._score_group(prompt_ids[members[0]], {i: completion_ids[i] for i in members}, slot, scores)

    def _score_group(self, prompt: list[int], completions: dict[int, list[int]], slot: int, scores) -> None:
        """Completions that share one prompt and slot: the prompt once, then its cache per batch."""
        device = self.model.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        n_prompt = len(prompt)
        # After the prompt, the inputs are each completion's tokens but the last; they predict tokens 1..n-1.
        tails = {i: ids[:-1] for i, ids in completions.items()}
        width_of = {i: n_prompt + len(tail) for i, tail in tails.items()}
        with self._route(slot if slot >= 0 else None), self._autocast(device):
            ids = torch.tensor([prompt], device=device)
            last = torch.zeros_like(ids, dtype=torch.bool)
            last[0, -1] = True
            cache = _new_cache(self.model)
            first = self._forward(ids, torch.ones_like(ids), last, past_key_values=cache)[0].double().cpu()
            for i, ids_i in completions.items():
                scores[i] = float(first[ids_i[0]])
            order = sorted((i for i in tails if tails[i]), key=width_of.__getitem__)
            for chunk in self._chunks(order, width_of.__getitem__):
                width = max(len(tails[i]) for i in chunk)
                inputs = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), n_prompt + width), dtype=torch.long)
                mask[:, :n_prompt] = 1
                positions = torch.zeros((len(chunk), width), dtype=torch.bool)
                targets = []
                for row, i in enumerate(chunk):
                    n = len(tails[i])
                    inputs[row, :n] = torch.tensor(tails[i])
                    mask[row, n_prompt : n_prompt + n] = 1
                    positions[row, :n] = True
                    targets.extend(completions[i][1:])
                repeated = copy.deepcopy(cache)
                repeated.batch_repeat_interleave(len(chunk))
                logprobs = self._forward(
                    inputs.to(device), mask.to(device), positions.to(device), past_key_values=repeated
                )
                del repeated
                picked = logprobs.gather(1, torch.tensor(targets, device=device).unsqueeze(1)).squeeze(1)
                picked = picked.double().cpu()
                cursor = 0
                for i in chunk:
                    n = len(tails[i])
                    scores[i] += float(picked[cursor : cursor + n].sum())
                    cursor += n


def _new_cache(model):
    """An empty key/value cache for ``model`` (a ``DynamicCache``)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


def _as_list(slots) -> list:
    if isinstance(slots, int):
        return [slots]
    return list(slots)
