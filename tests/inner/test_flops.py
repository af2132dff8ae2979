"""The matmul peak probe: a measured rate, within its time budget on a slow CPU."""

from __future__ import annotations

import time

import torch

from seal_pl.inner import flops
from seal_pl.inner.flops import peak_matmul_flops


def test_peak_probe_shrinks_its_products_to_fit_the_budget(monkeypatch):
    sizes = []
    real_randn = torch.randn

    def recording_randn(*shape, **kwargs):
        sizes.append(shape[0])
        return real_randn(*shape, **kwargs)

    monkeypatch.setattr(flops.torch, "randn", recording_randn)
    started = time.perf_counter()
    rate = peak_matmul_flops("fp32", "cpu", size=2048, repeats=10, budget_seconds=1e-6)
    assert rate > 0 and time.perf_counter() - started < 10
    assert sizes[-1] == 256  # no budget to spare: the smallest products
    sizes.clear()
    peak_matmul_flops("fp32", "cpu", size=512, repeats=2, budget_seconds=1e9)
    assert sizes[-1] == 512  # budget to spare: the requested size
