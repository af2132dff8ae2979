"""Shared fixtures: a tiny random Llama with a byte-level tokenizer, built offline."""

from __future__ import annotations

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
