"""The vLLM backend against a fake ``vllm`` module that records what it is given (no GPU, no vLLM)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from seal_pl.generation.base import SamplingParams
from seal_pl.generation.vllm import VLLMGenerator, adapter_root
from seal_pl.inner.lora import AdapterBank, LoRASpec


class _Output:
    def __init__(self, text):
        self.outputs = [types.SimpleNamespace(text=text)]


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        FakeLLM.instances.append(self)

    def generate(self, inputs, sampling, lora_request=None, use_tqdm=False):
        self.calls.append({"inputs": inputs, "sampling": sampling, "lora_request": lora_request})
        return [_Output(f"out{i}") for i in range(len(inputs))]


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class FakeLoRARequest:
    def __init__(self, name, lora_id, path):
        self.name, self.lora_id, self.path = name, lora_id, path


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.instances.clear()
    return vllm


def _bound(tiny_model, tmp_path, **kwargs):
    model, tokenizer = tiny_model
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), slots=2)
    generator = VLLMGenerator(adapter_dir=str(tmp_path / "adapters"), **kwargs).bind(model, tokenizer, bank)
    return generator, FakeLLM.instances[-1], bank, tokenizer


def test_repeated_prompts_get_distinct_reproducible_seeds(fake_vllm, tiny_model, tmp_path):
    generator, llm, _, _ = _bound(tiny_model, tmp_path)
    prompt = [{"role": "user", "content": "Write implications."}]
    generator.generate([prompt] * 3, SamplingParams(max_new_tokens=8, temperature=1.0, seed=7))
    generator.generate([prompt] * 3, SamplingParams(max_new_tokens=8, temperature=1.0, seed=7))
    first, second = ([p.seed for p in call["sampling"]] for call in llm.calls)
    assert first == [7, 8, 9] and second == first


def test_prompts_are_the_hf_token_ids_without_a_second_bos(fake_vllm, tiny_model, tmp_path):
    generator, llm, _, tokenizer = _bound(tiny_model, tmp_path)
    chat = [{"role": "user", "content": "Hello"}]
    generator.generate([chat, "plain text"], SamplingParams(max_new_tokens=4, temperature=0.0))
    inputs = llm.calls[0]["inputs"]
    templated = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert inputs[0]["prompt_token_ids"] == tokenizer(templated, add_special_tokens=False)["input_ids"]
    assert inputs[1]["prompt_token_ids"] == tokenizer("plain text")["input_ids"]


def test_context_length_comes_from_the_model_and_long_prompts_are_refused(fake_vllm, tiny_model, tmp_path):
    generator, llm, bank, _ = _bound(tiny_model, tmp_path)
    model, _ = tiny_model
    assert llm.kwargs["max_model_len"] == model.config.max_position_embeddings
    assert llm.kwargs["max_lora_rank"] == bank.spec.r
    too_long = "x" * (model.config.max_position_embeddings + 10)
    with pytest.raises(ValueError, match=r"prompt 1 .*context length"):
        generator.generate(["short", too_long], SamplingParams(max_new_tokens=4))


def test_max_lora_rank_below_the_adapters_rank_is_refused(fake_vllm, tiny_model, tmp_path):
    with pytest.raises(ValueError, match="max_lora_rank"):
        _bound(tiny_model, tmp_path, max_lora_rank=2)


def test_adapters_are_re_exported_only_when_changed_and_old_folders_deleted(fake_vllm, tiny_model, tmp_path):
    generator, llm, bank, _ = _bound(tiny_model, tmp_path)
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    generator.generate(["a", "b"], params, adapter_slots=[0, -1])
    generator.generate(["a"], params, adapter_slots=[0])
    first, again = (call["lora_request"][0] for call in llm.calls)
    assert first.lora_id == again.lora_id and Path(first.path).is_dir()
    assert llm.calls[0]["lora_request"][1] is None
    bank.touch([0])  # what the inner loop does after training the slot
    generator.generate(["a"], params, adapter_slots=[0])
    fresh = llm.calls[-1]["lora_request"][0]
    assert fresh.lora_id != first.lora_id and Path(fresh.path).is_dir() and not Path(first.path).exists()
    from safetensors.torch import load_file

    assert all(
        t.dtype.is_floating_point and str(t.dtype) == "torch.bfloat16"
        for t in load_file(Path(fresh.path) / "adapter_model.safetensors").values()
    )


def test_adapter_root_falls_back_to_disk_when_shm_is_small():
    root = adapter_root(min_shm_bytes=1 << 62)  # no /dev/shm has 4 EiB free
    try:
        assert not str(root).startswith("/dev/shm")
    finally:
        root.rmdir()


def test_bank_versions_move_on_reset_load_and_training(tiny_model):
    from seal_pl.inner.sequences import TrainSequence
    from seal_pl.inner.trainer import AdaptJob, InnerLoopConfig, InnerLoopTrainer

    model, tokenizer = tiny_model
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj"]), slots=2)
    start = list(bank.versions)
    InnerLoopTrainer(model, tokenizer, bank, InnerLoopConfig(epochs=1)).adapt([AdaptJob([TrainSequence("abc def")])])
    trained = list(bank.versions)
    assert trained[0] > start[0] and trained[1] == start[1]
    bank.load_state_dict(1, bank.state_dict(0))
    assert bank.versions[1] > trained[1]
