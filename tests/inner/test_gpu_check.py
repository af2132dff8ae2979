"""The GPU readiness check runs on a CPU with the tiny model and writes a complete report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/gpu_check.py"


def test_gpu_check_on_cpu_writes_the_report(tmp_path):
    out = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())

    assert report["options"] == {
        "device": "cpu",
        "tiny": True,
        "checks": ["bench", "restem", "ddp", "vllm"],
        "ks": [1, 2],
        "time_limit_s": 450.0,
    }
    environment = report["environment"]
    assert environment["device"] == "cpu" and environment["device_name"]
    assert environment["torch"] and "cuda" in environment and "packages" in environment
    assert report["ok"] is True and report["total_seconds"] > 0 and report["finished_at"]

    checks = report["checks"]
    assert list(checks) == ["bench", "restem", "ddp", "vllm"]
    for name, check in checks.items():
        assert {"status", "reason", "error", "seconds", "details"} <= set(check), name
        assert check["status"] in {"ok", "failed", "skipped"} and check["seconds"] >= 0
        assert check["status"] in done.stdout and name in done.stdout  # the printed table

    bench = checks["bench"]
    assert bench["status"] == "ok", bench["error"]
    details = bench["details"]
    assert details["model"]["n_params"] > 0 and details["precision"] == "bf16 autocast"
    assert details["peak_flops"]["measured_bf16"] > 0 and details["peak_flops"]["mfu_against"] == "measured"
    assert [row["k"] for row in details["rows"]] == [1, 2]
    for row in details["rows"]:
        assert row["status"] == "ok" and row["steps"] > 0
        assert row["step_ms"] > 0 and row["train_tokens_per_s"] > 0 and row["achieved_flops"] > 0
        assert row["mfu"] > 0 and row["fraction_of_measured_peak"] == row["mfu"]  # no datasheet peak on a CPU
        assert row["processed_tokens"] >= row["train_tokens"] > 0
        assert row["peak_gpu_mb"] is None

    restem = checks["restem"]
    assert restem["status"] == "ok", restem["error"]
    assert restem["details"]["rounds"] == 1 and restem["details"]["machine"]["device"] == "cpu"
    assert restem["details"]["command"] and Path(restem["details"]["log"]).is_file()

    for name in ("ddp", "vllm"):
        assert checks[name]["status"] == "skipped" and checks[name]["reason"], name
        assert checks[name]["error"] is None
    assert "--device cuda" in checks["ddp"]["reason"] and "GPU" in checks["vllm"]["reason"]


def test_help_names_every_option():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    for option in ("--device", "--tiny", "--out", "--checks", "--ks", "--time-limit", "bench", "restem", "vllm"):
        assert option in done.stdout
