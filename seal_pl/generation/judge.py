"""A local-model judge backend for :class:`~seal_pl.knowledge.grading.LLMJudgeGrader`.

The yes/no judge can run on any causal LM that loads locally (the embedded model included), so
grading with a judge never requires a network service. Configure it by ``class_path``:

    grader:
      class_path: seal_pl.knowledge.grading.LLMJudgeGrader
      init_args:
        judge:
          class_path: seal_pl.generation.judge.LocalModelJudge
          init_args: {model: smollm2-135m-instruct}
        cache_path: runs/judge_cache.jsonl
"""

from __future__ import annotations

import os

import torch

from seal_pl.generation.base import SamplingParams
from seal_pl.generation.hf import HFGenerator
from seal_pl.models.loading import load_model_and_tokenizer


class LocalModelJudge:
    """Asks a local chat model each judge prompt and returns its short reply.

    Args:
        model: model name or path (loaded lazily on first use, once).
        max_new_tokens: reply budget (a yes/no answer needs very few).
        batch_size: prompts per generate call.
        device: where the judge runs (null: this process's GPU when there is one, else the CPU;
            under DDP each rank uses its own ``LOCAL_RANK`` GPU).
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        max_new_tokens: int = 4,
        batch_size: int = 16,
        device: str | None = None,
    ):
        self.model_name = model
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.name = f"local:{model}"
        self._generator = HFGenerator(batch_size=batch_size)
        self._loaded = False

    def complete(self, prompts: list[str]) -> list[str]:
        if not self._loaded:
            model, tokenizer = load_model_and_tokenizer(self.model_name)
            self._generator.bind(model.to(judge_device(self.device)), tokenizer)
            self._loaded = True
        chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
        params = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        return self._generator.generate(chats, params)


def judge_device(device: str | None) -> torch.device:
    """``device`` if given; else this rank's GPU (``LOCAL_RANK``) when CUDA is available, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
