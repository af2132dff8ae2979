"""The ReST-EM M-step: supervised fine-tuning of the policy on its kept self-edits.

``seal fit`` trains :class:`PolicySFTModule` on the (prompt, completion) pairs of
:class:`SFTDataModule`, loss on the completion only, with a PEFT LoRA adapter merged at the end or
fully fine-tuned. Rank 0 saves the merged model and tokenizer to ``output_dir`` (the next round's
policy and learner) and writes ``seal_policy.json`` there last: its presence marks a finished
M-step. DDP works; sharded strategies (FSDP, ZeRO-3) do not (the merge needs the whole model). The
effective batch is ``batch_size`` x ``accumulate_grad_batches`` x processes (reference knowledge:
1 x 5 x 2 GPUs; ARC: 5 x 1 x 1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch
from jsonargparse.typing import NonNegativeFloat, PositiveFloat
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from seal_pl.errors import OptionError
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.sequences import TokenizedSequence, collate
from seal_pl.inner.trainer import Schedule, check_choice, check_fraction, check_optimizer_options
from seal_pl.lightning.base import scheduled_adamw_config
from seal_pl.models.loading import DTYPES, Dtype, load_model_and_tokenizer
from seal_pl.pipelines.sft import (
    SFT_LORA,
    policy_info,
    save_policy,
    sft_examples,
    sft_rows,
    sft_sequence,
    trainable_policy,
)
from seal_pl.records import SFTExample, read_records

__all__ = ["SFT_LORA", "PolicySFTModule", "SFTDataModule", "sft_sequence"]


class SFTDataModule(pl.LightningDataModule):
    """(prompt, completion) pairs from a JSONL file: ``{"prompt": str | messages, "completion": str}``.

    Args:
        path: the SFT set (written by the ReST-EM filter stage).
        batch_size: sequences per device per step.
        max_length: truncate longer sequences (a pair whose completion is cut off entirely is left
            out with a warning; the reference uses the longest pair's length).
        shuffle: shuffle each epoch.
    """

    def __init__(self, path: str = "sft.jsonl", batch_size: int = 1, max_length: int = 2048, shuffle: bool = True):
        super().__init__()
        self.path = path
        self.batch_size = batch_size
        self.max_length = max_length
        self.shuffle = shuffle
        self.rows: list[TokenizedSequence] = []
        self.pad_token_id = 0

    def pairs(self) -> list[SFTExample]:
        """The pairs to train on (here: the lines of ``path``)."""
        examples = sft_examples(read_records(self.path), source=str(self.path))
        if not examples:
            raise ValueError(f"{self.path}: the SFT set is empty (nothing was kept by the filter)")
        return examples

    def setup(self, stage: str) -> None:
        tokenizer = self.trainer.lightning_module.tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        examples = self.pairs()
        self.rows, dropped = sft_rows(tokenizer, examples, max_length=self.max_length)
        if dropped:
            rank_zero_warn(
                f"{self.path}: {dropped} of {len(examples)} pairs have no completion token within max_length "
                f"{self.max_length} and are left out; raise data.init_args.max_length"
            )
        if not self.rows:
            raise ValueError(f"{self.path}: no pair has a completion token within max_length {self.max_length}")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.rows,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            collate_fn=lambda rows: collate(rows, self.pad_token_id),
        )


class PolicySFTModule(pl.LightningModule):
    """Fine-tune the policy on kept self-edits; save the merged result.

    Args:
        model: the current policy (name or folder).
        dtype: weights dtype of the loaded policy (float32, or bfloat16 to halve memory; with
            ``trainer.precision: bf16-mixed`` float32 weights are trained under bf16 autocast).
        protocol: ``lora`` (a PEFT LoRA adapter, merged into the weights at the end) or ``full``
            (full fine-tuning; ``lora`` is then unused).
        lora: the adapter shape, default :data:`SFT_LORA` = the reference knowledge M-step: r 64,
            alpha 128, dropout 0 on all attention and MLP projections (q, k, v, o, gate, up, down);
            the reference ARC M-step uses r 16 / alpha 16 on q, v, gate, down, up. ``layers`` selects
            transformer blocks (PEFT's ``layers_to_transform``; negative counts from the top).
            ``init_seed`` is not used here: PEFT draws the initial ``A`` matrices from the run's
            seed (``seed_everything``).
        lr: peak learning rate (reference: knowledge 3e-4, ARC 5e-5).
        weight_decay: AdamW weight decay.
        schedule: linear, cosine or constant (anything else is refused when the config is parsed).
        warmup_ratio: warm-up as a fraction of all steps.
        output_dir: where the merged policy is saved (default ``<run_dir>/policy``).
        gradient_checkpointing: recompute activations in the backward pass (less memory, slower;
            the reference enables it).
        save_dtype: dtype of the saved policy (float32, bfloat16, float16; null: as trained). The
            reference saves its merged models in half precision.
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        dtype: Dtype = "float32",
        protocol: Literal["lora", "full"] = "lora",
        lora: LoRASpec = SFT_LORA,
        lr: PositiveFloat = 3e-4,
        weight_decay: NonNegativeFloat = 0.0,
        schedule: Schedule = "linear",
        warmup_ratio: NonNegativeFloat = 0.0,
        output_dir: str | None = None,
        gradient_checkpointing: bool = False,
        save_dtype: Dtype | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model_name = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.warmup_ratio = warmup_ratio
        self.output_dir = output_dir
        if save_dtype is not None and save_dtype not in DTYPES:
            raise OptionError(f"save_dtype must be one of {', '.join(DTYPES)} or null, got {save_dtype!r}")
        check_optimizer_options(lr, weight_decay, schedule, warmup_ratio)
        check_choice(protocol, "protocol", ("lora", "full"))
        if protocol == "lora":
            check_fraction(lora.dropout, "lora.dropout")
        self.protocol = protocol
        self.lora_spec = dataclasses.replace(lora)  # a copy: the default is shared
        self.save_dtype = save_dtype
        self.losses: list[tuple[int, float]] = []
        policy, self.tokenizer = load_model_and_tokenizer(model, dtype)
        self.policy = trainable_policy(
            policy, self.lora_spec if protocol == "lora" else None, gradient_checkpointing=gradient_checkpointing
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.policy(**batch).loss
        self.log("sft/loss", loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].size(0))
        self.losses.append((self.global_step, float(loss.detach())))
        return loss

    def configure_optimizers(self):
        return scheduled_adamw_config(self, self.policy)

    def on_train_start(self) -> None:
        self.policy.train()

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        target = Path(self.output_dir or Path(self.trainer.default_root_dir) / "policy")
        rows = len(getattr(self.trainer.datamodule, "rows", []))
        info = policy_info(self.model_name, rows, self.global_step, self.losses)
        dtype = DTYPES[self.save_dtype] if self.save_dtype is not None else None
        save_policy(self.policy, self.tokenizer, target, dtype=dtype, info=info)
        rank_zero_info(f"Saved the merged policy to {target}")
