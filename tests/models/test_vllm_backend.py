"""The vLLM backend against a fake ``vllm`` module that records what it is given (no GPU, no vLLM).

Besides prompts, seeds and adapters: after the base weights change in memory (a merge, Compose's
sum, CPT full fine-tuning) the next engine is built on an export equal to the in-memory weights, and
under DDP each rank's engine is built for the rank's own GPU.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from seal_pl.cli import main
from seal_pl.errors import OptionError, UserError
from seal_pl.generation.base import GeneratorBackend, SamplingParams
from seal_pl.generation.vllm import VLLMGenerator, VLLMPlacementError, adapter_root, engine_gpu, physical_gpu
from seal_pl.inner.lora import AdapterBank, LoRALinear, LoRASpec
from seal_pl.pipelines.continual import Compose, Merge, Replay, Route

ROOT = Path(__file__).resolve().parents[2]


class _Output:
    def __init__(self, text):
        self.outputs = [types.SimpleNamespace(text=text)]


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
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
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
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


# ------------------------------------------------------------------------------- base weights
def _perturb(bank: AdapterBank, slot: int, seed: int) -> None:
    """Give ``slot`` a non-zero update (what training does), and mark it changed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in bank.iter_layers():
            layer.lora_B[slot].copy_(torch.randn(layer.lora_B[slot].shape, generator=generator))
    bank.touch([slot])


