"""A GPU readiness check for seal-pl: one command, one JSON report, under 8 minutes on one GPU.

Checks, in this order; each runs isolated (a failure is recorded with its error text and the next
check runs):

1. ``bench``: the inner-loop benchmark (``train_adapters`` and ``load_self_edits`` imported from
   ``scripts/bench_inner_loop.py``) on a 1B-class Llama built from a transformers config, with
   random weights and nothing downloaded (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192,
   vocab 32000, tied embeddings: 1.04B parameters; the byte-level tokenizer of the tiny model, so a
   text has about 4x the tokens a BPE tokenizer gives it). K = 1, 8, 32, 64 LoRA adapters (r 32 on
   q_proj and v_proj, one per knowledge self-edit, trained together, packed), bf16 weights and bf16
   autocast, 2 epochs after 2 untimed warm-up steps. Per K: optimizer-step time, training tokens/s,
   achieved FLOP/s (4 x parameters x processed tokens: frozen base, forward plus input gradients),
   MFU against the device's dense bf16 peak (datasheet value for H100/H200/A100, otherwise the
   matmul peak measured in this run), the fraction of that measured peak, and peak GPU memory
   (``torch.cuda.max_memory_allocated``, reset before every K).
2. ``restem``: a tiny 1-round ``seal restem`` (E-step and M-step: 2 stages) with the tiny random
   model and ``trainer.accelerator: gpu`` in a temp run directory; ok when the command exits 0,
   ``results.json`` holds one round and ``machine.json`` names the device it ran on.
3. ``ddp``: a 2-process DDP ``seal test`` (knowledge demo config on the tiny model, composed with
   ``configs/trainer/gpu.yaml`` and ``--trainer.devices 2``); ok when ``results.json`` counts every
   passage and both ranks wrote their shard. Skipped, with the reason, without two GPUs.
4. ``vllm``: a tiny ``seal test`` whose generator is ``seal_pl.generation.vllm.VLLMGenerator``, on a
   tiny random model written for it (attention heads 64 wide, a size every vLLM attention backend
   takes; the default tiny model's are 16). Skipped, with the reason, without vLLM.

The ``seal`` commands run as subprocesses (``python -m seal_pl``) with a timeout each (restem 240 s,
ddp 180 s, vllm 300 s, and never past ``--time-limit``); on a timeout their whole process group is
killed. Their output goes to ``<report stem>_logs/<check>.log`` next to the report. The report is
rewritten after every check, so an interrupted run still leaves one. Exit status 0 when no check
failed (skips are not failures), 1 otherwise.

Report (``--out``): ``environment`` (device name, GPU count and memory, torch, CUDA and cuDNN
versions, package versions), ``options``, ``checks`` (one entry per check, selected or not, each with
``status`` ok/failed/skipped, ``reason`` for a skip, ``error`` for a failure, ``seconds`` and
check-specific ``details``: the benchmark's per-K rows and peaks; the command, log and outputs of the
others), ``total_seconds`` and ``ok``.

    python scripts/gpu_check.py --out gpu_check.json                  # on a GPU machine, < 8 minutes
    python scripts/gpu_check.py --checks bench --ks 1 64 --out b.json  # a subset
    python scripts/gpu_check.py --device cpu --tiny --out r.json       # anywhere, in well under a minute

``--tiny`` swaps the 1B model for the tiny one (2 layers, hidden 64) and K for 1, 2, 1 epoch and 1
warm-up step, and measures the matmul peak on 1024-wide products on a CPU. With ``--device cpu`` the
benchmark keeps fp32 weights (bf16 autocast still), the restem check runs on the CPU, and ddp/vllm
are skipped.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

CHECKS = ("bench", "restem", "ddp", "vllm")
GPU_MODEL = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "num_layers": 16,
    "num_heads": 32,
    "num_kv_heads": 8,
    "intermediate_size": 8192,
}
GPU_KS = [1, 8, 32, 64]
TINY_KS = [1, 2]
LR = 1e-3
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, matched in order on the name.
KNOWN_BF16_PEAKS = (
    ("GH200", 989e12),
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
)
TIMEOUTS = {"restem": 240, "ddp": 180, "vllm": 300}
MIN_COMMAND_SECONDS = 30
ERROR_CHARS = 4000
PACKAGES = ("seal-pl", "transformers", "lightning", "peft", "jsonargparse", "tensorboard", "vllm")
# A check's `seal` command must not inherit a surrounding run's directory, lock or distributed ranks.
ISOLATED_ENV = (
    "SEAL_RUN_DIR", "SEAL_LOCK_PID", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
)  # fmt: skip
VLLM_GENERATOR = {
    "class_path": "seal_pl.generation.vllm.VLLMGenerator",
    "init_args": {"gpu_memory_utilization": 0.3, "enforce_eager": True},
}


class Skip(Exception):
    """The check cannot run here; the message is the recorded reason."""


class CheckFailed(Exception):
    """The check ran and failed; the message is the error text, ``details`` what it found so far."""

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message)
        self.details = details


@dataclass
class Context:
    """What every check needs: the device, the model size, where to write, and the time left."""

    device: str
    tiny: bool
    ks: list[int]
    work: Path
    logs: Path
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (tiny CPU rates stay non-zero)."""
    return float(f"{value:.{digits}g}")


