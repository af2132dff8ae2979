"""The shared inner loop: LoRA adapter bank, sequence batching and the test-time trainer."""

from seal_pl.inner.lora import AdapterBank, LoRASpec
from seal_pl.inner.sequences import TrainSequence, collate, tokenize_sequence
from seal_pl.inner.trainer import AdaptJob, AdaptResult, InnerLoopConfig, InnerLoopTrainer

__all__ = [
    "AdaptJob",
    "AdaptResult",
    "AdapterBank",
    "InnerLoopConfig",
    "InnerLoopTrainer",
    "LoRASpec",
    "TrainSequence",
    "collate",
    "tokenize_sequence",
]
