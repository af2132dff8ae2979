"""Sequence packing in the inner loop: bins, boundaries, per-token routing, same result as padding."""

from __future__ import annotations

import random

import pytest
import torch

from seal_pl.inner import AdapterBank, AdaptJob, InnerLoopConfig, InnerLoopTrainer, LoRASpec, TrainSequence
from seal_pl.inner.sequences import IGNORE_INDEX, TokenizedSequence, balanced_bins, collate_packed, pack_bins

TEXTS = [
    "Orvel Pass\nThe pass was opened in 1903 by the surveyor Ada Morrow.",
    "Orvel Pass\nIts keeper was Ada Morrow.",
    "Orvel Pass",
    "Lake Semmer\nThe lake freezes in late November and thaws in April, when the ferry resumes.",
    "Lake Semmer\nFerry: the Tallow.",
]


def make(model_tok, slots, **config):
    model, tok = model_tok
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]), slots=slots)
    trainer = InnerLoopTrainer(model, tok, bank, InnerLoopConfig(**{"lr": 1e-2, "epochs": 2, **config}))
    return model, tok, bank, trainer


def jobs():
    return [
        AdaptJob([TrainSequence(t) for t in TEXTS[:3]], seed=1),
        AdaptJob([TrainSequence(t) for t in TEXTS[3:]], lr=2e-2, epochs=3, seed=2),
        AdaptJob([TrainSequence(TEXTS[0], completion_start=11)], loss_on="completion", seed=3),
    ]


@pytest.mark.parametrize("seed", range(5))
def test_pack_bins_places_every_sequence_once_within_capacity(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 90) for _ in range(rng.randint(1, 40))]
    bins = pack_bins(lengths, 100)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 100 for b in bins)
    # First-fit decreasing never needs more than 11/9 OPT + 1 bins; OPT >= total / capacity.
    assert len(bins) <= 11 / 9 * -(-sum(lengths) // 100) + 1


def test_oversized_sequence_gets_its_own_bin():
    bins = pack_bins([300, 20, 30], 100)
    assert [0] in bins and sorted(i for b in bins for i in b) == [0, 1, 2]


def test_balanced_bins_use_the_fewest_rows_with_even_widths():
    lengths = [130] + [27] * 15  # one passage and 15 implication lines (one packed step at K=16)
    bins = balanced_bins(lengths, 256)
    widths = [sum(lengths[i] for i in b) for b in bins]
    assert len(bins) == 3 == -(-sum(lengths) // 256)
    assert max(widths) - min(widths) <= 27 and max(widths) <= 256
    assert balanced_bins([500, 10], 256) == [[0], [1]]  # a long row sets the width


def test_collate_packed_keeps_targets_and_positions_inside_each_sequence():
    rows = [
        TokenizedSequence([5, 6, 7], [5, 6, 7]),
        TokenizedSequence([8, 9], [IGNORE_INDEX, 9]),
        TokenizedSequence([4], [4]),
    ]
    batch = collate_packed([[rows[0], rows[1]], [rows[2]]], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [4, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    # Targets are the next token of the same sequence: none crosses 7 -> 8, none on padding.
    assert batch["targets"].tolist() == [[6, 7, -100, 9, -100], [-100, -100, -100, -100, -100]]
    assert batch["segment"].tolist() == [[0, 0, 0, 1, 1], [2, -1, -1, -1, -1]]


def test_packed_training_equals_padded_training(tiny_model):
    """Same losses and adapter weights with packing as with per-row padding, K=3 jobs at once."""
    _model, _tok, bank, trainer = make(tiny_model, slots=3, batch_size=2, pack_length=48, padding="dynamic")
    padded = trainer.adapt(jobs())
    padded_states = [bank.state_dict(s) for s in range(3)]
    trainer.config = InnerLoopConfig(lr=1e-2, epochs=2, batch_size=2, pack_length=48, padding="packed")
    packed = trainer.adapt(jobs())
    for slot in range(3):
        assert packed[slot].steps == padded[slot].steps
        assert packed[slot].train_tokens == padded[slot].train_tokens
        torch.testing.assert_close(
            torch.tensor(packed[slot].losses), torch.tensor(padded[slot].losses), rtol=1e-4, atol=1e-5
        )
        for key, tensor in bank.state_dict(slot).items():
            torch.testing.assert_close(tensor, padded_states[slot][key], rtol=1e-4, atol=1e-5)
    assert sum(r.processed_tokens for r in packed) < sum(r.processed_tokens for r in padded)


def test_packed_row_routes_every_token_to_its_own_adapter(tiny_model):
    model, tok, bank, trainer = make(tiny_model, slots=2, epochs=4)
    trainer.adapt([AdaptJob([TrainSequence(TEXTS[0])]), AdaptJob([TrainSequence(TEXTS[3])])])
    first = tok(TEXTS[0])["input_ids"]
    second = tok(TEXTS[3])["input_ids"]
    with torch.no_grad():
        with bank.route(0):
            alone_first = model(torch.tensor([first])).logits[0]
        with bank.route(1):
            alone_second = model(torch.tensor([second])).logits[0]
        slots = torch.tensor([[0] * len(first) + [1] * len(second)])
        positions = torch.tensor([list(range(len(first))) + list(range(len(second)))])
        with bank.route(slots):
            packed = model(torch.tensor([first + second]), position_ids=positions, use_cache=False).logits[0]
        with bank.route(1 - slots):  # each sequence gets the other adapter
            swapped = model(torch.tensor([first + second]), position_ids=positions, use_cache=False).logits[0]
    torch.testing.assert_close(packed[: len(first)], alone_first, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(packed[len(first) :], alone_second, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(swapped[-len(second) :], alone_second, rtol=1e-4, atol=1e-4)


def test_packing_with_loss_on_padding_is_a_config_error():
    with pytest.raises(ValueError, match="loss_on_padding"):
        InnerLoopConfig(padding="packed", loss_on_padding=True)
    with pytest.raises(ValueError, match="padding must be"):
        InnerLoopConfig(padding="ragged")


def test_a_model_that_ignores_packing_boundaries_is_a_clear_error(tiny_model, monkeypatch):
    """If the mask builder did not read boundaries from position ids, packed sequences would attend
    to each other: the one-time probe catches it before any training."""
    import transformers.masking_utils

    *_, trainer = make(tiny_model, slots=1)
    monkeypatch.setattr(transformers.masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(RuntimeError, match="padding to 'dynamic'"):
        trainer.adapt([AdaptJob([TrainSequence(TEXTS[0])])])
    trainer.config = InnerLoopConfig(lr=1e-2, epochs=1, padding="dynamic")  # the way out works
    assert trainer.adapt([AdaptJob([TrainSequence(TEXTS[0])])])[0].steps == 1
