"""The M-step: SFT on (prompt, completion) pairs with loss on the completion, then merge and save."""

from __future__ import annotations

import json

import pytest
import torch

from seal_pl.cli import main
from seal_pl.inner.sequences import IGNORE_INDEX, tokenize_sequence
from seal_pl.lightning.policy_sft import sft_sequence
from seal_pl.models.loading import load_model_and_tokenizer
from seal_pl.pipelines.sft import sft_examples
from seal_pl.records import RecordKindError, SFTExample


def test_sft_sequence_masks_the_prompt(tiny_model):
    _, tok = tiny_model
    prompt = [{"role": "user", "content": "Write implications of: Orvel Pass opened in 1903."}]
    seq = sft_sequence(tok, prompt, "Orvel Pass opened in 1903.")
    row = tokenize_sequence(tok, seq, loss_on="completion")
    kept = tok.decode([i for i, label in zip(row.input_ids, row.labels) if label != IGNORE_INDEX])
    assert kept.startswith("Orvel Pass opened in 1903.") and "Write implications" not in kept
    plain = sft_sequence(tok, "Passage: x\nImplications:", " y")
    row = tokenize_sequence(tok, plain, loss_on="completion")
    assert tok.decode([i for i, l in zip(row.input_ids, row.labels) if l != IGNORE_INDEX]) == " y" + tok.eos_token


def test_sft_examples_read_filter_records_and_hand_written_pairs():
    kept = SFTExample(prompt=[{"role": "user", "content": "P"}], completion="c", id="e0", reward=0.5)
    examples = sft_examples([kept.to_json(), {"prompt": "Q", "completion": "d"}], source="sft.jsonl")
    assert examples == [kept, SFTExample(prompt="Q", completion="d")]
    with pytest.raises(ValueError, match="sft.jsonl: record 2 needs 'prompt' and 'completion'"):
        sft_examples([kept.to_json(), {"prompt": "Q"}], source="sft.jsonl")
    with pytest.raises(RecordKindError, match="sft.jsonl: record 1: a 'scored' record"):
        sft_examples([{**kept.to_json(), "kind": "scored"}], source="sft.jsonl")


def test_seal_fit_trains_merges_and_saves_policy(tiny_checkpoint, tmp_path):
    sft = tmp_path / "sft.jsonl"
    rows = [
        {"prompt": [{"role": "user", "content": f"Passage {i}"}], "completion": f"Implication number {i}."}
        for i in range(4)
    ]
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    main(
        [
            "fit",
            "--model",
            "seal_pl.lightning.PolicySFTModule",
            "--model.model",
            tiny_checkpoint,
            "--model.lora.r",
            "4",
            "--model.lora.alpha",
            "8",
            "--model.lr",
            "1e-2",
            "--data",
            "seal_pl.lightning.SFTDataModule",
            "--data.path",
            str(sft),
            "--data.batch_size",
            "2",
            "--trainer.max_epochs",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--run_dir",
            str(run_dir),
        ]
    )
    policy_dir = run_dir / "policy"
    assert (policy_dir / "model.safetensors").is_file() and (policy_dir / "tokenizer.json").is_file()
    merged, _ = load_model_and_tokenizer(str(policy_dir))
    base, _ = load_model_and_tokenizer(tiny_checkpoint)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    changed = [
        name for (name, a), (_, b) in zip(merged.named_parameters(), base.named_parameters()) if not torch.equal(a, b)
    ]
    assert changed and all(any(t in name for t in ("q_proj", "k_proj", "v_proj", "o_proj", "proj")) for name in changed)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