def bench_module() -> ModuleType:
    """``scripts/bench_inner_loop.py`` imported as a module (it imports seal_pl and torch)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    import bench_inner_loop

    return bench_inner_loop


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        name = bench_module().cpu_model()
    except ImportError:
        name = platform.processor()
    return name or platform.machine() or "cpu"


def known_bf16_peak(device_name: str) -> float | None:
    """The datasheet dense bf16 FLOP/s of a known GPU (H100, H200, A100 families), else None."""
    lowered = device_name.lower()
    return next((peak for key, peak in KNOWN_BF16_PEAKS if key.lower() in lowered), None)


def environment(device: str) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    on_gpu = device == "cuda" and cuda
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if on_gpu else cpu_name(),
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if on_gpu else None,
        "cuda_available": cuda,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {name: package_version(name) for name in PACKAGES},
    }


# ------------------------------------------------------------------------------------- bench
def check_bench(ctx: Context) -> dict[str, Any]:
    """The inner-loop benchmark at every K on one model, in this process."""
    import torch

    from seal_pl.inner.flops import adapter_training_flops, peak_matmul_flops
    from seal_pl.models.tiny import build_tiny_model, build_tiny_tokenizer

    bench = bench_module()
    device = ctx.device
    on_gpu = device == "cuda"
    tokenizer = build_tiny_tokenizer()
    shape = {"vocab_size": len(tokenizer)} if ctx.tiny else dict(GPU_MODEL)
    dtype = torch.bfloat16 if on_gpu else torch.float32  # bf16 autocast either way
    epochs, warmup_steps = (1, 1) if ctx.tiny else (2, 2)
    with torch.device(device):
        model = build_tiny_model(**shape)
    model.to(device=device, dtype=dtype).requires_grad_(False).eval()
    n_params = sum(p.numel() for p in model.parameters())
    model_gpu_mb = round(torch.cuda.memory_allocated() / 2**20) if on_gpu else None
    measured = peak_matmul_flops("bf16", device, size=1024 if ctx.tiny else 2048, repeats=3 if ctx.tiny else 10)
    datasheet = known_bf16_peak(torch.cuda.get_device_name(0)) if on_gpu else None
    reference = datasheet or measured
    edits = bench.load_self_edits(max(ctx.ks))
    details: dict[str, Any] = {
        "model": {
            **shape,
            "n_params": n_params,
            "weights_dtype": str(dtype).removeprefix("torch."),
            "tokenizer": "byte-level (seal_pl.models.tiny)",
        },
        "model_gpu_mb": model_gpu_mb,
        "lora": {"r": 32, "alpha": 64, "target_modules": ["q_proj", "v_proj"]},
        "precision": "bf16 autocast",
        "padding": "packed",
        "epochs": epochs,
        "warmup_steps": warmup_steps,
        "lr": LR,
        "distinct_self_edits": len(edits),
        "peak_flops": {
            "measured_bf16": sig(measured),
            "datasheet_bf16": datasheet,
            "mfu_against": "datasheet" if datasheet else "measured",
        },
        "rows": [],
    }
    print(f"[gpu_check] bench: {n_params / 1e9:.3f}B parameters on {device}, peak {reference / 1e12:.1f} TFLOP/s")
    for k in ctx.ks:
        row: dict[str, Any] = {"k": k}
        try:
            if on_gpu:
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            jobs = [edits[i % len(edits)] for i in range(k)]  # more adapters than distinct self-edits: cycled
            result = bench.train_adapters(
                model, tokenizer, jobs, epochs, LR, k, "bf16", "packed", device, warmup_steps=warmup_steps
            )
            seconds, steps = result["seconds"], result["steps"]
            flops = adapter_training_flops(n_params, result["processed_tokens"]) / seconds
            row.update(
                status="ok",
                steps=steps,
                seconds=round(seconds, 3),
                step_ms=sig(1000 * seconds / max(1, steps)),
                train_tokens=result["real_tokens"],
                processed_tokens=result["processed_tokens"],
                train_tokens_per_s=sig(result["real_tokens"] / seconds),
                processed_tokens_per_s=sig(result["processed_tokens"] / seconds),
                achieved_flops=sig(flops),
                mfu=sig(flops / reference),
                fraction_of_measured_peak=sig(flops / measured),
                peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20) if on_gpu else None,
                mean_loss=round(result["mean_loss"], 4),
            )
            print(
                f"[gpu_check] bench K={k}: {row['step_ms']} ms/step, {row['train_tokens_per_s']} tok/s, "
                f"{flops / 1e12:.2f} TFLOP/s, MFU {100 * row['mfu']:.1f}%",
                flush=True,
            )
        except Exception as error:  # noqa: BLE001 - one K failing (out of memory, say) must not stop the others
            row.update(status="failed", error=f"{type(error).__name__}: {error}"[:ERROR_CHARS])
            print(f"[gpu_check] bench K={k}: failed: {row['error'][:200]}", flush=True)
        details["rows"].append(row)
    del model
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()  # the seal commands that follow get the memory back
    ok_rows = [r for r in details["rows"] if r["status"] == "ok"]
    if ok_rows:
        best = max(ok_rows, key=lambda r: r["mfu"])
        details["summary"] = (
            f"best K={best['k']}: {best['step_ms']} ms/step, {best['train_tokens_per_s']} tok/s, "
            f"MFU {100 * best['mfu']:.1f}% ({details['peak_flops']['mfu_against']} peak)"
        )
    failed = [r for r in details["rows"] if r["status"] != "ok"]
    if failed:
        raise CheckFailed("; ".join(f"K={r['k']}: {r['error']}" for r in failed), details)
    return details


# ------------------------------------------------------------------------------ seal commands
def subprocess_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ISOLATED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_process(command: list[str], log_path: Path, timeout: float, env: dict[str, str]) -> int | None:
    """Run ``command`` in its own process group with output to ``log_path``; None on a timeout.

    The group is killed afterwards either way, so no rank or worker it started outlives it.
    """
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass  # the group has already ended
            process.wait()


def log_tail(path: Path, chars: int = ERROR_CHARS) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return text[-chars:]


def run_seal(ctx: Context, name: str, *arguments: str, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m seal_pl <arguments>`` for check ``name``; the details, or CheckFailed."""
    remaining = ctx.remaining()
    timeout = min(TIMEOUTS[name], remaining)
    if timeout < MIN_COMMAND_SECONDS:
        raise Skip(
            f"--time-limit leaves {max(0.0, remaining):.0f} s, under the {MIN_COMMAND_SECONDS} s a command needs"
        )
    command = [sys.executable, "-m", "seal_pl", *arguments]
    log = ctx.logs / f"{name}.log"
    details: dict[str, Any] = {"command": shlex.join(command), "log": str(log), "timeout_s": round(timeout)}
    started = time.perf_counter()
    code = run_process(command, log, timeout, {**subprocess_env(), **(extra_env or {})})
    details["command_seconds"] = round(time.perf_counter() - started, 2)
    if code is None:
        raise CheckFailed(f"timed out after {timeout:.0f} s; output tail:\n{log_tail(log)}", details)
    if code != 0:
        raise CheckFailed(f"exit code {code}; output tail:\n{log_tail(log)}", details)
    return details


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_json(path: Path, details: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        raise CheckFailed(f"the command exited 0 but wrote no {path.name} ({path})", details)
    return json.loads(path.read_text())


def restem_config(accelerator: str, data_path: Path) -> dict[str, Any]:
    """A tiny 1-round knowledge ReST-EM: 2 passages, 2 self-edits each, an E-step and an M-step."""
    estep_module = {
        "class_path": "seal_pl.lightning.KnowledgeIncorporationModule",
        "init_args": {
            "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "inner": {"lr": 1e-3, "epochs": 1, "batch_size": 4},
            "conditions": ["no_adaptation", "self_edit"],
            "n_self_edits": 2,
            "settings": {"self_edit_sampling": {"max_new_tokens": 8}, "answer_max_new_tokens": 4},
        },
    }
    return {
        "model": "tiny-random-llama",
        "rounds": 1,
        "evaluate_base": False,
        "trainer": {
            "accelerator": accelerator,
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "estep": {
            "model": estep_module,
            "data": {
                "class_path": "seal_pl.lightning.KnowledgeDataModule",
                "init_args": {"path": str(data_path), "limit": 2},
            },
        },
        "sft": {
            "model": {
                "class_path": "seal_pl.lightning.PolicySFTModule",
                "init_args": {"lora": {"r": 4, "alpha": 8}, "lr": 1e-2},
            },
            "data": {
                "class_path": "seal_pl.lightning.SFTDataModule",
                "init_args": {"batch_size": 2, "max_length": 4096},
            },
            "trainer": {"max_epochs": 1},
        },
    }


def check_restem(ctx: Context) -> dict[str, Any]:
    expected = "cuda" if ctx.device == "cuda" else "cpu"
    accelerator = "gpu" if ctx.device == "cuda" else "cpu"
    run_dir = ctx.work / "restem"
    config = write_yaml(ctx.work / "restem.yaml", restem_config(accelerator, ROOT / "data/knowledge/train.json"))
    details = run_seal(ctx, "restem", "restem", "--config", str(config), "--run_dir", str(run_dir))
    results = read_json(run_dir / "results.json", details)
    machine = read_json(run_dir / "machine.json", details)
    summary_path = run_dir / "round_0" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    details.update(
        accelerator=accelerator,
        rounds=len(results.get("rounds") or []),
        machine=machine,
        kept=(summary.get("estep") or {}).get("kept"),
        sft_trained=(summary.get("sft") or {}).get("trained"),
        timing=summary.get("timing"),
    )
    if details["rounds"] != 1 or not summary:
        raise CheckFailed(f"results.json lists {details['rounds']} rounds (expected 1 with its summary.json)", details)
    if machine.get("device") != expected:
        raise CheckFailed(f"machine.json says the run used {machine.get('device')!r}, expected {expected!r}", details)
    details["summary"] = f"1 round on {expected} ({details['command_seconds']} s), results.json written"
    return details


# ------------------------------------------------------------------------------- seal test
def knowledge_test_config(model: str, limit: int, generator: dict[str, Any] | None = None) -> dict[str, Any]:
    """configs/knowledge/demo.yaml cut down for a smoke run: ``model``, ``limit`` passages, 1 epoch,
    8-token self-edits, 4-token answers, on one GPU (a trainer config given after it may change that)."""
    import yaml

    config = yaml.safe_load((ROOT / "configs/knowledge/demo.yaml").read_text())
    init = config["model"]["init_args"]
    init["model"] = model
    init["inner"]["epochs"] = 1
    init["settings"]["self_edit_sampling"]["max_new_tokens"] = 8
    init["settings"]["answer_max_new_tokens"] = 4
    if generator is not None:
        init["generator"] = generator
    data = config["data"]["init_args"]
    data["limit"] = limit
    for key in ("path", "self_edits_path"):
        if data.get(key):
            data[key] = str(ROOT / data[key])
    config["trainer"].update(accelerator="gpu", devices=1, enable_progress_bar=False, enable_model_summary=False)
    return config


def check_knowledge_results(run_dir: Path, limit: int, details: dict[str, Any], ranks: int) -> None:
    results = read_json(run_dir / "results.json", details)
    shards = [run_dir / f"passages.rank{rank}.jsonl" for rank in range(ranks)]
    details.update(
        n_passages=results.get("n_passages"),
        conditions={name: row.get("accuracy") for name, row in (results.get("conditions") or {}).items()},
        shards=[shard.name for shard in shards if shard.is_file()],
    )
    if results.get("n_passages") != limit:
        raise CheckFailed(f"results.json counts {results.get('n_passages')} passages, expected {limit}", details)
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise CheckFailed(f"no shard from every rank: {', '.join(missing)} missing", details)


def check_ddp(ctx: Context) -> dict[str, Any]:
    if ctx.device != "cuda":
        raise Skip(
            "DDP over NCCL needs --device cuda and 2 GPUs (2 CPU processes over gloo are covered by "
            "tests/cli/test_knowledge_cli.py)"
        )
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        raise Skip(f"needs 2 GPUs, {count} visible")
    limit = 4
    run_dir = ctx.work / "ddp"
    config = write_yaml(ctx.work / "ddp.yaml", knowledge_test_config("tiny-random-llama", limit))
    details = run_seal(
        ctx, "ddp", "test", "--config", str(config), "--config", str(ROOT / "configs/trainer/gpu.yaml"),
        "--trainer.devices", "2", "--run_dir", str(run_dir),
    )  # fmt: skip
    check_knowledge_results(run_dir, limit, details, ranks=2)
    details["summary"] = f"2 ranks, {limit} passages merged ({details['command_seconds']} s)"
    return details


def save_vllm_model(directory: Path) -> Path:
    """A tiny random Llama whose attention heads are 64 wide (a size every vLLM attention backend
    takes; the default tiny model's are 16) and whose context is 4096 (room for a passage's prompt)."""
    from seal_pl.models.tiny import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(
        vocab_size=len(tokenizer), hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=512
    )
    model.config.max_position_embeddings = 4096
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def check_vllm(ctx: Context) -> dict[str, Any]:
    installed = importlib.util.find_spec("vllm") is not None
    if ctx.device != "cuda":
        raise Skip("vLLM runs on a GPU (--device cuda)" + ("" if installed else "; vLLM is not installed either"))
    if not installed:
        raise Skip("vLLM is not installed (pip install 'seal-pl[vllm]' on the GPU machine)")
    limit = 2
    run_dir = ctx.work / "vllm"
    model_dir = save_vllm_model(ctx.work / "vllm-model")
    config = write_yaml(ctx.work / "vllm.yaml", knowledge_test_config(str(model_dir), limit, VLLM_GENERATOR))
    details = run_seal(
        ctx, "vllm", "test", "--config", str(config), "--run_dir", str(run_dir),
        extra_env={"VLLM_WORKER_MULTIPROC_METHOD": "spawn"},
    )  # fmt: skip
    details["vllm"] = package_version("vllm")
    check_knowledge_results(run_dir, limit, details, ranks=1)
    details["summary"] = f"vLLM {details['vllm']}: {limit} passages ({details['command_seconds']} s)"
    return details


# ------------------------------------------------------------------------------------ driver
CHECK_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "bench": check_bench,
    "restem": check_restem,
    "ddp": check_ddp,
    "vllm": check_vllm,
}


def release_gpu_memory() -> None:
    """Hand this process's cached GPU memory back (the next check's subprocess may need it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def report_entry(status: str, *, reason: str | None = None, error: str | None = None) -> dict[str, Any]:
    """A check's entry in the report (its seconds and details are filled in when it runs)."""
    return {"status": status, "reason": reason, "error": error, "seconds": 0.0, "details": {}}


def run_check(name: str, ctx: Context) -> dict[str, Any]:
    """One check, isolated: its status, reason or error, seconds and details."""
    entry = report_entry("ok")
    started = time.perf_counter()
    print(f"[gpu_check] {name}: running", flush=True)
    try:
        entry["details"] = CHECK_FUNCTIONS[name](ctx)
    except Skip as skip:
        entry.update(status="skipped", reason=str(skip))
    except CheckFailed as failed:
        entry.update(status="failed", error=str(failed)[-ERROR_CHARS:], details=failed.details)
    except Exception:  # noqa: BLE001 - a failing check is recorded and the next one runs
        entry.update(status="failed", error=traceback.format_exc()[-ERROR_CHARS:])
    release_gpu_memory()
    entry["seconds"] = round(time.perf_counter() - started, 2)
    print(f"[gpu_check] {name}: {entry['status']} ({entry['seconds']} s)", flush=True)
    return entry


def note(entry: dict[str, Any]) -> str:
    """One line for the table: the summary, the skip reason or the error's last line."""
    if entry["status"] == "skipped":
        text = entry["reason"] or ""
    elif entry["status"] == "failed":
        lines = [line.strip() for line in (entry["error"] or "").splitlines() if line.strip()] or [""]
        text = lines[-1]
        if lines[0].startswith(("exit code", "timed out")):  # a seal command: how it ended, then its last line
            text = lines[0].removesuffix("; output tail:") + (f": {lines[-1]}" if len(lines) > 1 else "")
    else:
        text = entry["details"].get("summary", "")
    return text if len(text) <= 110 else text[:107] + "..."


def print_tables(report: dict[str, Any]) -> None:
    bench = report["checks"].get("bench") or {}
    rows = (bench.get("details") or {}).get("rows") or []
    if rows:
        header = f"{'K':>4} {'steps':>6} {'ms/step':>9} {'tok/s':>10} {'TFLOP/s':>9} {'MFU':>7} {'of meas.':>8}"
        print(f"\n{header} {'GPU MB':>8}")
        for r in rows:
            if r["status"] != "ok":
                print(f"{r['k']:>4} failed: {r['error'][:90]}")
                continue
            gpu = r["peak_gpu_mb"] if r["peak_gpu_mb"] is not None else "-"
            measured = 100 * r["fraction_of_measured_peak"]
            print(
                f"{r['k']:>4} {r['steps']:>6} {r['step_ms']:>9} {r['train_tokens_per_s']:>10} "
                f"{r['achieved_flops'] / 1e12:>9.3f} {100 * r['mfu']:>6.1f}% {measured:>7.1f}% {gpu:>8}"
            )
    env = report["environment"] or {}
    print(f"\ndevice: {env.get('device_name')} (torch {env.get('torch')}, CUDA {env.get('cuda')})")
    print(f"{'check':<8} {'status':<8} {'seconds':>8}  result")
    for name, entry in report["checks"].items():
        print(f"{name:<8} {entry['status']:<8} {entry['seconds']:>8}  {note(entry)}")


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(report, indent=2) + "\n")
    staging.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where the checks run (default cuda)")
    parser.add_argument(
        "--tiny", action="store_true", help="benchmark the tiny model at K = 1, 2 instead of the 1B model (test suite)"
    )
    parser.add_argument("--out", default="gpu_check.json", help="the JSON report (default gpu_check.json)")
    parser.add_argument(
        "--checks", nargs="+", choices=CHECKS, default=list(CHECKS), metavar="CHECK",
        help=f"checks to run, of {', '.join(CHECKS)} (default all; the others are reported as skipped)",
    )  # fmt: skip
    parser.add_argument(
        "--ks",
        nargs="+",
        type=int,
        metavar="K",
        help="adapter counts of the benchmark (default 1 8 32 64; --tiny: 1 2)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=450.0, metavar="SECONDS",
        help="overall budget (default 450): a seal command gets at most the time left, and is skipped when that is "
        f"under {MIN_COMMAND_SECONDS} s; the benchmark runs in this process and is not cut off",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.ks is not None and any(k < 1 for k in args.ks):
        parser.error("--ks: every K must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    out = Path(args.out)
    logs = out.with_name(out.stem + "_logs")
    logs.mkdir(parents=True, exist_ok=True)
    ks = args.ks or (TINY_KS if args.tiny else GPU_KS)
    report: dict[str, Any] = {
        "script": "scripts/gpu_check.py",
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": {
            "device": args.device,
            "tiny": args.tiny,
            "checks": list(args.checks),
            "ks": ks,
            "time_limit_s": args.time_limit,
        },
        "environment": None,
        "checks": {},
        "finished_at": None,
        "total_seconds": None,
        "ok": None,
    }
    try:
        report["environment"] = environment(args.device)
    except Exception:  # noqa: BLE001 - a report without its environment beats no report
        report["environment"] = {"error": traceback.format_exc()[-ERROR_CHARS:]}
    write_report(out, report)
    no_cuda = args.device == "cuda" and not (report["environment"] or {}).get("cuda_available")
    work = Path(tempfile.mkdtemp(prefix="seal-gpu-check-"))
    ctx = Context(args.device, args.tiny, ks, work, logs, started + args.time_limit)
    try:
        for name in CHECKS:
            if name not in args.checks:
                report["checks"][name] = report_entry("skipped", reason="not selected (--checks)")
            elif no_cuda:
                error = f"--device cuda, but torch {report['environment'].get('torch')} sees no CUDA device"
                report["checks"][name] = report_entry("failed", error=error)
            else:
                report["checks"][name] = run_check(name, ctx)
            write_report(out, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["finished_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report["total_seconds"] = round(time.monotonic() - started, 2)
    report["ok"] = all(entry["status"] != "failed" for entry in report["checks"].values())
    write_report(out, report)
    print_tables(report)
    print(f"\n{'all checks passed or were skipped' if report['ok'] else 'some checks FAILED'}; report: {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
