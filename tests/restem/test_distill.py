"""Distillation: the policy's SFT on self-edits written elsewhere, under the E-step's own prompt."""

from __future__ import annotations

import json

import pytest
import torch

from seal_pl.cli import main
from seal_pl.inner.sequences import IGNORE_INDEX, tokenize_sequence
from seal_pl.knowledge.data import load_passages
from seal_pl.lightning import SelfEditDistillDataModule
from seal_pl.lightning.policy_sft import sft_sequence
from seal_pl.models.loading import load_model_and_tokenizer
from seal_pl.pipelines.knowledge import KnowledgeIncorporation, KnowledgeSettings

PASSAGES = [
    {
        "id": f"p{i}",
        "title": f"Orvel Pass {i}",
        "context": f"Orvel Pass {i} opened in {1900 + i}. Its keeper was Ansel Brook.",
        "questions": [{"id": f"q{i}", "question": "When did it open?", "answers": [str(1900 + i)]}],
    }
    for i in range(4)
]
COMPLETIONS = {f"p{i}": f"Orvel Pass {i} opened in the year {1900 + i}." for i in range(4)}


@pytest.fixture
def distill_files(tmp_path):
    passages = tmp_path / "passages.json"
    passages.write_text(json.dumps(PASSAGES))
    edits = tmp_path / "edits.jsonl"
    edits.write_text("".join(json.dumps({"passage_id": k, "completion": v}) + "\n" for k, v in COMPLETIONS.items()))
    return passages, edits


@pytest.mark.parametrize("chat_template", [True, False])
def test_distill_pairs_use_the_estep_prompt(distill_files, chat_template):
    passages, edits = distill_files
    data = SelfEditDistillDataModule(passages=str(passages), self_edits_path=str(edits), chat_template=chat_template)
    pairs = data.pairs()
    settings = KnowledgeSettings(prompt_style="implications", chat_template=chat_template)
    estep = KnowledgeIncorporation(trainer=None, generator=None, grader=None, settings=settings)
    by_id = {p.id: p for p in load_passages(passages)}
    assert [p.context_id for p in pairs] == ["p0", "p1", "p2", "p3"]
    for pair in pairs:
        assert pair.prompt == estep.self_edit_prompt(by_id[pair.context_id])
        assert pair.completion == COMPLETIONS[pair.context_id]


def test_distill_refuses_a_passage_without_self_edit(distill_files, tmp_path):
    passages, _ = distill_files
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"passage_id": "p0", "completion": "x"}) + "\n")
    data = SelfEditDistillDataModule(passages=str(passages), self_edits_path=str(partial))
    with pytest.raises(ValueError, match="partial.jsonl.*p1"):
        data.pairs()


def _completion_nll(model, tokenizer, pairs) -> float:
    """Mean negative log-likelihood per completion token, under the prompts as the E-step renders them."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for pair in pairs:
            row = tokenize_sequence(
                tokenizer, sft_sequence(tokenizer, pair.prompt, pair.completion), loss_on="completion"
            )
            ids = torch.tensor([row.input_ids])
            labels = torch.tensor([row.labels])
            logits = model(input_ids=ids).logits[0, :-1]
            targets = labels[0, 1:]
            mask = targets != IGNORE_INDEX
            nll = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum")
            total += float(nll)
            count += int(mask.sum())
    return total / count


def test_seal_fit_distill_raises_the_likelihood_of_the_completions(tiny_checkpoint, distill_files, tmp_path):
    passages, edits = distill_files
    run_dir = tmp_path / "distill"
    main(
        [
            "fit",
            "--model",
            "seal_pl.lightning.PolicySFTModule",
            "--model.model",
            tiny_checkpoint,
            "--model.lora.r",
            "8",
            "--model.lora.alpha",
            "16",
            "--model.lr",
            "1e-2",
            "--data",
            "seal_pl.lightning.SelfEditDistillDataModule",
            "--data.passages",
            str(passages),
            "--data.self_edits_path",
            str(edits),
            "--data.batch_size",
            "2",
            "--trainer.max_epochs",
            "8",
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
    pairs = SelfEditDistillDataModule(passages=str(passages), self_edits_path=str(edits)).pairs()
    base, tokenizer = load_model_and_tokenizer(tiny_checkpoint)
    distilled, _ = load_model_and_tokenizer(str(run_dir / "policy"))
    before = _completion_nll(base, tokenizer, pairs)
    after = _completion_nll(distilled, tokenizer, pairs)
    assert after < before - 0.5, (before, after)  # nats per completion token
    marker = json.loads((run_dir / "policy" / "seal_policy.json").read_text())
    assert marker["n_examples"] == 4
