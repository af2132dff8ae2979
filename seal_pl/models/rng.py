"""Seeded blocks that leave every random generator as they found it.

``torch.manual_seed`` seeds the CPU generator and every CUDA device's; ``torch.random.fork_rng``
restores only the devices it is given. A block that seeds must therefore fork the CUDA generators
too, or it silently changes the random stream of everything that runs after it on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with all torch generators seeded with ``seed``; restore them all afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
