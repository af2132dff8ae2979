"""vLLM generator backend (optional extra: ``pip install seal-pl[vllm]`` on a GPU machine).

Same interface as :class:`~seal_pl.generation.hf.HFGenerator`: self-edit sampling and LoRA-aware
evaluation. Each adapter slot of the bound :class:`~seal_pl.inner.lora.AdapterBank` that a prompt asks
for is written as a PEFT adapter folder under ``adapter_dir`` (a RAM-backed ``/dev/shm`` folder by
default, so nothing touches the disk) and served with a ``LoRARequest``; a slot gets a fresh LoRA id
every time its weights change, and up to ``max_loras`` adapters are batched in one ``generate`` call.

vLLM is imported lazily: selecting this backend without vLLM installed is a clear error, and the
rest of seal-pl never needs it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
        max_lora_rank: the largest LoRA rank served.
        max_model_len: context length.
        tensor_parallel_size: GPUs per model.
        adapter_dir: where adapter folders are written (default: a temp dir in /dev/shm when present).
        enforce_eager: disable CUDA graphs (faster start, slower decode).
    """

    def __init__(
        self,
        gpu_memory_utilization: float = 0.5,
        max_loras: int = 16,
        max_lora_rank: int = 128,
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        adapter_dir: str | None = None,
        enforce_eager: bool = False,
    ):
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.tensor_parallel_size = tensor_parallel_size
        self.adapter_dir = adapter_dir
        self.enforce_eager = enforce_eager
        self._llm = None
        self._ids = itertools.count(1)
        self._served: dict[int, tuple[str, object]] = {}

    def bind(self, model, tokenizer, bank=None) -> VLLMGenerator:
        super().bind(model, tokenizer, bank)
        vllm = _require_vllm()
        if self.bank is not None and self.bank.slots > self.max_loras:
            raise ValueError(f"max_loras={self.max_loras} is smaller than the adapter bank ({self.bank.slots} slots)")
        root = self.adapter_dir or (
            tempfile.mkdtemp(dir="/dev/shm") if os.path.isdir("/dev/shm") else tempfile.mkdtemp()
        )
        self._root = Path(root)
        self._llm = vllm.LLM(
            model=model.config._name_or_path,
            tokenizer=model.config._name_or_path,
            enable_lora=self.bank is not None,
            max_loras=self.max_loras,
            max_lora_rank=self.max_lora_rank,
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
            tensor_parallel_size=self.tensor_parallel_size,
            enforce_eager=self.enforce_eager,
        )
        return self

    def _fingerprint(self, slot: int) -> str:
        digest = hashlib.sha1()
        for layer in self.bank.layers.values():
            digest.update(layer.lora_B[slot].detach().float().cpu().numpy().tobytes()[:4096])
            digest.update(str(float(layer.lora_B[slot].detach().abs().sum())).encode())
        return digest.hexdigest()

    def _lora_request(self, slot: int):
        from vllm.lora.request import LoRARequest

        fingerprint = self._fingerprint(slot)
        served = self._served.get(slot)
        if served is None or served[0] != fingerprint:
            lora_id = next(self._ids)
            folder = self.bank.save_peft(slot, self._root / f"adapter-{lora_id}", self.model.config._name_or_path)
            served = (fingerprint, LoRARequest(f"slot{slot}-{lora_id}", lora_id, str(folder)))
            self._served[slot] = served
        return served[1]

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        adapter_slots: Sequence[int] | None = None,
    ) -> list[str]:
        self.check_call(prompts, adapter_slots, ready=self._llm is not None)
        vllm = _require_vllm()
        texts = [render_prompt(self.tokenizer, p)[0] for p in prompts]
        sampling = vllm.SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
        )
        requests = None
        if adapter_slots is not None and self.bank is not None:
            requests = [None if slot is None or slot < 0 else self._lora_request(slot) for slot in adapter_slots]
        outputs = self._llm.generate(texts, sampling, lora_request=requests, use_tqdm=False)
        return [cut_at_stop(out.outputs[0].text, params.stop) for out in outputs]
