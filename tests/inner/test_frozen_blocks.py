"""Adapters only on the upper blocks: the blocks below run once per adaptation, with the same result."""

from __future__ import annotations

import torch

import seal_pl.inner.trainer as trainer_module
from seal_pl.inner import AdapterBank, AdaptJob, InnerLoopConfig, InnerLoopTrainer, LoRASpec, TrainSequence
from seal_pl.models.heads import decoder_and_head
from seal_pl.models.split import lower_states, split_matches, upper_forward

PASSAGE = "Orvel Pass\nThe pass was opened in 1903 by the surveyor Ada Morrow, who kept it for forty years."
LINES = ["Orvel Pass\nIts keeper was Ada Morrow.", "Orvel Pass\nIt opened in 1903.", "Orvel Pass\nAda surveyed it."]


def make(model_tok, *, layers, **config):
    model, tok = model_tok
    spec = LoRASpec(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], layers=layers)
    bank = AdapterBank(model, spec, slots=3)
    options = {"lr": 1e-2, "epochs": 3, "batch_size": 2, "pack_length": 48, "padding": "packed", **config}
    return model, bank, InnerLoopTrainer(model, tok, bank, InnerLoopConfig(**options))


def jobs():
    """Three self-edits of one passage, each also training on the passage (as the knowledge domain does)."""
    return [
        AdaptJob([TrainSequence(t) for t in (*LINES[: k + 1], PASSAGE)], seed=k, lr=1e-2 * (k + 1)) for k in range(3)
    ]


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_the_two_parts_reproduce_the_whole_decoder(tiny_model):
    model, _ = tiny_model
    decoder, _ = decoder_and_head(model)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
    with torch.no_grad():
        whole = decoder(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
        parts = upper_forward(decoder, 1, lower_states(decoder, 1, ids, positions), positions).last_hidden_state
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)
    assert len(decoder.layers) == model.config.num_hidden_layers  # the block list is put back
    assert split_matches(decoder, 1, torch.device("cpu"))


def test_reusing_the_frozen_blocks_trains_the_same_adapters_with_one_lower_pass(tiny_model, tiny_checkpoint):
    from seal_pl.models.loading import load_model_and_tokenizer

    results, states, lower_calls = {}, {}, {}
    for reuse, model_tok in ((False, tiny_model), (True, load_model_and_tokenizer(tiny_checkpoint))):
        model, bank, trainer = make(model_tok, layers=[1], reuse_frozen_blocks=reuse)
        base = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k}
        trainer.adapt(jobs()[:1])  # the one-time probes of the trainer run here
        calls = count_calls(decoder_and_head(model)[0].layers[0])
        results[reuse] = trainer.adapt(jobs())
        states[reuse] = [bank.state_dict(s) for s in range(3)]
        lower_calls[reuse] = calls[0]
        after = {k: v for k, v in model.state_dict().items() if "lora" not in k}
        assert all(torch.equal(after[k], base[k]) for k in base)  # base weights never change
    for slot in range(3):
        assert results[True][slot].steps == results[False][slot].steps
        torch.testing.assert_close(
            torch.tensor(results[True][slot].losses), torch.tensor(results[False][slot].losses), rtol=1e-4, atol=1e-5
        )
        for key, tensor in states[True][slot].items():
            torch.testing.assert_close(tensor, states[False][slot][key], rtol=1e-4, atol=1e-5)
    # The lower block ran once (the four distinct sequences fit one pass), not in every step's forward.
    steps = max(r.steps for r in results[False])
    assert lower_calls[True] == 1 and lower_calls[False] >= steps > 1


def test_identical_sequences_of_several_jobs_share_one_cached_state(tiny_model, monkeypatch):
    seen = {}
    original = InnerLoopTrainer._frozen_prefix

    def spy(self, *args):
        seen["prefix"] = original(self, *args)
        return seen["prefix"]

    monkeypatch.setattr(InnerLoopTrainer, "_frozen_prefix", spy)
    _, _, trainer = make(tiny_model, layers=[1])
    trainer.adapt(jobs())
    states = seen["prefix"].states
    assert seen["prefix"].start == 1
    assert states[0][-1] is states[1][-1] is states[2][-1]  # the passage, run once for three jobs
    assert states[0][0] is states[2][0]  # the first line is shared too
    assert trainer._prefix is None  # nothing is kept after the adaptation


def test_no_reuse_when_the_lowest_block_is_adapted_the_padding_is_not_packed_or_the_probe_fails(
    tiny_model, monkeypatch
):
    seen = []
    original = InnerLoopTrainer._frozen_prefix
    monkeypatch.setattr(
        InnerLoopTrainer, "_frozen_prefix", lambda self, *args: seen.append(original(self, *args)) or seen[-1]
    )
    for layers, padding in ((None, "packed"), ([1], "dynamic")):
        model_tok = tiny_model
        _, bank, trainer = make(model_tok, layers=layers, padding=padding)
        trainer.adapt(jobs())
        bank.remove()
    monkeypatch.setattr(trainer_module, "split_matches", lambda *args: False)
    _, _, trainer = make(tiny_model, layers=[1])
    results = trainer.adapt(jobs())
    assert seen == [None, None, None]
    assert all(r.steps > 0 and all(torch.isfinite(torch.tensor(r.losses))) for r in results)
