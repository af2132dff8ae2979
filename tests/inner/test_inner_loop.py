"""The shared inner loop: adapter reset, frozen base, determinism, batched == one-by-one."""

from __future__ import annotations

import pytest
import torch

from seal_pl.errors import OptionError
from seal_pl.inner import AdapterBank, AdaptJob, InnerLoopConfig, InnerLoopTrainer, LoRASpec, TrainSequence
from seal_pl.inner.sequences import IGNORE_INDEX, collate, tokenize_sequence
from seal_pl.inner.trainer import scheduled_adamw
from seal_pl.models.loading import load_model_and_tokenizer

ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TEXTS = ["Orvel Pass\nThe pass was opened in 1903.", "Orvel Pass\nIts keeper was Ada Morrow.", "Orvel Pass"]


def make(model_tok, slots=1, **config):
    model, tok = model_tok
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=ALL_PROJ), slots=slots)
    return model, tok, bank, InnerLoopTrainer(model, tok, bank, InnerLoopConfig(**{"lr": 1e-2, "epochs": 2, **config}))


def job(texts=TEXTS, **kw):
    return AdaptJob([TrainSequence(t) for t in texts], **kw)


def adapter_state(bank, slot):
    return {k: v.clone() for k, v in bank.state_dict(slot).items()}


