"""vLLM generator backend (optional extra: ``pip install seal-pl[vllm]`` on a GPU machine).

Same interface as :class:`~seal_pl.generation.hf.HFGenerator`: self-edit sampling and LoRA-aware
evaluation. Each adapter slot of the bound :class:`~seal_pl.inner.lora.AdapterBank` that a prompt asks
for is written as a PEFT adapter folder (bf16) under ``adapter_dir`` (by default a RAM-backed
``/dev/shm`` folder when it has room, otherwise a temp dir on disk) and served with a
``LoRARequest``; a slot gets a fresh LoRA id when its weights changed (the bank's per-slot version
counter, no copy of the weights to the host), the superseded folder is deleted, and up to
``max_loras`` adapters are batched in one ``generate`` call.

Prompts reach vLLM as the token ids the Hugging Face path would use (a chat template that already
holds the BOS token gets no second one), every prompt has its own sampling seed (``seed + i`` for
the i-th prompt of a call: the K samples of one prompt differ and stay reproducible), and a prompt
that cannot fit ``max_model_len`` with its ``max_new_tokens`` is refused, naming it.

vLLM is imported lazily: selecting this backend without vLLM installed is a clear error, and the
rest of seal-pl never needs it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from seal_pl.generation.base import GeneratorBackend, Prompt, SamplingParams, cut_at_stop, render_prompt


def _require_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "The vLLM generator backend needs vLLM. On a GPU machine: pip install 'seal-pl[vllm]' "
            "(or select seal_pl.generation.HFGenerator, which runs anywhere)."
        ) from error
    return vllm


class VLLMGenerator(GeneratorBackend):
    """Generation with an in-process ``vllm.LLM`` over the same model folder.

    Args:
        gpu_memory_utilization: fraction of GPU memory vLLM may take (leave room for training).
        max_loras: adapters served in one batch (>= the number of adapter slots).
        max_lora_rank: the largest LoRA rank served (null: the bank's rank, the smallest that works).
        max_model_len: context length (null: the model's ``max_position_embeddings``). Prompts whose
            tokens plus ``max_new_tokens`` exceed it are refused with an error naming them.
        tensor_parallel_size: GPUs per model.
        adapter_dir: where adapter folders are written (default: a temp dir in /dev/shm when it has
            at least ``min_shm_bytes`` free, otherwise a temp dir on disk).
        enforce_eager: disable CUDA graphs (faster start, slower decode).
        min_shm_bytes: free space /dev/shm needs to be used for adapter folders (Docker's default
            /dev/shm is 64 MB; a 7B q,v r=32 adapter is about 40 MB in fp32, 20 MB in bf16).
    """

    def __init__(
        self,
        gpu_memory_utilization: float = 0.5,
        max_loras: int = 16,
        max_lora_rank: int | None = None,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        adapter_dir: str | None = None,
        enforce_eager: bool = False,
        min_shm_bytes: int = 1 << 30,
    ):
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.tensor_parallel_size = tensor_parallel_size
        self.adapter_dir = adapter_dir
        self.enforce_eager = enforce_eager
        self.min_shm_bytes = min_shm_bytes
        self._llm = None
        self._ids = itertools.count(1)
        self._served: dict[int, tuple[int, object, Path]] = {}
        self._context = 0

    def bind(self, model, tokenizer, bank=None) -> VLLMGenerator:
        super().bind(model, tokenizer, bank)
        vllm = _require_vllm()
        if self.bank is not None and self.bank.slots > self.max_loras:
            raise ValueError(f"max_loras={self.max_loras} is smaller than the adapter bank ({self.bank.slots} slots)")
        rank = self.max_lora_rank if self.max_lora_rank is not None else (self.bank.spec.r if self.bank else 16)
        if self.bank is not None and rank < self.bank.spec.r:
            raise ValueError(f"max_lora_rank={rank} is smaller than the adapters' rank {self.bank.spec.r}")
        self._context = self.max_model_len or int(getattr(model.config, "max_position_embeddings", 0) or 4096)
        self._root = Path(self.adapter_dir) if self.adapter_dir else adapter_root(self.min_shm_bytes)
        self._root.mkdir(parents=True, exist_ok=True)
        self._llm = vllm.LLM(
            model=model.config._name_or_path,
            tokenizer=model.config._name_or_path,
            enable_lora=self.bank is not None,
            max_loras=self.max_loras,
            max_lora_rank=rank,
            max_model_len=self._context,
            gpu_memory_utilization=self.gpu_memory_utilization,
            tensor_parallel_size=self.tensor_parallel_size,
            enforce_eager=self.enforce_eager,
        )
        return self

    def _lora_request(self, slot: int):
        from vllm.lora.request import LoRARequest

        version = self.bank.versions[slot]
        served = self._served.get(slot)
        if served is None or served[0] != version:
            if served is not None:
                shutil.rmtree(served[2], ignore_errors=True)  # superseded: its id is never asked for again
            lora_id = next(self._ids)
            folder = self.bank.save_peft(
                slot, self._root / f"adapter-{lora_id}", self.model.config._name_or_path, dtype=torch.bfloat16
            )
            served = (version, LoRARequest(f"slot{slot}-{lora_id}", lora_id, str(folder)), folder)
            self._served[slot] = served
        return served[1]

    def encode(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[list[int]]:
        """Token ids of every prompt as the Hugging Face path builds them; refuses prompts that do not fit."""
        encoded = []
        for index, prompt in enumerate(prompts):
            text, templated = render_prompt(self.tokenizer, prompt)
            ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
            if len(ids) + max_new_tokens > self._context:
                raise ValueError(
                    f"prompt {index} ({text[:60]!r}...) has {len(ids)} tokens and asks for {max_new_tokens} new "
                    f"ones: more than the context length {self._context}. Shorten it, lower max_new_tokens, or raise "
                    "the generator's max_model_len (within the model's limit)."
                )
            encoded.append(ids)
        return encoded

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        adapter_slots: Sequence[int] | None = None,
    ) -> list[str]:
        self.check_call(prompts, adapter_slots, ready=self._llm is not None)
        vllm = _require_vllm()
        encoded = self.encode(prompts, params.max_new_tokens)
        sampling = [
            vllm.SamplingParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p if params.temperature > 0 else 1.0,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop) or None,
                # vLLM seeds each request's generator with its seed: one per prompt, so that repeated
                # prompts (K self-edits of one passage) give different samples.
                seed=None if params.seed is None else params.seed + index,
            )
            for index in range(len(prompts))
        ]
        requests = None
        if adapter_slots is not None and self.bank is not None:
            requests = [None if slot is None or slot < 0 else self._lora_request(slot) for slot in adapter_slots]
        inputs = [{"prompt_token_ids": ids} for ids in encoded]
        outputs = self._llm.generate(inputs, sampling, lora_request=requests, use_tqdm=False)
        return [cut_at_stop(out.outputs[0].text, params.stop) for out in outputs]


def adapter_root(min_shm_bytes: int) -> Path:
    """A fresh folder for adapter exports: in /dev/shm when it has ``min_shm_bytes`` free, else on disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= min_shm_bytes:
        return Path(tempfile.mkdtemp(dir=shm, prefix="seal-adapters-"))
    return Path(tempfile.mkdtemp(prefix="seal-adapters-"))
