"""Turn training texts into token ids, loss labels and padded batches.

A training sequence is a text plus the character offset where the loss starts (0 = loss on every
token). Offsets are mapped to tokens through the tokenizer's offset mapping, so masking works for
any tokenizer and any chat template: no hard-coded token ids. Two padding behaviours exist:

* ``dynamic`` (default): pad to the longest row of the batch and exclude pads from the loss;
* ``max_length`` with ``loss_on_padding=True``: the reference recipe, which pads every sequence to
  a fixed length (2048) and keeps the pad tokens (= EOS) in the loss.
"""

from __future__ import annotations

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


def tokenize_sequence(
    tokenizer: PreTrainedTokenizerBase,
    sequence: TrainSequence,
    *,
    loss_on: str = "all",
    max_length: int = 2048,
    append_eos: bool = False,
) -> TokenizedSequence:
    """Tokenize one sequence; labels are -100 before ``completion_start`` when ``loss_on='completion'``."""
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
