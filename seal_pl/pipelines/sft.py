"""The policy SFT of the ReST-EM M-step, without Lightning: sequences, rows, the trainable policy.

:class:`~seal_pl.lightning.PolicySFTModule` and :class:`~seal_pl.lightning.SFTDataModule` drive
these: :func:`sft_sequence` builds prompt + completion with the loss on the completion only (under
the chat template when the prompt is chat messages), :func:`sft_examples` reads a file's pairs (typed), :func:`sft_rows` tokenizes them,
:func:`trainable_policy` wraps the policy for LoRA (PEFT) or full fine-tuning, and
:func:`save_policy` merges and saves it with ``seal_policy.json`` (:func:`policy_info`) written last.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from seal_pl.errors import OptionError
from seal_pl.generation.base import render_prompt
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.sequences import TokenizedSequence, TrainSequence, tokenize_sequence
from seal_pl.records import POLICY_MARKER, SFTExample, write_json

SFT_LORA = LoRASpec(
    r=64,
    alpha=128.0,
    dropout=0.0,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)
"""The policy SFT's default adapter: the reference knowledge M-step (r 64, alpha 128, all projections)."""


def sft_sequence(tokenizer, prompt, completion: str) -> TrainSequence:
    """Prompt + completion as one sequence whose loss starts at the completion.

    A chat prompt (list of messages) is rendered with the chat template and the completion is
    closed with the template's end-of-turn text; a plain prompt is followed by the completion and EOS.
    """
    text, templated = render_prompt(tokenizer, prompt)
    if templated:
        full = tokenizer.apply_chat_template(
            list(prompt) + [{"role": "assistant", "content": completion}], tokenize=False
        )
        if full.startswith(text):
            return TrainSequence(full, completion_start=len(text), templated=True)
        start = full.rfind(completion)
        return TrainSequence(full, completion_start=max(0, start), templated=True)
    eos = tokenizer.eos_token or ""
    return TrainSequence(text + completion + eos, completion_start=len(text), templated=False)


def sft_examples(records: Iterable[dict[str, Any]], *, source: str) -> list[SFTExample]:
    """The pairs of an SFT file: the filter's :class:`~seal_pl.records.SFTExample` records, or plain
    ``{"prompt", "completion"}`` objects written by hand; ``source`` names the file in errors."""
    examples = []
    for index, record in enumerate(records):
        if not isinstance(record, dict) or "prompt" not in record or "completion" not in record:
            raise ValueError(f"{source}: record {index + 1} needs 'prompt' and 'completion'")
        if "kind" in record:
            examples.append(SFTExample.from_json(record, f"{source}: record {index + 1}"))
        else:
            examples.append(SFTExample(prompt=record["prompt"], completion=record["completion"]))
    return examples


def sft_rows(tokenizer, examples: Sequence[SFTExample], *, max_length: int) -> tuple[list[TokenizedSequence], int]:
    """The tokenized rows of the pairs and how many were left out (no completion token within
    ``max_length``)."""
    rows, dropped = [], 0
    for example in examples:
        sequence = sft_sequence(tokenizer, example.prompt, example.completion)
        row = tokenize_sequence(tokenizer, sequence, loss_on="completion", max_length=max_length)
        if row.n_loss_tokens == 0:
            dropped += 1
            continue
        rows.append(row)
    return rows, dropped


def trainable_policy(policy, lora: LoRASpec | None, *, gradient_checkpointing: bool = False):
    """The policy ready to train: a PEFT LoRA adapter with ``lora``, or every weight (``None``)."""
    if gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            layers_to_transform=block_indices(policy, lora.layers),
        )
        policy = get_peft_model(policy, config)
    else:
        policy.requires_grad_(True)
    policy.train()
    return policy


def policy_info(trained_from: str, n_examples: int, steps: int, losses: Sequence[tuple[int, float]]) -> dict:
    """``seal_policy.json``: what the policy was trained from, on how much, and every step's loss."""
    return {
        "trained_from": trained_from,
        "n_examples": n_examples,
        "optimizer_steps": steps,
        "batches_rank0": len(losses),
        "final_loss": losses[-1][1] if losses else None,
        "losses": [{"step": step, "loss": loss} for step, loss in losses],
    }


def save_policy(policy, tokenizer, target: Path, *, dtype: torch.dtype | None, info: dict) -> None:
    """Merge a LoRA-wrapped policy into its weights, save it (safetensors, in ``dtype`` if given) and
    the tokenizer to ``target``, then ``seal_policy.json`` (``info``): last, as it marks a saved policy."""
    if hasattr(policy, "merge_and_unload"):
        policy = policy.merge_and_unload()
    if dtype is not None:
        policy = policy.to(dtype)
    policy.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    write_json(target / POLICY_MARKER, info)


def block_indices(model, layers: list[int] | None) -> list[int] | None:
    """``LoRASpec.layers`` as PEFT's ``layers_to_transform`` (negative indices count from the top)."""
    if layers is None:
        return None
    n_blocks = int(model.config.num_hidden_layers)
    out = []
    for index in layers:
        if not -n_blocks <= index < n_blocks:
            raise OptionError(f"lora.layers: block {index} out of range for a model with {n_blocks} blocks")
        out.append(index % n_blocks)
    return sorted(set(out))
