"""Generation backends (Hugging Face by default; vLLM optional) behind one interface."""

from seal_pl.generation.base import GeneratorBackend, Prompt, SamplingParams, cut_at_stop, render_prompt
from seal_pl.generation.hf import HFGenerator

__all__ = ["GeneratorBackend", "HFGenerator", "Prompt", "SamplingParams", "cut_at_stop", "render_prompt"]
