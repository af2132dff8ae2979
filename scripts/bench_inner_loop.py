"""Benchmark the inner loop: the reference recipe against seal-pl's one-at-a-time and batched paths.

Every path trains LoRA adapters on the same self-edits (knowledge-style: implication lines plus the
passage, from data/knowledge/train_implications.jsonl) with the same model and epochs, and reports:

* adapted self-edits per hour;
* training tokens per second (real tokens only: padding is not counted as training data);
* achieved FLOP/s (4 x base parameters x processed tokens, padding included: frozen base, so
  forward + input-gradient only; LoRA and attention terms ignored), as a fraction of the machine's
  peak matrix-multiply FLOP/s measured in the same run (fp32 and bf16, 2048^3 products);
* peak resident memory of the process that ran the path (and peak GPU memory with ``--device cuda``);
* for our paths, the mean training loss over all steps of all self-edits: the same seeds and data
  in every path, so fp32 rows agree to float noise and the bf16 rows show what bf16 changes.

Paths:

1. ``reference``: the reference implementation's recipe re-created for comparison: a PEFT wrap and
   a Hugging Face ``Trainer`` per self-edit, one at a time, every sequence padded to 2048 tokens with
   the loss on the pads, batch 1;
2. ``ours-fp32-k1``: seal-pl's inner loop, one adapter at a time, fp32;
3. ``ours-<precision>-k<K>``: seal-pl's batched path with K adapters per pass, fp32 and bf16, with
   the default packed sequences (``--compare-dynamic`` adds the largest K with per-row dynamic
   padding instead, ``ours-fp32-k<K>-dynamic``, to show what packing buys).

Each path runs in its own subprocess (clean peak memory). ``--in-process`` runs them one after the
other in the benchmark's own process instead (no interpreter start per path: a quick look, or the
test suite; peak resident memory is then not per path and is reported as null). Results: a table
on stdout and JSON.

    python scripts/bench_inner_loop.py --out bench.json
    python scripts/bench_inner_loop.py --model tiny-random-llama --edits 4 --epochs 1 --ks 1 2   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seal_pl.errors import run_reporting_user_errors
from seal_pl.inner.flops import adapter_training_flops, peak_matmul_flops, synchronize


def load_self_edits(n: int) -> list[list[str]]:
    """``n`` self-edits as lists of training sequences (title-prefixed lines plus the passage)."""
    from seal_pl.knowledge.data import load_passages
    from seal_pl.knowledge.sequences import build_train_sequences

    passages = {p.id: p for p in load_passages(ROOT / "data/knowledge/train.json")}
    rows = [json.loads(line) for line in (ROOT / "data/knowledge/train_implications.jsonl").read_text().splitlines()]
    edits = []
    for row in rows[:n]:
        p = passages[row["passage_id"]]
        edits.append(build_train_sequences(p.title, p.context, row["completion"]).sequences)
    return edits


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_has(flag: str) -> bool:
    """Whether the CPU advertises ``flag`` (e.g. ``amx_bf16``: bf16 matrix tiles, the fast bf16 path)."""
    return any(flag in line.split() for line in _cpuinfo().splitlines() if line.startswith("flags"))


def run_reference(
    model_name: str, edits: list[list[str]], epochs: int, lr: float, pad_to: int, device: str = "cpu"
) -> dict:
    """PEFT wrap + HF Trainer per self-edit, padded to ``pad_to`` with loss on pads, batch 1."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from seal_pl.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_name)
    real_tokens = processed_tokens = 0

    class Sequences(torch.utils.data.Dataset):
        def __init__(self, texts):
            enc = tokenizer(texts, padding="max_length", truncation=True, max_length=pad_to, return_tensors="pt")
            self.ids, self.mask = enc["input_ids"], enc["attention_mask"]

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            # Labels are a plain copy of the padded ids: the loss includes every pad position.
            return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.ids[i].clone()}

    start = time.perf_counter()
    for index, sequences in enumerate(edits):
        data = Sequences(sequences)
        real_tokens += int(data.mask.sum()) * epochs
        processed_tokens += data.ids.numel() * epochs
        peft_model = get_peft_model(
            model, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        )
        args = TrainingArguments(
            output_dir=f"/tmp/seal-bench-ref-{os.getpid()}-{index}",
            per_device_train_batch_size=1,
            num_train_epochs=epochs,
            learning_rate=lr,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=device == "cpu",
            bf16=False,
            disable_tqdm=True,
        )
        Trainer(model=peft_model, args=args, train_dataset=data).train()
        model = peft_model.unload()
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "real_tokens": real_tokens, "processed_tokens": processed_tokens}