def test_base_weights_never_change(tiny_model):
    model, _tok, _bank, trainer = make(tiny_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    results = trainer.adapt([job()])
    assert results[0].steps == 6 and len(results[0].losses) == 6
    after = {n: p for n, p in model.named_parameters() if "lora_" not in n}
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    assert all(not p.requires_grad for n, p in model.named_parameters())


def test_adapter_starts_as_identity_and_reset_restores_exact_tensors(tiny_model):
    model, tok, bank, trainer = make(tiny_model)
    ids = tok("Orvel Pass", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = model(ids).logits
        with bank.route(0):
            assert torch.equal(model(ids).logits, base_logits)  # B = 0: exact identity
    initial = adapter_state(bank, 0)
    trainer.adapt([job()])
    trained = adapter_state(bank, 0)
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)
    bank.reset([0])
    for key, tensor in adapter_state(bank, 0).items():
        assert torch.equal(tensor, initial[key]), key
    with torch.no_grad(), bank.route(0):
        assert torch.equal(model(ids).logits, base_logits)


def test_training_lowers_loss_and_changes_outputs(tiny_model):
    model, tok, bank, trainer = make(tiny_model, epochs=8)
    result = trainer.adapt([job()])[0]
    assert result.losses[-1] < result.losses[0]
    ids = tok(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = model(ids).logits
        with bank.route(0):
            adapted = model(ids).logits
    assert not torch.allclose(plain, adapted)


def test_same_seed_same_result(tiny_model):
    _model, _tok, bank, trainer = make(tiny_model)
    first = trainer.adapt([job(seed=3)])[0]
    state_first = adapter_state(bank, 0)
    second = trainer.adapt([job(seed=3)])[0]
    assert first.losses == second.losses
    for key, tensor in adapter_state(bank, 0).items():
        assert torch.equal(tensor, state_first[key])


def test_batched_adapters_equal_one_by_one(tiny_model):
    """K jobs with different lr/epochs trained together match each trained alone."""
    jobs = [
        job(TEXTS, lr=1e-2, epochs=2, seed=1),
        job(TEXTS[:1], lr=5e-3, epochs=4, seed=2),
        job(TEXTS[1:], lr=2e-2, epochs=1, seed=3),
    ]
    _model, _tok, bank, trainer = make(tiny_model, slots=3, batch_size=2, grad_accum=2, schedule="cosine")
    batched = trainer.adapt(jobs)
    batched_states = [adapter_state(bank, s) for s in range(3)]
    for index, single_job in enumerate(jobs):
        alone = trainer.adapt([single_job], slots=[index])[0]
        assert alone.steps == batched[index].steps
        torch.testing.assert_close(
            torch.tensor(alone.losses), torch.tensor(batched[index].losses), rtol=1e-4, atol=1e-5
        )
        for key, tensor in adapter_state(bank, index).items():
            torch.testing.assert_close(tensor, batched_states[index][key], rtol=1e-4, atol=1e-5)


def test_mixed_rows_route_to_their_own_adapter(tiny_model):
    model, tok, bank, trainer = make(tiny_model, slots=2, epochs=6)
    trainer.adapt([job(TEXTS[:1]), job(TEXTS[1:2])])
    ids = tok([TEXTS[0], TEXTS[0]], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with bank.route(0):
            only_0 = model(ids[:1]).logits
        with bank.route(1):
            only_1 = model(ids[:1]).logits
        with bank.route([0, 1]):
            mixed = model(ids).logits
        with bank.route([-1, 1]):
            base_and_1 = model(ids).logits
        plain = model(ids[:1]).logits
    torch.testing.assert_close(mixed[0], only_0[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1], only_1[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(base_and_1[0], plain[0], rtol=1e-5, atol=1e-5)


def test_bf16_autocast_trains_close_to_fp32(tiny_model):
    _model, _tok, _bank, trainer = make(tiny_model)
    fp32 = trainer.adapt([job(seed=0)])[0].losses
    trainer.config.precision = "bf16"
    bf16 = trainer.adapt([job(seed=0)])[0].losses
    assert len(fp32) == len(bf16)
    torch.testing.assert_close(torch.tensor(bf16), torch.tensor(fp32), rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": -2}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"loss_on": "prompt"}, "loss_on"),
    ],
)
def test_job_that_would_train_nothing_or_diverge_is_refused(tiny_model, override, named):
    _model, _tok, bank, trainer = make(tiny_model)
    initial = adapter_state(bank, 0)
    with pytest.raises(OptionError, match=f"job 0: {named}"):
        trainer.adapt([job(**override)])
    for key, tensor in adapter_state(bank, 0).items():
        assert torch.equal(tensor, initial[key])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", -1e-3),
        ("lr", float("nan")),
        ("lr", float("inf")),
        ("lr", 0.0),
        ("epochs", 0),
        ("epochs", -1),
        ("schedule", "cosin"),
        ("padding", "none"),
        ("precision", "fp16"),
        ("loss_on", "prompt"),
        ("batch_size", 0),
        ("warmup_ratio", 1.5),
        ("max_grad_norm", -1.0),
    ],
)
def test_inner_config_refuses_values_that_train_nothing_or_diverge(field, value):
    with pytest.raises(OptionError, match=f"inner.{field}"):
        InnerLoopConfig(**{field: value})


def test_merge_into_base_matches_routed_adapter(tiny_model):
    model, tok, bank, trainer = make(tiny_model, epochs=4)
    trainer.adapt([job()])
    ids = tok(TEXTS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad(), bank.route(0):
        adapted = model(ids).logits
    bank.merge_into_base(0)
    with torch.no_grad():
        merged = model(ids).logits
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-4)


def test_unknown_target_module_is_a_clear_error(tiny_model):
    model, _ = tiny_model
    with pytest.raises(ValueError, match="not found"):
        AdapterBank(model, LoRASpec(target_modules=["c_attn"]))


def test_completion_mask_uses_offsets_not_token_ids(tiny_model):
    _, tok = tiny_model
    messages = [{"role": "user", "content": "2+2?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": "4"}], tokenize=False)
    seq = TrainSequence(full, completion_start=len(prompt), templated=True)
    row = tokenize_sequence(tok, seq, loss_on="completion")
    kept = [i for i, label in zip(row.input_ids, row.labels) if label != IGNORE_INDEX]
    assert tok.decode(kept) == full[len(prompt) :]
    assert tokenize_sequence(tok, seq, loss_on="all").n_loss_tokens == len(row.input_ids)


def test_marker_mask_and_padding_modes(tiny_model):
    _, tok = tiny_model
    seq = TrainSequence.after_marker("Question: where?\nAnswer: Orvel", "Answer:")
    row = tokenize_sequence(tok, seq, loss_on="completion")
    assert tok.decode([i for i, l in zip(row.input_ids, row.labels) if l != IGNORE_INDEX]) == " Orvel"
    short = tokenize_sequence(tok, TrainSequence("ab"))
    dynamic = collate([row, short], tok.pad_token_id)
    assert dynamic["input_ids"].shape == (2, len(row.input_ids))
    assert (dynamic["labels"][1, len(short.input_ids) :] == IGNORE_INDEX).all()
    reference = collate([row, short], tok.pad_token_id, padding="max_length", pad_to=64, loss_on_padding=True)
    assert reference["input_ids"].shape == (2, 64)
    assert (reference["labels"][1, len(short.input_ids) :] == tok.pad_token_id).all()
    assert reference["attention_mask"][1].sum() == len(short.input_ids)


def test_reference_padding_path_trains_and_splitting_rows_changes_nothing(tiny_model):
    _model, _tok, bank, trainer = make(tiny_model, batch_size=2, padding="max_length", pad_to=64, loss_on_padding=True)
    initial = adapter_state(bank, 0)
    reference = trainer.adapt([job(seed=1)])[0]
    assert reference.steps == 4 and all(torch.isfinite(torch.tensor(reference.losses)))
    assert any(not torch.equal(initial[k], v) for k, v in adapter_state(bank, 0).items())
    # Dynamic path: regrouping a step's rows into smaller forward passes gives the same result.
    trainer.config = InnerLoopConfig(lr=1e-2, epochs=2, batch_size=3, max_batch_tokens=100_000)
    whole = trainer.adapt([job(seed=1)])[0]
    state = adapter_state(bank, 0)
    trainer.config = InnerLoopConfig(lr=1e-2, epochs=2, batch_size=3, max_batch_tokens=8)
    split = trainer.adapt([job(seed=1)])[0]
    torch.testing.assert_close(torch.tensor(split.losses), torch.tensor(whole.losses), rtol=1e-4, atol=1e-5)
    for key, tensor in adapter_state(bank, 0).items():
        torch.testing.assert_close(tensor, state[key], rtol=1e-4, atol=1e-5)


def record_forward_sizes(model) -> list[int]:
    """Tokens (rows x width) of every forward pass of ``model``'s decoder, appended as they run."""
    sizes: list[int] = []
    model.model.register_forward_pre_hook(
        lambda _module, args, kwargs: sizes.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    return sizes


def two_slot_reference_run(checkpoint, **config):
    """Two jobs on the reference path (max_length padding, pads in the loss) on a fresh model."""
    model, _tok, bank, trainer = make(
        load_model_and_tokenizer(checkpoint),
        slots=2,
        batch_size=2,
        padding="max_length",
        pad_to=64,
        loss_on_padding=True,
        **config,
    )
    sizes = record_forward_sizes(model)
    results = trainer.adapt([job(seed=1), job(TEXTS[:2], seed=2)])
    return sizes, results, [adapter_state(bank, s) for s in (0, 1)]


def test_reference_padding_path_honours_the_token_budget_with_the_same_result(tiny_checkpoint):
    # Two jobs x 2 rows x 64 positions make one 256-token forward per micro-batch; a 128-token budget
    # must split it, and the per-micro-batch mean (pads included) must not change.
    whole_sizes, whole, whole_state = two_slot_reference_run(tiny_checkpoint, max_batch_tokens=4096)
    split_sizes, split, split_state = two_slot_reference_run(tiny_checkpoint, max_batch_tokens=128)
    assert max(whole_sizes) == 256 and max(split_sizes) <= 128
    for a, b in zip(whole, split):
        torch.testing.assert_close(torch.tensor(b.losses), torch.tensor(a.losses), rtol=1e-5, atol=1e-6)
    for a, b in zip(whole_state, split_state):
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("padding", ["packed", "dynamic"])
def test_loss_over_vocabulary_slices_gives_the_same_losses_and_adapters(tiny_checkpoint, padding):
    def run(chunk):
        _model, _tok, bank, trainer = make(
            load_model_and_tokenizer(tiny_checkpoint), batch_size=3, padding=padding, loss_chunk_tokens=chunk
        )
        return trainer.adapt([job(seed=3)])[0].losses, adapter_state(bank, 0)

    whole_losses, whole = run(0)
    sliced_losses, sliced = run(5)  # a few tokens per slice: many slices per forward
    torch.testing.assert_close(torch.tensor(sliced_losses), torch.tensor(whole_losses), rtol=1e-5, atol=1e-6)
    for key in whole:
        torch.testing.assert_close(sliced[key], whole[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("padding", ["packed", "dynamic"])
def test_gradient_checkpointing_gives_the_same_adapters(tiny_checkpoint, padding):
    def run(checkpointing):
        model, _tok, bank, trainer = make(
            load_model_and_tokenizer(tiny_checkpoint),
            slots=2,
            batch_size=3,
            padding=padding,
            gradient_checkpointing=checkpointing,
        )
        results = trainer.adapt([job(seed=4), job(TEXTS[1:], seed=5)])
        return model, [r.losses for r in results], [adapter_state(bank, s) for s in (0, 1)]

    _model, plain_losses, plain = run(False)
    model, checkpointed_losses, checkpointed = run(True)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # off again afterwards
    torch.testing.assert_close(torch.tensor(checkpointed_losses), torch.tensor(plain_losses), rtol=1e-5, atol=1e-6)
    for a, b in zip(plain, checkpointed):
        assert any(not torch.equal(v, torch.zeros_like(v)) for v in b.values())
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)


def test_lora_layers_selects_blocks_and_exports_them(tiny_model, tmp_path):
    import json

    model, tok = tiny_model
    n_blocks = len({name.split(".")[2] for name, _ in model.named_modules() if name.startswith("model.layers.")})
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"], layers=[-1]))
    top = n_blocks - 1
    assert sorted(bank.layers) == [f"model.layers.{top}.self_attn.q_proj", f"model.layers.{top}.self_attn.v_proj"]
    config = json.loads((bank.save_peft(0, tmp_path / "adapter") / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [top]
    trainer = InnerLoopTrainer(model, tok, bank, InnerLoopConfig(lr=1e-2, epochs=1))
    assert trainer.adapt([job()])[0].steps > 0
    bank.remove()
    with pytest.raises(ValueError, match="out of range"):
        AdapterBank(model, LoRASpec(r=4, target_modules=["q_proj"], layers=[n_blocks]))


def test_scheduled_adamw_warms_up_then_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer, scheduler = scheduled_adamw(
        [param], lr=1.0, weight_decay=0.0, schedule="linear", total_steps=10, warmup_ratio=0.2
    )
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == [0.0, 0.5, 1.0]
    assert rates[2:] == sorted(rates[2:], reverse=True) and rates[-1] == pytest.approx(1 / 8)


def _counted_read(method):
    """``method`` of a tensor, counting the call as a read of its values by the host."""

    def counted(self, *args, **kwargs):
        type(self).reads += 1
        return method(self.as_subclass(torch.Tensor), *args, **kwargs)

    return counted


class _OnDevice(torch.Tensor):
    """A tensor that counts every read of its values by the host (a device sync on a GPU)."""

    reads = 0
    item = _counted_read(torch.Tensor.item)
    tolist = _counted_read(torch.Tensor.tolist)
    nonzero = _counted_read(torch.Tensor.nonzero)
    cpu = _counted_read(torch.Tensor.cpu)
    numpy = _counted_read(torch.Tensor.numpy)
    __float__ = _counted_read(torch.Tensor.__float__)
    __int__ = _counted_read(torch.Tensor.__int__)
    __bool__ = _counted_read(torch.Tensor.__bool__)


@pytest.mark.parametrize("padding", ["packed", "dynamic"])
def test_an_optimizer_step_reads_the_device_once(tiny_checkpoint, padding, monkeypatch):
    # Everything computed from the model's output is marked; the step's losses of all jobs
    # must come back to the host in one read, not one per job or per micro-batch.
    _model, _tok, _bank, trainer = make(
        load_model_and_tokenizer(tiny_checkpoint), slots=3, batch_size=1, grad_accum=2, padding=padding
    )
    token_losses = trainer._token_losses
    monkeypatch.setattr(trainer, "_token_losses", lambda *a: token_losses(*a).as_subclass(_OnDevice))
    _OnDevice.reads = 0
    results = trainer.adapt([job(seed=1), job(TEXTS[:2], seed=2), job(TEXTS[1:], seed=3)])
    steps = max(r.steps for r in results)
    assert steps >= 2 and all(len(r.losses) == r.steps for r in results)
    assert _OnDevice.reads == steps
