"""The M-step's record of itself: losses and counts in ``seal_policy.json``, pairs cut off by
``max_length`` left out, the saved dtype."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from seal_pl.cli import main


def test_policy_record_truncated_pairs_and_save_dtype(tiny_checkpoint, tmp_path):
    sft = tmp_path / "sft.jsonl"
    rows = [{"prompt": f"Passage {i}:", "completion": f" fact {i}."} for i in range(3)]
    rows.append({"prompt": "x" * 200, "completion": " cut off"})  # no completion token within max_length
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="1 of 4 pairs"):
        main(
            [
                "fit",
                "--model", "seal_pl.lightning.PolicySFTModule",
                "--model.model", tiny_checkpoint,
                "--model.lora.r", "4",
                "--model.save_dtype", "bfloat16",
                "--data", "seal_pl.lightning.SFTDataModule",
                "--data.path", str(sft),
                "--data.max_length", "64",
                "--trainer.max_epochs", "2",
                "--trainer.accelerator", "cpu",
                "--trainer.log_every_n_steps", "1",
                "--trainer.enable_checkpointing", "false",
                "--trainer.enable_progress_bar", "false",
                "--run_dir", str(run_dir),
            ]
        )  # fmt: skip
    record = json.loads((run_dir / "policy/seal_policy.json").read_text())
    assert record["trained_from"] == tiny_checkpoint and record["n_examples"] == 3
    assert record["optimizer_steps"] == 6 and len(record["losses"]) == 6
    assert record["final_loss"] == record["losses"][-1]["loss"] > 0
    weights = load_file(run_dir / "policy/model.safetensors")
    assert {str(t.dtype) for t in weights.values()} == {"torch.bfloat16"}
