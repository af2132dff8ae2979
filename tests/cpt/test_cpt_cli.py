"""End-to-end ``seal fit`` of multi-passage CPT on the tiny model: LoRA, full FT, resume, DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seal_pl.cli import main
from seal_pl.generation import HFGenerator
from seal_pl.knowledge.data import load_self_edits
from seal_pl.records import read_all, read_records

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--model.init_args.model", "tiny-random-llama",
    "--model.init_args.lr", "1e-2",
    "--model.init_args.settings.self_edit_sampling.max_new_tokens", "12",
    "--model.init_args.settings.answer_max_new_tokens", "6",
    "--data.init_args.limit", "3",
    "--data.init_args.k_completions", "2",
    "--trainer.enable_progress_bar", "false",
]  # fmt: skip


def run(run_dir: Path, *extra: str, configs: tuple[str, ...] = ("cpt_demo.yaml",)) -> dict:
    files = [arg for name in configs for arg in ("--config", str(ROOT / "configs/knowledge" / name))]
    main(["fit", *files, *TINY, "--run_dir", str(run_dir), *extra])
    return json.loads((run_dir / "results.json").read_text())


def lines(path: Path) -> int:
    return len(list(read_records(path)))


def test_lora_cpt_end_to_end_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "lora"
    results = run(run_dir, "--trainer.max_epochs", "1")
    assert results["experiment"] == "knowledge_cpt" and results["protocol"] == "lora"
    assert results["n_passages"] == 3 and results["k_completions"] == 2 and results["self_edits"] == "model"
    assert results["n_questions"] == results["phases"]["baseline"]["n_questions"] == 20
    assert results["gain"] == pytest.approx(results["adapted_accuracy"] - results["baseline_accuracy"])
    assert len(results["per_passage"]) == 3
    assert results["reference"]["lora_paper_v1"]["seal"]["adapted"] == 0.4384
    steps_one_epoch = results["training"]["optimizer_steps"]
    assert steps_one_epoch > 0 and results["training"]["epochs"] == 1
    assert "baseline" in capsys.readouterr().out

    # Hand-over file: K self-edits per passage, readable as any self_edits_path.
    edits = load_self_edits(run_dir / "cpt_self_edits.jsonl")
    assert len(edits) == 3 and all(len(v) == 2 for v in edits.values())
    texts = list(read_records(run_dir / "cpt_train_sequences.jsonl"))
    assert len(texts) == results["n_training_texts"] and {t["passage_id"] for t in texts} == set(edits)
    # The LoRA checkpoint holds the adapter only.
    checkpoint = torch.load(run_dir / "tensorboard/checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["state_dict"] and all(".lora_" in k for k in checkpoint["state_dict"])
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    scalars = set(EventAccumulator(str(run_dir / "tensorboard")).Reload().Tags()["scalars"])
    assert {"cpt/baseline_accuracy", "cpt/adapted_accuracy", "results/gain"} <= scalars
    trained_b = [v for k, v in checkpoint["state_dict"].items() if ".lora_B" in k]
    assert trained_b and any(torch.count_nonzero(v) for v in trained_b)  # the adapter was trained
    predictions = read_all(run_dir / "cpt_predictions.jsonl")
    assert sorted(p["phase"] for p in predictions) == ["adapted"] * 20 + ["baseline"] * 20

    # Train longer in the same run directory: training resumes from last.ckpt; self-edits and
    # baseline answers are reused; the adapted answers are redone for the new weights.
    self_edit_lines, eval_lines = lines(run_dir / "cpt_self_edits.rank0.jsonl"), lines(run_dir / "cpt_eval.rank0.jsonl")
    longer = run(run_dir, "--trainer.max_epochs", "2")
    assert longer["training"]["optimizer_steps"] == 2 * steps_one_epoch and longer["training"]["epochs"] == 2
    assert lines(run_dir / "cpt_self_edits.rank0.jsonl") == self_edit_lines
    assert lines(run_dir / "cpt_eval.rank0.jsonl") == eval_lines + 3
    assert longer["baseline_accuracy"] == results["baseline_accuracy"]

    # A finished run re-run does nothing but rewrite its results.
    again = run(run_dir, "--trainer.max_epochs", "2")
    assert lines(run_dir / "cpt_eval.rank0.jsonl") == eval_lines + 3
    assert again["per_passage"] == longer["per_passage"]


def test_gradient_checkpointing_trains_the_same_adapter(tmp_path):
    """Checkpointed blocks are recomputed in the backward pass with the adapter still routed: the
    trained adapter equals the one trained without checkpointing."""
    plain = run(tmp_path / "plain", "--trainer.max_epochs", "1")
    checkpointed = run(
        tmp_path / "ckpt", "--trainer.max_epochs", "1", "--model.init_args.gradient_checkpointing", "true"
    )
    assert checkpointed["training"]["optimizer_steps"] == plain["training"]["optimizer_steps"] > 0
    adapters = [
        torch.load(tmp_path / name / "tensorboard/checkpoints/last.ckpt", weights_only=False)["state_dict"]
        for name in ("plain", "ckpt")
    ]
    assert adapters[0].keys() == adapters[1].keys()
    for key in adapters[0]:
        torch.testing.assert_close(adapters[1][key], adapters[0][key], rtol=1e-4, atol=1e-6)
    assert any(torch.count_nonzero(v) for k, v in adapters[1].items() if ".lora_B" in k)
    assert checkpointed["per_passage"] == plain["per_passage"]


class SlotVersionProbe(HFGenerator):
    """Generates as ``HFGenerator`` and records the adapter slot versions each call saw."""

    seen: ClassVar[list[tuple[list[int] | None, list[int]]]] = []

    def generate(self, prompts, params, adapter_slots=None):
        slots = None if adapter_slots is None else [int(s) for s in adapter_slots if s is not None]
        SlotVersionProbe.seen.append((slots, list(self.bank.versions)))
        return super().generate(prompts, params, adapter_slots=adapter_slots)


def test_lora_training_marks_the_slot_changed_for_adapter_servers(tmp_path):
    """A backend serving exported adapters (vLLM) re-exports a slot only when its version moved: the
    adapted answers must see slot 0's version moved past what the baseline answers saw."""
    SlotVersionProbe.seen = []
    run(tmp_path / "run", "--trainer.max_epochs", "1", "--model.init_args.generator", "test_cpt_cli.SlotVersionProbe")
    baseline = [versions[0] for slots, versions in SlotVersionProbe.seen if not slots]
    adapted = [versions[0] for slots, versions in SlotVersionProbe.seen if slots and set(slots) == {0}]
    assert baseline and adapted and min(adapted) > max(baseline)