def run_ours(
    model_name: str,
    edits: list[list[str]],
    epochs: int,
    lr: float,
    k: int,
    precision: str,
    padding: str,
    device: str = "cpu",
) -> dict:
    from seal_pl.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_name)
    model.to(device)
    return train_adapters(model, tokenizer, edits, epochs, lr, k, precision, padding, device)


def train_adapters(
    model,
    tokenizer,
    edits: list[list[str]],
    epochs: int,
    lr: float,
    k: int,
    precision: str,
    padding: str,
    device: str = "cpu",
    warmup_steps: int = 0,
) -> dict:
    """seal-pl's inner loop on a loaded ``model`` (already on ``device``): one LoRA adapter per
    self-edit, ``k`` per pass; the adapter bank is removed from the model afterwards.

    ``warmup_steps`` > 0 first runs that many untimed optimizer steps on the first ``k`` self-edits
    (kernels, allocator and caches warmed up before the clock starts). Returns the timed seconds, real
    and processed tokens, the mean loss and the number of (joint) optimizer steps.
    """
    from seal_pl.inner import AdapterBank, AdaptJob, InnerLoopConfig, InnerLoopTrainer, LoRASpec, TrainSequence

    bank = AdapterBank(model, LoRASpec(r=32, alpha=64, target_modules=["q_proj", "v_proj"]), slots=k)
    try:
        config = InnerLoopConfig(lr=lr, epochs=epochs, batch_size=1, precision=precision, padding=padding)
        trainer = InnerLoopTrainer(model, tokenizer, bank, config)
        jobs = [AdaptJob([TrainSequence(s) for s in seqs], seed=i) for i, seqs in enumerate(edits)]
        if warmup_steps > 0:
            trainer.adapt([AdaptJob(job.sequences[:warmup_steps], epochs=1, seed=job.seed) for job in jobs[:k]])
            synchronize(device)
        real_tokens = processed_tokens = steps = 0
        losses: list[float] = []
        start = time.perf_counter()
        for offset in range(0, len(jobs), k):
            results = trainer.adapt(jobs[offset : offset + k])
            real_tokens += sum(r.train_tokens for r in results)
            processed_tokens += sum(r.processed_tokens for r in results)  # exact, padding included
            losses += [loss for r in results for loss in r.losses]
            steps += max(r.steps for r in results)
        synchronize(device)
        elapsed = time.perf_counter() - start
    finally:
        bank.remove()
    mean_loss = sum(losses) / max(1, len(losses))
    return {
        "seconds": elapsed,
        "real_tokens": real_tokens,
        "processed_tokens": processed_tokens,
        "mean_loss": mean_loss,
        "steps": steps,
    }


def one_gpu_env(device: str) -> dict[str, str]:
    """The environment that shows a path's subprocess only its GPU (``cuda:N``): the reference path's
    Hugging Face ``Trainer`` would otherwise wrap the model in ``DataParallel`` over every visible
    GPU. The subprocess then addresses that GPU as ``cuda:0`` (:func:`subprocess_device`)."""
    if not device.startswith("cuda"):
        return {}
    index = device.partition(":")[2] or "0"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",")[int(index)] if visible else index
    return {"CUDA_VISIBLE_DEVICES": physical.strip()}


def subprocess_device(device: str) -> str:
    """The device a path's subprocess uses: its only visible GPU, or the CPU."""
    return "cuda:0" if device.startswith("cuda") else device


def run_path(args, path: str, edits: int, device: str) -> dict:
    """Train one path's adapters on ``device`` in this process; its measurements (``peak_rss_mb`` is
    this process's peak so far: the path's own only in a fresh process)."""
    on_gpu = device.startswith("cuda")
    if on_gpu:
        import torch

        torch.cuda.reset_peak_memory_stats(torch.device(device))
    texts = load_self_edits(edits)
    if path == "reference":
        result = run_reference(args.model, texts, args.epochs, args.lr, args.pad_to, device)
    else:
        _, precision, k, *padding = path.split("-")
        padding = (padding or ["packed"])[0]
        result = run_ours(args.model, texts, args.epochs, args.lr, int(k[1:]), precision, padding, device)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if on_gpu:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    result["edits"] = len(texts)
    return result