def _in_memory(model, name: str) -> torch.Tensor:
    """The in-memory tensor behind a Hugging Face parameter name (through the adapters' wrappers)."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(module, LoRALinear):
        module = module.base
    return getattr(module, leaf)


def _assert_export_equals_model(folder: Path, model) -> None:
    """The folder is a loadable HF model + tokenizer whose weights are the in-memory ones in bf16."""
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    stored = load_file(folder / "model.safetensors")
    assert stored and all(t.dtype == torch.bfloat16 for t in stored.values())
    assert not any(".base." in key or ".lora_" in key for key in stored)
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    for name, tensor in loaded.named_parameters():
        expected = _in_memory(model, name).detach().to(torch.bfloat16).to(torch.float32)
        assert torch.equal(tensor, expected), name
    assert AutoTokenizer.from_pretrained(folder)("abc")["input_ids"]


def test_without_a_change_of_the_base_weights_the_engine_is_kept(fake_vllm, tiny_model, tmp_path):
    generator, llm, bank, _ = _bound(tiny_model, tmp_path)
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    generator.generate(["a"], params)
    _perturb(bank, 0, seed=0)  # an adapter changing is served as a LoRA, not a reload
    generator.generate(["a"], params, adapter_slots=[0])
    generator.base_weights_changed(restored=True)  # the base weights it was bound with: nothing to reload
    generator.generate(["a"], params)
    assert FakeLLM.instances == [llm] and len(llm.calls) == 3
    assert not list((tmp_path / "adapters").glob("base-*"))


def test_a_merge_into_the_base_rebuilds_the_engine_on_the_merged_weights(fake_vllm, tiny_model, tmp_path):
    generator, first, bank, _ = _bound(tiny_model, tmp_path)
    model, _ = tiny_model
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    original = first.kwargs["model"]
    saved = {name: layer.base.weight.detach().clone() for name, layer in bank.iter_layers()}
    name, layer = next(iter(bank.iter_layers()))

    _perturb(bank, 0, seed=1)
    Merge().after_update(bank, 0, 0, generator)
    assert not torch.equal(layer.base.weight, saved[name])
    assert FakeLLM.instances == [first]  # lazily: nothing is rebuilt before the next generate
    generator.generate(["a", "b"], params, adapter_slots=[-1, 0])
    second = FakeLLM.instances[-1]
    folder = Path(second.kwargs["model"])
    assert second is not first and second.calls and second.kwargs["tokenizer"] == str(folder)
    assert folder.parent == tmp_path / "adapters" and folder != Path(original)
    rest = {k: v for k, v in second.kwargs.items() if k not in ("model", "tokenizer")}
    assert rest == {k: v for k, v in first.kwargs.items() if k not in ("model", "tokenizer")}
    _assert_export_equals_model(folder, model)
    generator.generate(["a"], params)
    assert FakeLLM.instances[-1] is second  # no change since: no reload

    _perturb(bank, 0, seed=2)
    Replay().after_update(bank, 1, 0, generator)
    generator.base_weights_changed()  # several changes before a generate cost one rebuild
    generator.generate(["a"], params)
    third = FakeLLM.instances[-1]
    assert len(FakeLLM.instances) == 3 and not folder.exists()  # the superseded export is deleted
    _assert_export_equals_model(Path(third.kwargs["model"]), model)

    with torch.no_grad():  # what the continual module does before every sequence
        for each_name, each in bank.iter_layers():
            each.base.weight.copy_(saved[each_name])
    generator.base_weights_changed(restored=True)
    generator.generate(["a"], params)
    assert FakeLLM.instances[-1].kwargs["model"] == original and not Path(third.kwargs["model"]).exists()


class _Recording(GeneratorBackend):
    def __init__(self):
        self.changes: list[bool] = []

    def base_weights_changed(self, restored: bool = False) -> None:
        self.changes.append(restored)

    def generate(self, prompts, params, adapter_slots=None):
        return [""] * len(prompts)


def test_strategies_tell_the_generator_exactly_when_they_write_the_base(tiny_model):
    model, _ = tiny_model
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj"]), slots=2)
    recording = _Recording()
    Route().after_update(bank, 0, 0, recording)
    Compose().after_update(bank, 0, 0, recording)
    with Compose().current_model(bank, 0, recording), Merge().current_model(bank, 1, recording):
        assert recording.changes == []  # nothing written
    with Compose().current_model(bank, 2, recording):
        assert recording.changes == [False]  # the sum went in
    assert recording.changes == [False, False]  # and out again
    Merge().after_update(bank, 0, 0, recording)
    assert recording.changes == [False, False, False]


def test_compose_serves_the_sum_inside_its_context_and_the_base_after(fake_vllm, tiny_model, tmp_path):
    generator, _, bank, _ = _bound(tiny_model, tmp_path)
    model, _ = tiny_model
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    _perturb(bank, 0, seed=3)
    _perturb(bank, 1, seed=4)
    with Compose().current_model(bank, 2, generator):
        generator.generate(["a"], params)
        _assert_export_equals_model(Path(FakeLLM.instances[-1].kwargs["model"]), model)
    generator.generate(["a"], params)
    assert len(FakeLLM.instances) == 3
    _assert_export_equals_model(Path(FakeLLM.instances[-1].kwargs["model"]), model)


def _tiny_cli(command: str, configs: tuple[str, ...], run_dir: Path, adapters: Path, *extra: str) -> None:
    generator = {"class_path": "seal_pl.generation.vllm.VLLMGenerator", "init_args": {"adapter_dir": str(adapters)}}
    main(
        [
            command,
            *(arg for name in configs for arg in ("--config", str(ROOT / "configs/knowledge" / name))),
            "--model.init_args.model", "tiny-random-llama",
            "--model.init_args.generator", json.dumps(generator),
            "--model.init_args.settings.self_edit_sampling.max_new_tokens", "12",
            "--model.init_args.settings.answer_max_new_tokens", "4",
            "--trainer.enable_progress_bar", "false",
            "--run_dir", str(run_dir),
            *extra,
        ]
    )  # fmt: skip


def test_continual_merge_answers_every_row_with_the_merged_weights(fake_vllm, tmp_path):
    adapters = tmp_path / "adapters"
    _tiny_cli(
        "test", ("demo.yaml", "continual_demo.yaml"), tmp_path / "run", adapters,
        "--model.init_args.inner.epochs", "1",
        "--data.init_args.n_sequences", "1",
        "--data.init_args.length", "2",
    )  # fmt: skip
    # Bound on the model folder (row 0, the first self-edit); after each merge the next row and
    # self-edit come from an engine on the export of the merged weights; nothing else is rebuilt.
    engines = FakeLLM.instances
    assert len(engines) == 3 and all(engine.calls for engine in engines)
    assert [Path(e.kwargs["model"]).name for e in engines[1:]] == ["base-1", "base-2"]
    assert not (adapters / "base-1").exists()
    assert len(engines[1].calls) == 2  # row 1 and the self-edit of passage 2
    original = load_file(Path(engines[0].kwargs["model"]) / "model.safetensors")
    merged = load_file(adapters / "base-2" / "model.safetensors")
    key = next(k for k in merged if k.endswith("q_proj.weight"))
    assert not torch.equal(merged[key], original[key].to(torch.bfloat16))


def test_cpt_full_finetuning_answers_with_the_finetuned_weights(fake_vllm, tmp_path):
    run_dir, adapters = tmp_path / "full", tmp_path / "adapters"
    _tiny_cli(
        "fit", ("cpt_demo.yaml", "cpt_full_demo.yaml"), run_dir, adapters,
        "--model.init_args.lr", "1e-3",
        "--data.init_args.limit", "3",
        "--data.init_args.k_completions", "2",
        "--trainer.max_epochs", "1",
    )  # fmt: skip
    bound, adapted = FakeLLM.instances  # self-edits and baseline; then the adapted answers
    assert bound.calls and adapted.calls
    stored = load_file(Path(adapted.kwargs["model"]) / "model.safetensors")
    trained = torch.load(run_dir / "tensorboard/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert stored.keys() <= {k.removeprefix("lm.") for k in trained}
    for key, tensor in stored.items():
        assert torch.equal(tensor, trained[f"lm.{key}"].to(torch.bfloat16)), key
    original = load_file(Path(bound.kwargs["model"]) / "model.safetensors")
    shared = stored.keys() & original.keys()
    assert shared and any(not torch.equal(stored[k], original[k].to(torch.bfloat16)) for k in shared)


# ------------------------------------------------------------------------------------ placement
def test_under_ddp_each_rank_builds_its_engine_for_its_own_gpu(fake_vllm, tiny_model, tmp_path, monkeypatch):
    model, tokenizer = tiny_model
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj"]), slots=1)
    selected: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    VLLMGenerator(adapter_dir=str(tmp_path / "a")).bind(model, tokenizer, bank)
    assert FakeLLM.instances[-1].visible_devices == "1" and selected == [1]
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # only while the engine is built

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")  # the rank's cuda:1 is physical GPU 5
    VLLMGenerator(adapter_dir=str(tmp_path / "b")).bind(model, tokenizer, bank)
    assert FakeLLM.instances[-1].visible_devices == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"

    VLLMGenerator(adapter_dir=str(tmp_path / "c"), device="cuda:0").bind(model, tokenizer, bank)
    assert FakeLLM.instances[-1].visible_devices == "4" and selected[-1] == 0

    with pytest.raises(VLLMPlacementError, match="tensor_parallel_size"):
        VLLMGenerator(adapter_dir=str(tmp_path / "d"), tensor_parallel_size=2).bind(model, tokenizer, bank)
    assert issubclass(VLLMPlacementError, UserError)


def test_engine_gpu_order_explicit_then_model_then_current_then_local_rank():
    on_gpu2 = torch.device("cuda", 2)  # a fake device: building it needs no GPU
    assert engine_gpu("cuda:3", on_gpu2, 1, "0") == 3
    assert engine_gpu("3", None, None, None) == 3
    assert engine_gpu("cuda", on_gpu2, 1, "0") == 2
    assert engine_gpu(None, on_gpu2, 1, "0") == 2
    assert engine_gpu(None, torch.device("cpu"), 1, "0") == 1
    assert engine_gpu(None, torch.device("cpu"), None, "1") == 1
    assert engine_gpu(None, None, None, None) is None
    with pytest.raises(OptionError, match="CUDA device"):
        engine_gpu("cpu", None, None, None)
    assert physical_gpu(1, None) == "1" and physical_gpu(1, "GPU-a, GPU-b") == "GPU-b"
    with pytest.raises(VLLMPlacementError, match="CUDA_VISIBLE_DEVICES"):
        physical_gpu(2, "0,1")
