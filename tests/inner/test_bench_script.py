"""The inner-loop benchmark script runs every path end to end on a tiny model and writes its JSON.

The full benchmark runs with ``--in-process`` (one interpreter for all five paths); the default
one-subprocess-per-path runner is covered on one path by its own test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_cli import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_bench_inner_loop_runs_every_path(tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable, str(ROOT / "scripts/bench_inner_loop.py"), "--model", "tiny-random-llama", "--edits", "2",
        "--epochs", "1", "--ks", "2", "--reference-edits", "1", "--pad-to", "64", "--compare-dynamic",
        "--in-process", "--out", str(out),
    ]  # fmt: skip
    printed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    payload = json.loads(out.read_text())
    paths = [row["path"] for row in payload["rows"]]
    assert paths == ["reference", "ours-fp32-k1", "ours-fp32-k2", "ours-bf16-k2", "ours-fp32-k2-dynamic"]
    assert payload["peak_flops"]["fp32"] > 0 and payload["peak_flops"]["bf16"] > 0
    for row in payload["rows"]:
        assert row["edits"] == (1 if row["path"] == "reference" else 2)
        assert row["edits_per_hour"] > 0 and row["train_tokens_per_s"] > 0 and 0 < row["fraction_of_peak"]
        assert row["path"] in printed and row["peak_rss_mb"] is None  # in one process: not per path
    loss = {row["path"]: row["mean_loss"] for row in payload["rows"]}
    assert loss["reference"] is None  # its loss counts pads: not comparable
    # Same seeds and data: one at a time, batched, packed or padded train the same adapters.
    assert loss["ours-fp32-k1"] == pytest.approx(loss["ours-fp32-k2"], rel=1e-3)
    assert loss["ours-fp32-k2"] == pytest.approx(loss["ours-fp32-k2-dynamic"], rel=1e-3)
    assert loss["ours-bf16-k2"] == pytest.approx(loss["ours-fp32-k2"], rel=0.05)
    assert "machine:" in printed and "amx" in payload["machine"]
    reference = payload["rows"][0]
    # The reference pads to 64 with loss on pads: it processes more tokens than it trains on.
    assert reference["achieved_gflops"] > 0 and "vs ref" in printed


def test_a_path_runs_in_its_own_interpreter(tmp_path, monkeypatch):
    """The default runner: one fresh interpreter per path, its result read back from the RESULT line."""
    bench = load_script("bench_inner_loop")
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(model="tiny-random-llama", epochs=1, lr=1e-3, pad_to=64, device="cpu")
    result = bench.in_subprocess(args, "ours-fp32-k2", 2)
    assert result["edits"] == 2 and result["seconds"] > 0 and result["processed_tokens"] > 0
    assert result["peak_rss_mb"] > 0 and result["mean_loss"] > 0


def test_a_benchmark_path_sees_only_its_gpu(monkeypatch):
    """The reference path's HF Trainer would wrap every visible GPU in DataParallel: each path's
    subprocess is shown only the GPU asked for, and addresses it as cuda:0."""
    bench = load_script("bench_inner_loop")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert bench.one_gpu_env("cpu") == {} and bench.subprocess_device("cpu") == "cpu"
    assert bench.one_gpu_env("cuda") == {"CUDA_VISIBLE_DEVICES": "0"}
    assert bench.one_gpu_env("cuda:3") == {"CUDA_VISIBLE_DEVICES": "3"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert bench.one_gpu_env("cuda:1") == {"CUDA_VISIBLE_DEVICES": "6"}
    assert bench.subprocess_device("cuda:1") == "cuda:0"


def test_a_model_that_does_not_load_is_one_paragraph(capsys):
    """What ``python scripts/bench_inner_loop.py --model <missing>`` runs: exit 2 and a paragraph, no traceback."""
    bench = load_script("bench_inner_loop")
    with pytest.raises(SystemExit) as stop:
        bench.run_reporting_user_errors(bench.main, ["--model", "no-such-model", "--in-process", "--skip-reference"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("seal: error: Could not load model 'no-such-model'") and "Traceback" not in err
