"""The two ways the adapter bank applies several slots in one batch give the same numbers.

``grouped`` (one low-rank product per slot in use) and ``batched`` (all slots at once through a
slot mask) must agree in the forward pass and in every slot's gradients, for rows routed per row
(some to no adapter) and per token (packed rows); ``auto`` picks batched on CUDA only.
"""

from __future__ import annotations

import pytest
import torch

from seal_pl.inner import AdapterBank, LoRASpec
from seal_pl.inner.sequences import TrainSequence
from seal_pl.inner.trainer import AdaptJob, InnerLoopConfig, InnerLoopTrainer
from seal_pl.models.loading import load_model_and_tokenizer

TARGETS = ["q_proj", "v_proj", "down_proj"]


def banks(tiny_checkpoint, slots: int = 3):
    """The same model twice, with identical non-zero adapters, one bank per kernel."""
    out = []
    for kernel in ("grouped", "batched"):
        model, tokenizer = load_model_and_tokenizer(tiny_checkpoint)
        bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=TARGETS, kernel=kernel), slots=slots)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _, layer in bank.iter_layers():
                for b in layer.lora_B:
                    b.copy_(torch.randn(b.shape, generator=generator) * 0.1)
        bank.train_mode(True)
        out.append((model, tokenizer, bank))
    return out


def forward_and_grads(model, bank, ids, routing):
    model.zero_grad(set_to_none=True)
    with bank.route(routing):
        logits = model(ids, use_cache=False).logits
    logits.float().pow(2).mean().backward()
    grads = [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for s in range(bank.slots)
        for p in bank.parameters(s)
    ]
    return logits.detach(), grads


@pytest.mark.parametrize(
    "routing",
    [
        torch.tensor([0, 2, -1, 0]),  # one slot per row, one row without adapter
        torch.tensor([[0] * 5 + [1] * 4 + [-1] * 3] * 2 + [[2] * 12] * 2),  # one slot per token (packed)
        torch.tensor([0, 1, 1, 2]),  # every row routed, slots in runs: no gather or scatter
    ],
    ids=["per_row", "per_token", "contiguous"],
)
def test_batched_kernel_matches_grouped_kernel(tiny_checkpoint, routing):
    (model_g, tok, bank_g), (model_b, _, bank_b) = banks(tiny_checkpoint)
    ids = torch.randint(3, tok.vocab_size, (4, 12), generator=torch.Generator().manual_seed(1))
    logits_g, grads_g = forward_and_grads(model_g, bank_g, ids, routing)
    logits_b, grads_b = forward_and_grads(model_b, bank_b, ids, routing)
    assert bank_b.routing.slot_mask is None and bank_b.routing.row_slots is None  # restored on exit
    torch.testing.assert_close(logits_b, logits_g, rtol=1e-5, atol=1e-5)
    for grad_b, grad_g in zip(grads_b, grads_g):
        torch.testing.assert_close(grad_b, grad_g, rtol=1e-4, atol=1e-6)
    assert any(float(g.abs().sum()) > 0 for g in grads_b)


@pytest.mark.parametrize(
    ("routing", "contiguous"),
    [([0, 1, 1, 2], True), ([1, 0, 0, 2], False), ([0, 0, -1, 1], False), ([[0, 0, 1], [1, 2, 2]], True)],
)
def test_grouped_routing_gathers_only_when_slots_are_not_runs(tiny_checkpoint, routing, contiguous):
    """The grouped kernel's routed rows: grouped by slot in ``order``, one count per slot, and flagged
    contiguous (no gather or scatter) only when every row is routed and each slot's rows are a run."""
    (_, _, bank), _ = banks(tiny_checkpoint)
    flat = torch.tensor(routing).flatten()
    with bank.route(routing):
        state = bank.routing
        assert state.contiguous is contiguous
        assert state.groups == [(slot, int((flat == slot).sum())) for slot in sorted(set(flat.tolist())) if slot >= 0]
        assert [int(flat[i]) for i in state.order] == sorted(int(s) for s in flat if s >= 0)


@pytest.mark.parametrize("padding", ["packed", "dynamic"])  # per-token and per-row routing
def test_batched_kernel_trains_like_the_grouped_one(tiny_checkpoint, padding):
    texts = ["Orvel Pass opened in 1903.", "The Greeve box is a wooden frame hive.", "Alder Stow is a heath village."]
    losses = {}
    for (model, tokenizer, bank), kernel in zip(banks(tiny_checkpoint), ("grouped", "batched")):
        bank.reset()
        trainer = InnerLoopTrainer(
            model, tokenizer, bank, InnerLoopConfig(epochs=2, batch_size=3, lr=1e-3, padding=padding)
        )
        results = trainer.adapt([AdaptJob([TrainSequence(text)]) for text in texts])
        losses[kernel] = torch.tensor([loss for result in results for loss in result.losses])
    torch.testing.assert_close(losses["batched"], losses["grouped"], rtol=1e-4, atol=1e-5)


def test_auto_kernel_is_batched_on_cuda_only(tiny_model):
    model, _ = tiny_model
    bank = AdapterBank(model, LoRASpec(r=2, target_modules=["q_proj"]), slots=2)
    assert bank.spec.kernel == "auto"
    assert not bank.batched_on(torch.device("cpu")) and bank.batched_on(torch.device("cuda", 0))
    with pytest.raises(ValueError, match="LoRA kernel must be one of auto, grouped, batched"):
        LoRASpec(kernel="fast")


def test_greedy_generation_with_interleaved_slots_matches_one_prompt_at_a_time(tiny_checkpoint):
    """The generator puts one adapter's rows side by side (the bank then adds updates to runs of
    rows, in place); every answer still comes back in its prompt's place, as generated alone."""
    from seal_pl.generation.base import SamplingParams
    from seal_pl.generation.hf import HFGenerator

    (model, tokenizer, bank), _ = banks(tiny_checkpoint)
    generator = HFGenerator(batch_size=4).bind(model, tokenizer, bank)
    prompts = ["Orvel Pass", "The Greeve box", "Alder Stow", "Orvel Pass", "Kestle Mill", "The Greeve box"]
    slots = [2, 0, 1, 0, 2, -1]
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    together = generator.generate(prompts, params, adapter_slots=slots)
    alone = [generator.generate([p], params, adapter_slots=[s])[0] for p, s in zip(prompts, slots)]
    assert together == alone
    assert len(set(together)) > 1  # the adapters differ, so slot mix-ups would show
