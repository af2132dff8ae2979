"""vLLM generator backend (optional extra: ``pip install seal-pl[vllm]`` on a GPU machine).

Same interface as :class:`~seal_pl.generation.hf.HFGenerator`: self-edit sampling and LoRA-aware
evaluation. Each adapter slot of the bound :class:`~seal_pl.inner.lora.AdapterBank` that a prompt asks
for is written as a PEFT adapter folder (bf16) under ``adapter_dir`` (by default a RAM-backed
``/dev/shm`` folder when it has room, otherwise a temp dir on disk) and served with a
``LoRARequest``; a slot gets a fresh LoRA id when its weights changed (the bank's per-slot version
counter, no copy of the weights to the host), the superseded folder is deleted, and up to
``max_loras`` adapters are batched in one ``generate`` call.

Base weights. The engine is first built on the model's folder (``config._name_or_path``). The HF
model in memory can later differ from that folder: a continual-learning merge, full fine-tuning
(CPT ``protocol: full``), a restore of the base weights. Every such path calls
:meth:`~seal_pl.generation.base.GeneratorBackend.base_weights_changed`; the next ``generate`` then
exports the current base weights (the adapters' base layers unwrapped, no adapter tensors) as a
Hugging Face folder (safetensors, config, generation config, tokenizer; in the model's dtype when it
is 16-bit, else bf16, the precision vLLM serves) under the adapter root (on disk instead when that
root is too small for it), drops the old engine, builds a new one on the folder and deletes the
superseded export. ``restored=True`` (the weights the backend was bound with are back) rebuilds on
the original folder without an export. Without a change nothing is exported or rebuilt, and
several changes between two ``generate`` calls cost one rebuild.

GPU placement. Under DDP every rank builds its own engine on its own GPU: the ``device`` argument
(``cuda:N``) when set, else the bound model's CUDA device, else the process's current CUDA device
when CUDA is initialised (Lightning sets it to the rank's GPU before ``setup``), else ``cuda:LOCAL_RANK``
when the launcher set ``LOCAL_RANK``; with none of these vLLM picks as usual. While the engine is
built, the calling process's current device is set to that GPU and ``CUDA_VISIBLE_DEVICES`` names only
that GPU (its physical id, mapped through an existing ``CUDA_VISIBLE_DEVICES``), so the engine
process vLLM starts sees that one GPU as its ``cuda:0``; the variable is restored right after. A
rank's engine uses one GPU: ``tensor_parallel_size > 1`` with more than one process is refused.

Prompts reach vLLM as the token ids the Hugging Face path would use (a chat template that already
holds the BOS token gets no second one), every prompt has its own sampling seed (``seed + i`` for
the i-th prompt of a call: the K samples of one prompt differ and stay reproducible), and a prompt
that cannot fit ``max_model_len`` with its ``max_new_tokens`` is refused, naming it.

vLLM is imported lazily: selecting this backend without vLLM installed is a clear error, and the
rest of seal-pl never needs it.
"""

from __future__ import annotations

import copy
import gc
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from seal_pl.errors import OptionError, UserError
from seal_pl.generation.base import GeneratorBackend, Prompt, SamplingParams, cut_at_stop, render_prompt
from seal_pl.inner.lora import LoRALinear


