"""Adapter slots export as PEFT folders (the format vLLM serves) that reproduce the routed adapter."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from peft import PeftModel

from seal_pl.inner import AdapterBank, AdaptJob, InnerLoopConfig, InnerLoopTrainer, LoRASpec, TrainSequence
from seal_pl.models.loading import load_model_and_tokenizer


def test_saved_peft_adapter_matches_bank_slot(tiny_checkpoint, tmp_path):
    model, tok = load_model_and_tokenizer(tiny_checkpoint)
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]), slots=2)
    trainer = InnerLoopTrainer(model, tok, bank, InnerLoopConfig(lr=1e-2, epochs=3))
    trainer.adapt([AdaptJob([TrainSequence("Orvel Pass\nopened in 1903")]), AdaptJob([TrainSequence("x y z")])])
    ids = tok("Orvel Pass\nopened in", return_tensors="pt")["input_ids"]
    with torch.no_grad(), bank.route(1):
        expected = model(ids).logits
    folder = bank.save_peft(1, tmp_path / "adapter", tiny_checkpoint)
    fresh, _ = load_model_and_tokenizer(tiny_checkpoint)
    peft_model = PeftModel.from_pretrained(fresh, str(folder))
    with torch.no_grad():
        got = peft_model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_vllm_backend_without_vllm_is_a_clear_error(tiny_model):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here; the missing-dependency message cannot be observed")
    from seal_pl.generation.vllm import VLLMGenerator

    model, tok = tiny_model
    with pytest.raises(ImportError, match=r"pip install 'seal-pl\[vllm\]'"):
        VLLMGenerator().bind(model, tok, None)


@pytest.mark.vllm
def test_vllm_backend_generates_with_adapters(tiny_checkpoint):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM backend test needs a GPU")
    from seal_pl.generation import SamplingParams
    from seal_pl.generation.vllm import VLLMGenerator

    model, tok = load_model_and_tokenizer(tiny_checkpoint)
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8), slots=2)
    generator = VLLMGenerator(max_loras=2, max_lora_rank=8, enforce_eager=True).bind(model, tok, bank)
    out = generator.generate(
        ["a", "b", "c"], SamplingParams(max_new_tokens=4, temperature=0.0), adapter_slots=[-1, 0, 1]
    )
    assert len(out) == 3 and all(isinstance(text, str) for text in out)
