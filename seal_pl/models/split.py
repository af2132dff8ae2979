"""Run a decoder in two parts: the frozen blocks below the lowest adapter, then the rest.

When LoRA adapts only the upper blocks (``lora.layers``), the blocks below see the same tokens,
with the same weights, in every epoch of an adaptation: their outputs can be computed once and the
training steps can start from them. Without this, every step runs the whole decoder forward
(autograd already skips the backward pass below the lowest adapter). The split is done by
temporarily giving the decoder a shorter block list, so the decoder's own mask builder and
position embeddings still run; :func:`split_matches` checks on the model at hand that the two
parts give what the whole decoder gives before a trainer relies on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def splittable(decoder: torch.nn.Module | None) -> bool:
    """Whether ``decoder`` has the parts the split swaps: a block list, a final norm, token embeddings."""
    return (
        decoder is not None
        and isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList)
        and isinstance(getattr(decoder, "norm", None), torch.nn.Module)
        and hasattr(decoder, "embed_tokens")
    )


@contextmanager
def _blocks(decoder: torch.nn.Module, first: int, last: int | None, *, final_norm: bool) -> Iterator[None]:
    """Within the block, ``decoder`` runs only blocks ``first:last`` (and its final norm if asked)."""
    layers, norm = decoder.layers, decoder.norm
    decoder.layers = torch.nn.ModuleList(list(layers)[first:last])
    if not final_norm:
        decoder.norm = torch.nn.Identity()
    try:
        yield
    finally:
        decoder.layers, decoder.norm = layers, norm


def lower_states(
    decoder: torch.nn.Module, start: int, input_ids: torch.Tensor, position_ids: torch.Tensor
) -> torch.Tensor:
    """The hidden states [batch, seq, hidden] that block ``start`` receives (blocks ``0:start`` run, no grad)."""
    with torch.no_grad(), _blocks(decoder, 0, start, final_norm=False):
        return decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state


def upper_forward(decoder: torch.nn.Module, start: int, states: torch.Tensor, position_ids: torch.Tensor):
    """The decoder's output from blocks ``start:`` and the final norm, given block ``start``'s input."""
    with _blocks(decoder, start, None, final_norm=True):
        return decoder(inputs_embeds=states, position_ids=position_ids, use_cache=False)


def split_matches(decoder: torch.nn.Module, start: int, device: torch.device, tolerance: float = 1e-4) -> bool:
    """Whether the two parts reproduce the whole decoder on a short packed probe (relative max error)."""
    vocab = decoder.embed_tokens.num_embeddings
    input_ids = torch.tensor([[i % vocab for i in (11, 12, 13, 14, 15, 21, 22, 23)]], device=device)
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]], device=device)
    with torch.no_grad():
        whole = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state.float()
        states = lower_states(decoder, start, input_ids, position_ids)
        parts = upper_forward(decoder, start, states, position_ids).last_hidden_state.float()
    scale = whole.abs().max().item() or 1.0
    return (parts - whole).abs().max().item() <= tolerance * scale
