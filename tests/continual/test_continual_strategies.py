"""Strategies acting on a real (tiny) model: merge writes the weights, compose puts them back exactly."""

from __future__ import annotations

import torch

from seal_pl.inner import AdapterBank, AdaptJob, InnerLoopConfig, InnerLoopTrainer, LoRASpec, TrainSequence
from seal_pl.pipelines.continual import Compose, Merge, Route

TEXTS = ["Orvel Pass\nThe pass was opened in 1903.", "Orvel Pass\nIts keeper was Ada Morrow."]


def make(model_tok, slots):
    model, tok = model_tok
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), slots=slots)
    trainer = InnerLoopTrainer(model, tok, bank, InnerLoopConfig(lr=1e-2, epochs=2))
    return model, tok, bank, trainer


def weights(bank):
    return {name: layer.base.weight.detach().clone() for name, layer in bank.iter_layers()}


def logits(model, tok):
    ids = tok("Orvel Pass", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def test_merge_writes_the_update_into_the_weights(tiny_model):
    model, tok, bank, trainer = make(tiny_model, slots=1)
    before = weights(bank)
    trainer.adapt([AdaptJob([TrainSequence(t) for t in TEXTS])], slots=[0])
    with torch.no_grad(), bank.route(0):
        adapted = logits(model, tok)
    Merge().after_update(bank, 0, 0)
    assert any(not torch.equal(before[n], w) for n, w in weights(bank).items())
    assert torch.allclose(logits(model, tok), adapted, atol=1e-5)  # merged weights == base + adapter
    assert all(torch.count_nonzero(layer.lora_B[0]) == 0 for _, layer in bank.iter_layers())  # slot reset


def test_compose_sums_adapters_only_inside_its_context(tiny_model):
    model, tok, bank, trainer = make(tiny_model, slots=2)
    strategy = Compose()
    for step, text in enumerate(TEXTS):
        trainer.adapt([AdaptJob([TrainSequence(text)], seed=step)], slots=[strategy.train_slot(step)])
        strategy.after_update(bank, step, strategy.train_slot(step))
    before, base_logits = weights(bank), logits(model, tok)
    with strategy.current_model(bank, 2):
        composed = logits(model, tok)
        expected = {
            name: before[name] + sum(layer.lora_B[s] @ layer.lora_A[s] for s in range(2)) * layer.scaling
            for name, layer in bank.iter_layers()
        }
        for name, layer in bank.iter_layers():
            assert torch.allclose(layer.base.weight, expected[name], atol=1e-6)
        with strategy.current_model(bank, 1):
            one = logits(model, tok)
    assert not torch.allclose(composed, base_logits) and not torch.allclose(one, composed)
    for name, weight in weights(bank).items():
        assert torch.equal(weight, before[name]), name  # exactly the base weights again
    assert torch.equal(logits(model, tok), base_logits)


def test_route_keeps_one_adapter_per_passage(tiny_model):
    model, tok, bank, trainer = make(tiny_model, slots=2)
    strategy = Route()
    before = weights(bank)
    for step, text in enumerate(TEXTS):
        trainer.adapt([AdaptJob([TrainSequence(text)], seed=step)], slots=[strategy.train_slot(step)])
        strategy.after_update(bank, step, strategy.train_slot(step))
    for name, weight in weights(bank).items():
        assert torch.equal(weight, before[name])  # nothing merged
    with bank.route(strategy.answer_slot(0, 2)):
        first = logits(model, tok)
    with bank.route(strategy.answer_slot(1, 2)):
        second = logits(model, tok)
    assert not torch.allclose(first, second)  # two distinct adapters survive