class VLLMPlacementError(UserError):
    """A vLLM engine that cannot be placed on one GPU per process."""


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
    """Generation with a ``vllm.LLM`` engine on the model's folder, or on an export of its current base weights.

    Args:
        gpu_memory_utilization: fraction of GPU memory vLLM may take (leave room for training).
        max_loras: adapters served in one batch (>= the number of adapter slots).
        max_lora_rank: the largest LoRA rank served (null: the bank's rank, the smallest that works).
        max_model_len: context length (null: the model's ``max_position_embeddings``). Prompts whose
            tokens plus ``max_new_tokens`` exceed it are refused with an error naming them.
        tensor_parallel_size: GPUs per model (1 under DDP: one engine per rank).
        adapter_dir: where adapter folders and exported base weights are written (default: a temp
            dir in /dev/shm when it has at least ``min_shm_bytes`` free, otherwise a temp dir on disk).
        enforce_eager: disable CUDA graphs (faster start, slower decode).
        min_shm_bytes: free space /dev/shm needs to be used for adapter folders (Docker's default
            /dev/shm is 64 MB; a 7B q,v r=32 adapter is about 40 MB in fp32, 20 MB in bf16).
        device: the GPU of this process's engine (``cuda:N``; null: the bound model's GPU, else the
            current CUDA device, else ``cuda:$LOCAL_RANK``; see the module notes).
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
        device: str | None = None,
    ):
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.tensor_parallel_size = tensor_parallel_size
        self.adapter_dir = adapter_dir
        self.enforce_eager = enforce_eager
        self.min_shm_bytes = min_shm_bytes
        self.device = device
        self._llm = None
        self._ids = itertools.count(1)
        self._served: dict[int, tuple[int, object, Path]] = {}
        self._context = 0
        self._engine_options: dict[str, object] = {}
        self._gpu: int | None = None
        self._original = ""
        self._serving = ""
        self._export: Path | None = None
        self._exports = itertools.count(1)
        self._pending: str | None = None
        self._disk_root: Path | None = None

    def bind(self, model, tokenizer, bank=None) -> VLLMGenerator:
        super().bind(model, tokenizer, bank)
        vllm = _require_vllm()
        if self.bank is not None and self.bank.slots > self.max_loras:
            raise ValueError(f"max_loras={self.max_loras} is smaller than the adapter bank ({self.bank.slots} slots)")
        rank = self.max_lora_rank if self.max_lora_rank is not None else (self.bank.spec.r if self.bank else 16)
        if self.bank is not None and rank < self.bank.spec.r:
            raise ValueError(f"max_lora_rank={rank} is smaller than the adapters' rank {self.bank.spec.r}")
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if self.tensor_parallel_size > 1 and world > 1:
            raise VLLMPlacementError(
                f"tensor_parallel_size={self.tensor_parallel_size} with {world} processes: under DDP every rank "
                "serves its own engine on its own GPU. Set the generator's tensor_parallel_size to 1, or run "
                "a single process."
            )
        self._gpu = engine_gpu(self.device, _model_device(model), _current_cuda_device(), os.environ.get("LOCAL_RANK"))
        self._context = self.max_model_len or int(getattr(model.config, "max_position_embeddings", 0) or 4096)
        self._root = Path(self.adapter_dir) if self.adapter_dir else adapter_root(self.min_shm_bytes)
        self._root.mkdir(parents=True, exist_ok=True)
        self._engine_options = {
            "enable_lora": self.bank is not None,
            "max_loras": self.max_loras,
            "max_lora_rank": rank,
            "max_model_len": self._context,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
        }
        self._original = model.config._name_or_path
        self._pending = None
        self._build_engine(vllm, self._original)
        return self

    def base_weights_changed(self, restored: bool = False) -> None:
        """Serve the bound model's current base weights from the next ``generate`` on (see the module notes)."""
        self._pending = "original" if restored else "export"

    def _build_engine(self, vllm, folder: str) -> None:
        with engine_placement(self._gpu, self.tensor_parallel_size):
            self._llm = vllm.LLM(model=folder, tokenizer=folder, **self._engine_options)
        self._serving = folder

    def _release_engine(self) -> None:
        self._llm = None
        gc.collect()  # the engine (and the process vLLM started for it) goes with its last reference
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _reload(self, vllm) -> None:
        """Rebuild the engine on the weights the last :meth:`base_weights_changed` asked for."""
        pending, self._pending = self._pending, None
        superseded = self._export
        if pending == "original":
            if self._serving == self._original:
                return
            self._release_engine()
            self._export = None
            self._build_engine(vllm, self._original)
        else:
            dtype = export_dtype(self.model)
            folder = self._weights_root(export_bytes(self.model, dtype)) / f"base-{next(self._exports)}"
            export_base_weights(self.model, self.tokenizer, folder, dtype)
            self._release_engine()
            self._export = folder
            self._build_engine(vllm, str(folder))
        if superseded is not None:
            shutil.rmtree(superseded, ignore_errors=True)

    def _weights_root(self, size: int) -> Path:
        """Where to export ``size`` bytes of base weights: the adapter root (always when ``adapter_dir`` is
        set; else when ``min_shm_bytes`` stay free besides them), otherwise one temp dir on disk."""
        if self.adapter_dir or shutil.disk_usage(self._root).free >= size + self.min_shm_bytes:
            return self._root
        if self._disk_root is None:
            self._disk_root = Path(tempfile.mkdtemp(prefix="seal-base-weights-"))
        return self._disk_root

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
        if self._pending is not None:
            self._reload(vllm)
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


