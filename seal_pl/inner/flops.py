"""Compute accounting for the inner loop: the machine's matrix-multiply peak and training FLOPs.

The benchmark (``scripts/bench_inner_loop.py``) and the ReST-EM runner both report achieved FLOP/s
against a peak measured on the same machine in the same run, so the fraction means something on
any CPU or GPU.
"""

from __future__ import annotations

import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize(device: str) -> None:
    """Wait for queued kernels on an accelerator (nothing to wait for on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_matmul_flops(
    dtype_name: str = "fp32", device: str = "cpu", size: int = 2048, repeats: int = 10, budget_seconds: float = 10.0
) -> float:
    """Measured FLOP/s of repeated square matrix products (``size`` 2048 on CPU, 8192 on an accelerator).

    On a CPU the products are made smaller (halving ``size``, down to 256) until the probe's
    estimated time fits ``budget_seconds``: a CPU without native bf16 instructions multiplies bf16
    at a few GFLOP/s, where 12 products of 2048 x 2048 would take minutes.
    """
    dtype = DTYPES[dtype_name]
    if device != "cpu":
        size, repeats = 8192, 50  # large enough to saturate an accelerator
    else:
        small = min(size, 256)
        a = torch.randn(small, small, dtype=dtype)
        a @ a
        start = time.perf_counter()
        a @ a
        rate = 2 * small**3 / max(time.perf_counter() - start, 1e-9)  # FLOP/s, a first estimate
        while size > small and 2 * size**3 * (repeats + 2) / rate > budget_seconds:
            size //= 2
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def adapter_training_flops(n_params: int, processed_tokens: int) -> int:
    """FLOPs of adapter training: forward (2N) and backward through the frozen weights (2N) per token."""
    return 4 * n_params * processed_tokens