def test_full_finetune_and_passage_only(tmp_path):
    run_dir = tmp_path / "full"
    full = ("cpt_demo.yaml", "cpt_full_demo.yaml")  # full fine-tuning: an overlay on the LoRA demo
    results = run(run_dir, "--trainer.max_epochs", "1", "--model.init_args.lr", "1e-3", configs=full)
    assert results["protocol"] == "full" and results["paper_version"] == "v2 (full fine-tuning)"
    checkpoint = torch.load(run_dir / "tensorboard/checkpoints/last.ckpt", weights_only=False)
    assert any(k.endswith("embed_tokens.weight") for k in checkpoint["state_dict"])
    assert not any(".lora_" in k for k in checkpoint["state_dict"])

    only = run(tmp_path / "passage", "--trainer.max_epochs", "1", "--data.init_args.k_completions", "0")
    assert only["self_edits"] == "none (passages only)" and only["n_training_texts"] == 3
    assert not (tmp_path / "passage" / "cpt_self_edits.jsonl").exists()


def test_external_self_edits_and_question_subset(tmp_path, capsys):
    run_dir = tmp_path / "external"
    implications = str(ROOT / "data/knowledge/val_implications.jsonl")
    results = run(
        run_dir,
        "--trainer.max_epochs", "1",
        "--data.init_args.k_completions", "1",
        "--data.init_args.self_edits_path", implications,
        "--data.init_args.eval_question_limit", "5",
    )  # fmt: skip
    assert results["self_edits"] == implications and results["n_questions"] == 5
    sources = {r["source"] for r in read_records(run_dir / "cpt_self_edits.rank0.jsonl")}
    assert sources == {implications}
    with pytest.raises(SystemExit) as refused:  # a user error: one paragraph, exit 2
        run(tmp_path / "short", "--data.init_args.k_completions", "9", "--data.init_args.self_edits_path", implications)
    assert refused.value.code == 2
    assert "fewer than 9 self-edits" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_two_process_ddp_fit(tmp_path):
    """Two CPU processes (gloo): self-edits and answers are shared out, training runs under DDP."""
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "seal_pl", "fit",
        "--config", str(ROOT / "configs/knowledge/cpt_demo.yaml"),
        "--config", str(ROOT / "configs/trainer/ddp_cpu.yaml"),
        *TINY,
        "--data.init_args.limit", "4",
        "--model.init_args.self_edit_batch", "1",
        "--trainer.max_epochs", "1",
        "--run_dir", str(run_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True, timeout=300)
    for name in ("cpt_self_edits", "cpt_eval"):
        assert (run_dir / f"{name}.rank0.jsonl").is_file() and (run_dir / f"{name}.rank1.jsonl").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["training"]["world_size"] == 2 and results["n_passages"] == 4
    per_rank = math.ceil(results["n_training_texts"] / 2)  # DistributedSampler: half the texts each
    assert results["training"]["optimizer_steps"] == math.ceil(math.ceil(per_rank / 4) / 2)
    assert results["phases"]["baseline"]["n_passages"] == results["phases"]["adapted"]["n_passages"] == 4
    records = read_all(run_dir / "cpt_eval.rank*.jsonl")
    assert len(records) == len({r["id"] for r in records}) == 8
    # The logged accuracies are reduced over both ranks' answers: they equal the results' own.
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    for phase in ("baseline", "adapted"):
        (logged,) = events.Scalars(f"cpt/{phase}_accuracy")
        assert logged.value == pytest.approx(results[f"{phase}_accuracy"], abs=1e-6)