def in_subprocess(args, path: str, edits: int) -> dict:
    """Run one path in a fresh interpreter that sees only the chosen GPU (clean peak memory)."""
    command = [sys.executable, __file__, "--path", path, "--model", args.model, "--edits", str(edits)]
    command += ["--epochs", str(args.epochs), "--lr", str(args.lr), "--pad-to", str(args.pad_to)]
    command += ["--device", args.device]
    env = {**os.environ, **one_gpu_env(args.device)}
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--edits", type=int, default=16, help="self-edits adapted by every path")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pad-to", type=int, default=2048, help="reference padding width")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8, 16], help="batched K values")
    parser.add_argument("--reference-edits", type=int, default=2, help="self-edits for the (slow) reference path")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--compare-dynamic", action="store_true", help="also run the largest K without packing")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (not yet run on one)")
    parser.add_argument("--out", default="bench_inner_loop.json")
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument(
        "--in-process", action="store_true", help="run the paths in this process (faster; no per-path peak memory)"
    )
    args = parser.parse_args(argv)
    if args.path:
        print("RESULT " + json.dumps(run_path(args, args.path, args.edits, subprocess_device(args.device))))
        return

    from seal_pl.models.loading import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    peaks = {name: peak_matmul_flops(name, args.device) for name in ("fp32", "bf16")}
    paths = [] if args.skip_reference else ["reference"]
    paths += ["ours-fp32-k1"] + [
        f"ours-{p}-k{k}" for p in ("fp32", "bf16") for k in args.ks if not (p == "fp32" and k == 1)
    ]
    if args.compare_dynamic:
        paths.append(f"ours-fp32-k{max(args.ks)}-dynamic")
    rows = []
    for path in paths:
        edits = args.reference_edits if path == "reference" else args.edits
        if args.in_process:
            result = run_path(args, path, edits, args.device)
            result["peak_rss_mb"] = None  # the process's, not the path's
        else:
            result = in_subprocess(args, path, edits)
        precision = "bf16" if "bf16" in path else "fp32"
        flops = adapter_training_flops(n_params, result["processed_tokens"]) / result["seconds"]
        row = {
            "path": path,
            "edits": result["edits"],
            "seconds": round(result["seconds"], 2),
            "edits_per_hour": round(3600 * result["edits"] / result["seconds"], 1),
            "train_tokens_per_s": round(result["real_tokens"] / result["seconds"], 1),
            "achieved_gflops": round(flops / 1e9, 1),
            "fraction_of_peak": round(flops / peaks[precision], 3),
            "peak_rss_mb": round(result["peak_rss_mb"]) if result["peak_rss_mb"] is not None else None,
            "peak_gpu_mb": round(result["peak_gpu_mb"]) if "peak_gpu_mb" in result else None,
            "mean_loss": round(result["mean_loss"], 4) if "mean_loss" in result else None,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    baseline = next(r for r in rows if r["path"] == "ours-fp32-k1")["edits_per_hour"]
    reference = next((r["edits_per_hour"] for r in rows if r["path"] == "reference"), None)
    header = f"{'path':<24} {'edits':>5} {'edits/h':>9} {'tok/s':>8} {'GFLOP/s':>8} {'of peak':>8} {'RSS MB':>7} {'vs k1':>6} {'vs ref':>7} {'loss':>7}"
    print("\n" + header)
    for r in rows:
        vs_ref = f"{r['edits_per_hour'] / reference:.1f}x" if reference else "-"
        print(
            f"{r['path']:<24} {r['edits']:>5} {r['edits_per_hour']:>9} {r['train_tokens_per_s']:>8} "
            f"{r['achieved_gflops']:>8} {100 * r['fraction_of_peak']:>7.1f}% {r['peak_rss_mb'] if r['peak_rss_mb'] is not None else '-':>7} "
            f"{r['edits_per_hour'] / baseline:>5.1f}x {vs_ref:>7} {r['mean_loss'] if r['mean_loss'] is not None else '-':>7}"
        )
    machine = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "amx": cpu_has("amx_bf16"),
        "avx512_bf16": cpu_has("avx512_bf16"),
        "python": platform.python_version(),
        "device": args.device,
    }
    if args.device.startswith("cuda"):
        import torch

        machine["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    print(f"machine: {machine}")
    payload = {
        "model": args.model,
        "params": n_params,
        "epochs": args.epochs,
        "peak_flops": peaks,
        "machine": machine,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(
        f"\npeak matmul: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; wrote {args.out}"
    )


if __name__ == "__main__":
    run_reporting_user_errors(main, sys.argv[1:])  # a model that does not load: one paragraph, exit 2
