"""Hugging Face ``generate`` backend: batched, left-padded, with per-row LoRA adapters.

Used on CPU, in tests, and wherever vLLM is not installed. Rows are sorted by prompt length before
batching so that padding stays small, then put back in order. It generates with the bound model
itself, so base weights changed in memory (merges, full fine-tuning) are used at once:
``base_weights_changed`` is the interface's no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch

from seal_pl.errors import check_choice
from seal_pl.generation.base import GeneratorBackend, Prompt, SamplingParams, cut_at_stop, render_prompt
from seal_pl.models.loading import Precision
from seal_pl.models.rng import seeded


class HFGenerator(GeneratorBackend):
    """Generation through ``model.generate``.

    Args:
        batch_size: prompts per ``generate`` call.
        precision: ``fp32`` or ``bf16`` (autocast).
    """

    def __init__(self, batch_size: int = 32, precision: Precision = "fp32"):
        check_choice(precision, "precision", get_args(Precision))
        self.batch_size = batch_size
        self.precision = precision

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        adapter_slots: Sequence[int] | None = None,
    ) -> list[str]:
        self.check_call(prompts, adapter_slots, ready=self.model is not None)
        tokenizer, model = self.tokenizer, self.model
        rendered = [render_prompt(tokenizer, p) for p in prompts]
        encoded = [tokenizer(text, add_special_tokens=not templated)["input_ids"] for text, templated in rendered]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(prompts)
        device = model.device
        do_sample = params.temperature > 0
        with seeded(params.seed):
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                if adapter_slots is not None and not do_sample:
                    # Rows of one adapter side by side: the bank then adds each adapter's update to a
                    # run of rows instead of gathering and scattering them (same width, same answers;
                    # sampled rows keep their order, so their random draws do not move).
                    chunk = sorted(chunk, key=lambda i: adapter_slots[i])
                width = max(len(encoded[i]) for i in chunk)
                ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, i in enumerate(chunk):
                    n = len(encoded[i])
                    ids[row, width - n :] = torch.tensor(encoded[i])
                    mask[row, width - n :] = 1
                slots = None if adapter_slots is None else [adapter_slots[i] for i in chunk]
                kwargs = {
                    "max_new_tokens": params.max_new_tokens,
                    "do_sample": do_sample,
                    "pad_token_id": tokenizer.pad_token_id,
                    "eos_token_id": tokenizer.eos_token_id,
                }
                if do_sample:
                    kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                if params.stop:
                    kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
                route = self.bank.route(slots) if self.bank is not None else _null()
                autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
                with route, autocast:
                    generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
                new_tokens = generated[:, width:]
                for row, i in enumerate(chunk):
                    text = tokenizer.decode(new_tokens[row], skip_special_tokens=True)
                    outputs[i] = cut_at_stop(text, params.stop)
        return outputs


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None
