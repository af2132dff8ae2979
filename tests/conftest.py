"""Shared fixtures: a tiny random Llama with a byte-level tokenizer, built offline; one thread per test process."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Test processes share the cores (pyproject: ``-n auto``): one thread each, idle threads asleep
    # (OpenMP's default spin-waiting makes processes that share cores slow each other 5-10x). Set
    # before torch starts OpenMP; subprocesses of the tests inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from seal_pl.models.loading import load_model_and_tokenizer
from seal_pl.models.tiny import save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A tiny model folder in Hugging Face layout (exercises the real loading path)."""
    return str(save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture
def tiny_model(tiny_checkpoint):
    """A fresh (model, tokenizer) pair for tests that modify the model."""
    return load_model_and_tokenizer(tiny_checkpoint)


@pytest.fixture(autouse=True)
def _restore_torch_state():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
