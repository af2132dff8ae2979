"""Turn training texts into token ids, loss labels and padded batches.

A training sequence is a text plus the character offset where the loss starts (0 = loss on every
token). Offsets are mapped to tokens through the tokenizer's offset mapping, so masking works for
any tokenizer and any chat template: no hard-coded token ids. Three batch layouts exist:

* ``packed``: sequences are packed end to end into a few rows (first-fit decreasing); position ids
  restart at 0 for every sequence, which makes the model's mask builder keep each sequence's
  attention inside its own block, and next-token targets never cross a boundary. Almost every
  computed token is a real training token.
* ``dynamic``: pad to the longest row of the batch and exclude pads from the loss;
* ``max_length`` with ``loss_on_padding=True``: the reference recipe, which pads every sequence to
  a fixed length (2048) and keeps the pad tokens (= EOS) in the loss.

``tokenize_sequence`` keeps the first ``max_length`` tokens of a longer sequence; ``token_length``
gives the length before that cut, so callers can report what was truncated (the knowledge pipeline
logs a warning naming the passage and counts it in ``results.json``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainSequence:
    """One training text.

    Args:
        text: the full text the model is trained on.
        completion_start: character offset of the first character that carries loss when the loss is
            restricted to the completion (``loss_on="completion"``). 0 means the whole text.
        templated: the text was rendered by a chat template and already contains its special tokens,
            so the tokenizer must not add BOS/EOS of its own (avoids the reference's double BOS).
    """

    text: str
    completion_start: int = 0
    templated: bool = False

    @classmethod
    def after_marker(cls, text: str, marker: str, templated: bool = False) -> TrainSequence:
        """Loss only after the first occurrence of ``marker`` (whole text if the marker is absent)."""
        index = text.find(marker)
        return cls(text, 0 if index < 0 else index + len(marker), templated)


@dataclass(frozen=True)
class TokenizedSequence:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def token_length(tokenizer: PreTrainedTokenizerBase, sequence: TrainSequence, *, append_eos: bool = False) -> int:
    """Tokens ``tokenize_sequence`` produces for ``sequence`` before its ``max_length`` cut."""
    n = len(tokenizer(sequence.text, add_special_tokens=not sequence.templated, truncation=False)["input_ids"])
    return n + int(append_eos and tokenizer.eos_token_id is not None)


def tokenize_sequence(
    tokenizer: PreTrainedTokenizerBase,
    sequence: TrainSequence,
    *,
    loss_on: str = "all",
    max_length: int = 2048,
    append_eos: bool = False,
) -> TokenizedSequence:
    """Tokenize one sequence; labels are -100 before ``completion_start`` when ``loss_on='completion'``.

    A sequence longer than ``max_length`` tokens keeps its first ``max_length`` (see ``token_length``
    to find such sequences beforehand).
    """
    if loss_on not in ("all", "completion"):
        raise ValueError(f"loss_on must be 'all' or 'completion', got {loss_on!r}")
    encoded = tokenizer(
        sequence.text,
        add_special_tokens=not sequence.templated,
        return_offsets_mapping=True,
        truncation=False,
    )
    ids = list(encoded["input_ids"])
    offsets = list(encoded["offset_mapping"])
    if append_eos and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        offsets.append((len(sequence.text), len(sequence.text)))
    labels = list(ids)
    if loss_on == "completion" and sequence.completion_start > 0:
        for index, (_, end) in enumerate(offsets):
            # A token that ends at or before the boundary belongs to the prompt.
            if end <= sequence.completion_start and not (append_eos and index == len(ids) - 1):
                labels[index] = IGNORE_INDEX
    ids, labels = ids[:max_length], labels[:max_length]
    return TokenizedSequence(ids, labels)


def collate(
    rows: Sequence[TokenizedSequence],
    pad_token_id: int,
    *,
    padding: str = "dynamic",
    pad_to: int = 2048,
    loss_on_padding: bool = False,
) -> dict[str, torch.Tensor]:
    """Right-pad rows into ``input_ids``/``attention_mask``/``labels`` tensors of shape [batch, seq]."""
    if padding not in ("dynamic", "max_length"):
        raise ValueError(f"padding must be 'dynamic' or 'max_length', got {padding!r}")
    longest = max(len(row.input_ids) for row in rows)
    width = max(pad_to, longest) if padding == "max_length" else longest
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    pad_label = pad_token_id if loss_on_padding else IGNORE_INDEX
    labels = torch.full((len(rows), width), pad_label, dtype=torch.long)
    for index, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[index, :n] = torch.tensor(row.input_ids)
        attention[index, :n] = 1
        labels[index, :n] = torch.tensor(row.labels)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing packing of sequence lengths into bins of ``capacity`` tokens.

    Returns bins as lists of indices into ``lengths``. A sequence longer than ``capacity`` gets a bin
    of its own. Deterministic: ties keep the input order.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[int] = []
    for index in order:
        n = lengths[index]
        for b, room in enumerate(free):
            if n <= room:
                bins[b].append(index)
                free[b] -= n
                break
        else:
            bins.append([index])
            free.append(capacity - n)
    return bins


def balanced_bins(lengths: Sequence[int], pack_length: int) -> list[list[int]]:
    """Pack into as few rows as ``pack_length`` allows, with the rows' widths evened out.

    ``ceil(total / pack_length)`` bins are filled up to about the mean width (raised 5% at a time
    until first-fit-decreasing needs no extra bin), so the rows of one forward pass carry little
    padding tail. A sequence longer than ``pack_length`` sets the width.
    """
    total, longest = sum(lengths), max(lengths)
    n_bins = max(1, math.ceil(total / pack_length))
    widest = max(pack_length, longest)  # the capacity never goes beyond this
    capacity = max(longest, math.ceil(total / n_bins))
    while True:
        bins = pack_bins(lengths, capacity)
        if len(bins) <= n_bins or capacity >= widest:
            return bins
        capacity = min(widest, math.ceil(capacity * 1.05))


def collate_packed(bins: Sequence[Sequence[TokenizedSequence]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Concatenate each bin's sequences into one row; rows right-padded to the longest bin.

    Returns tensors of shape [bins, width]:

    * ``input_ids``;
    * ``position_ids``: 0, 1, ... restarting at every sequence (and for the padding tail, which
      therefore forms a block of its own);
    * ``targets``: the label of the *next* token of the same sequence (already shifted, so logits
      at position t are scored against ``targets[t]``); -100 at each sequence's last token and
      on padding;
    * ``segment``: index of the sequence (in bin order, counting across bins) that owns the token,
      -1 on padding.
    """
    width = max(sum(len(row.input_ids) for row in rows) for rows in bins)
    shape = (len(bins), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    targets = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    segment = torch.full(shape, -1, dtype=torch.long)
    member = 0
    for b, rows in enumerate(bins):
        start = 0
        for row in rows:
            n = len(row.input_ids)
            input_ids[b, start : start + n] = torch.tensor(row.input_ids)
            position_ids[b, start : start + n] = torch.arange(n)
            if n > 1:
                targets[b, start : start + n - 1] = torch.tensor(row.labels[1:])
            segment[b, start : start + n] = member
            member += 1
            start += n
        position_ids[b, start:] = torch.arange(width - start)
    return {"input_ids": input_ids, "position_ids": position_ids, "targets": targets, "segment": segment}
