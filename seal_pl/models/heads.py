"""Split a causal LM into its decoder and a plain vocabulary head, when that is exact.

Losses and scores need logits only at a few positions (where there is a label or a candidate
token). When the model's logits are just ``head(decoder(...).last_hidden_state)`` the head can run
on those positions alone, which saves most of the vocabulary projection; models that transform
logits further (soft-capping, a logit scale) must go through their own forward.
"""

from __future__ import annotations

import torch


def decoder_and_head(model) -> tuple[torch.nn.Module | None, torch.nn.Linear | None]:
    """``(decoder, head)`` when logits equal ``head(decoder(...).last_hidden_state)``, else ``(None, None)``."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings()
    plain = (
        decoder is not None
        and isinstance(head, torch.nn.Linear)
        and not any(getattr(model.config, name, None) for name in ("final_logit_softcapping", "logit_scale"))
    )
    return (decoder, head) if plain else (None, None)