# ----------------------------------------------------------------------------------- base weights
def export_dtype(model) -> torch.dtype:
    """The dtype base weights are exported in: the model's own when it is 16-bit, else bf16."""
    dtype = getattr(model, "dtype", None)
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16


def base_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under their Hugging Face names: adapted linears unwrapped, adapter tensors left out.

    A tensor sharing its storage with an earlier one (tied input and output embeddings) is left out
    too; the config's ``tie_word_embeddings`` ties it again on loading.
    """
    wrapped = {name for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for key, value in model.state_dict().items():
        module_name, _, leaf = key.rpartition(".")
        owner, _, child = module_name.rpartition(".")
        if module_name in wrapped:
            continue  # a tensor of the adapter wrapper itself
        if owner in wrapped:
            if child != "base":
                continue  # the adapters' A and B
            key = f"{owner}.{leaf}"
        identity = (value.data_ptr(), tuple(value.shape))
        if value.numel() and identity in seen:
            continue
        seen.add(identity)
        out[key] = value
    return out


def export_bytes(model, dtype: torch.dtype) -> int:
    """Size of the export of the model's base weights in ``dtype``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return sum(
        value.numel() * (itemsize if value.is_floating_point() else value.element_size())
        for value in base_state_dict(model).values()
    )


def export_base_weights(model, tokenizer, directory: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write the model's current base weights as a Hugging Face folder vLLM can load.

    ``model.safetensors`` (floating-point tensors in ``dtype``), ``config.json`` (its dtype set to
    ``dtype``), ``generation_config.json`` when the model has one, and the tokenizer's files.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: value.detach().to("cpu", dtype=dtype if value.is_floating_point() else value.dtype).contiguous()
        for key, value in base_state_dict(model).items()
    }
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.config)
    config.dtype = dtype
    config.save_pretrained(directory)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# ----------------------------------------------------------------------------------- placement
def _model_device(model) -> torch.device | None:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else None


def _current_cuda_device() -> int | None:
    """The current CUDA device when CUDA is already initialised in this process (never initialises it)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.current_device()
    return None


def engine_gpu(
    requested: str | None, model_device: torch.device | None, current: int | None, local_rank: str | None
) -> int | None:
    """The CUDA index (within this process's visible GPUs) of the engine, or None to let vLLM choose.

    In order: ``requested`` (``cuda:N`` or ``N``), the model's CUDA device, the current CUDA device,
    ``LOCAL_RANK``.
    """
    if requested is not None:
        try:
            device = torch.device(f"cuda:{requested}" if str(requested).isdigit() else requested)
        except RuntimeError as error:
            raise OptionError(f"generator device must be cuda:N, got {requested!r}") from error
        if device.type != "cuda":
            raise OptionError(
                f"generator device must be a CUDA device (cuda:N): vLLM serves on a GPU, got {requested!r}"
            )
        if device.index is not None:
            return device.index
    if model_device is not None and model_device.type == "cuda" and model_device.index is not None:
        return model_device.index
    if current is not None:
        return current
    if local_rank not in (None, ""):
        return int(local_rank)
    return None


def physical_gpu(index: int, visible: str | None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry of the process's ``cuda:index`` (``visible``: the variable's value)."""
    if not visible:
        return str(index)
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if index >= len(entries):
        raise VLLMPlacementError(
            f"the vLLM engine should go on cuda:{index}, but CUDA_VISIBLE_DEVICES={visible!r} shows "
            f"{len(entries)} GPU(s). Set the generator's device to one of them, or widen CUDA_VISIBLE_DEVICES."
        )
    return entries[index]


@contextmanager
def engine_placement(gpu: int | None, tensor_parallel_size: int = 1) -> Iterator[None]:
    """While an engine is built: the current CUDA device is ``gpu`` and ``CUDA_VISIBLE_DEVICES`` names only it."""
    if gpu is None or tensor_parallel_size != 1:
        yield
        return
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = physical_gpu(gpu, saved)
    if torch.cuda.is_available():
        torch.cuda.init()  # with every GPU visible: the training side keeps its view of the devices
        torch.cuda.set_device(gpu)
    os.environ["CUDA_VISIBLE_DEVICES"] = physical
    try:
        yield
    finally:
        _restore_env("CUDA_VISIBLE_DEVICES", saved)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
