"""The ReST-EM M-step: supervised fine-tuning of the policy on its kept self-edits.

``seal fit --config configs/.../sft.yaml`` trains :class:`PolicySFTModule` on the (prompt, completion)
pairs of :class:`SFTDataModule` (a JSONL file written by the filter stage) with the loss on the
completion tokens only. The policy is trained either with a PEFT LoRA adapter, merged into the
weights at the end, or fully fine-tuned. Rank 0 then saves the merged model (safetensors) and the
tokenizer to ``output_dir`` (default ``<run_dir>/policy``): that folder is both the next round's
policy and its learner, as in the reference. Runs under any Lightning strategy (DDP, multi-node).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from seal_pl.generation.base import render_prompt
from seal_pl.inner.sequences import TokenizedSequence, TrainSequence, collate, tokenize_sequence
from seal_pl.inner.trainer import _lr_lambda
from seal_pl.models.loading import load_model_and_tokenizer
from seal_pl.records import read_records


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


class SFTDataModule(pl.LightningDataModule):
    """(prompt, completion) pairs from a JSONL file: ``{"prompt": str | messages, "completion": str}``.

    Args:
        path: the SFT set (written by the ReST-EM filter stage).
        batch_size: sequences per device per step.
        max_length: truncate longer sequences.
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

    def setup(self, stage: str) -> None:
        tokenizer = self.trainer.lightning_module.tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        records = list(read_records(self.path))
        if not records:
            raise ValueError(f"{self.path}: the SFT set is empty (nothing was kept by the filter)")
        self.rows = []
        for index, record in enumerate(records):
            if "prompt" not in record or "completion" not in record:
                raise ValueError(f"{self.path}: record {index + 1} needs 'prompt' and 'completion'")
            sequence = sft_sequence(tokenizer, record["prompt"], record["completion"])
            self.rows.append(tokenize_sequence(tokenizer, sequence, loss_on="completion", max_length=self.max_length))

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
        lora_r: LoRA rank; 0 means full fine-tuning (reference: knowledge r=64, ARC r=16).
        lora_alpha: LoRA alpha (reference: knowledge 128, ARC 16).
        lora_dropout: LoRA dropout.
        target_modules: modules adapted by LoRA (reference: all attention and MLP projections).
        lr: peak learning rate (reference: knowledge 3e-4, ARC 5e-5).
        weight_decay: AdamW weight decay.
        schedule: linear, cosine or constant.
        warmup_ratio: warm-up as a fraction of all steps.
        output_dir: where the merged policy is saved (default ``<run_dir>/policy``).
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        lora_r: int = 64,
        lora_alpha: float = 128.0,
        lora_dropout: float = 0.0,
        target_modules: list[str] | None = None,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        schedule: str = "linear",
        warmup_ratio: float = 0.0,
        output_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model_name = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.warmup_ratio = warmup_ratio
        self.output_dir = output_dir
        policy, self.tokenizer = load_model_and_tokenizer(model)
        if lora_r > 0:
            from peft import LoraConfig, get_peft_model

            targets = target_modules or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            policy = get_peft_model(
                policy, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets)
            )
        else:
            policy.requires_grad_(True)
        policy.train()
        self.policy = policy

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.policy(**batch).loss
        self.log("sft/loss", loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].size(0))
        return loss

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(self.schedule, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        self.policy.train()

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        target = Path(self.output_dir or Path(self.trainer.default_root_dir) / "policy")
        policy = self.policy
        if hasattr(policy, "merge_and_unload"):
            policy = policy.merge_and_unload()
        policy.save_pretrained(target, safe_serialization=True)
        self.tokenizer.save_pretrained(target)
        (target / "seal_policy.json").write_text(json.dumps({"trained_from": self.model_name}, indent=2) + "\n")
        rank_zero_info(f"Saved the merged policy to {target}")
