"""Seeded blocks restore every generator, the CUDA ones included."""

from __future__ import annotations

import torch

from seal_pl.models import rng


def test_seeded_restores_the_cpu_generator():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with rng.seeded(5):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with rng.seeded(5):
        assert torch.equal(torch.rand(3), inside)


def test_seeded_forks_every_cuda_device(monkeypatch):
    seen = {}
    real_fork = torch.random.fork_rng

    def recording_fork(devices=None, **kwargs):
        seen["devices"] = devices
        return real_fork(devices=[], **kwargs)  # no real GPU here

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.random, "fork_rng", recording_fork)
    monkeypatch.setattr(torch, "manual_seed", lambda seed: None)
    with rng.seeded(0):
        pass
    assert seen["devices"] == [0, 1]
