"""The generator interface: how self-edits are sampled and questions answered.

A backend is chosen in config by ``class_path`` (``seal_pl.generation.HFGenerator`` by default,
``seal_pl.generation.vllm.VLLMGenerator`` on a GPU machine with vLLM) and bound at run time to the
loaded model, its tokenizer and the adapter bank. A prompt is either a plain string (sent as is) or
a list of chat messages (rendered with the model's own chat template). ``adapter_slots`` picks, per
prompt, which trained adapter answers it (``None`` or ``-1`` = the base model), so the answers of K
adapted models come out of one batched generation.

Every path that writes the bound model's base weights in memory (a merge of an adapter into the
base, full fine-tuning, putting the base weights back) calls
:meth:`GeneratorBackend.base_weights_changed`, so that a backend serving its own copy of the weights
(vLLM) serves the current ones from the next ``generate`` on; a backend that reads the in-memory
model (Hugging Face) has nothing to do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

Prompt = str | list[dict[str, str]]


@dataclass
class SamplingParams:
    """Decoding settings.

    Args:
        max_new_tokens: generation budget per prompt.
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling threshold.
        stop: strings that end a completion (cut from the returned text).
        seed: seed for sampling (same seed, same samples).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0


def render_prompt(tokenizer, prompt: Prompt) -> tuple[str, bool]:
    """Text to feed the model, and whether it was rendered by the chat template."""
    if isinstance(prompt, str):
        return prompt, False
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False), True


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the earliest stop string."""
    cut = len(text)
    for marker in stop:
        index = text.find(marker)
        if 0 <= index < cut:
            cut = index
    return text[:cut]


class GeneratorBackend(ABC):
    """Generates completions with the base model or with adapters of the bound adapter bank."""

    model = None
    tokenizer = None
    bank = None

    def bind(self, model, tokenizer, bank=None) -> GeneratorBackend:
        self.model, self.tokenizer, self.bank = model, tokenizer, bank
        return self

    def base_weights_changed(self, restored: bool = False) -> None:
        """The bound model's base weights changed in memory: later ``generate`` calls must use the new ones.

        Args:
            restored: the base weights are again exactly those the backend was bound with.

        This default does nothing, which is right for a backend that generates with the in-memory
        model; a backend serving a copy of the weights overrides it.
        """

    def check_call(self, prompts: Sequence[Prompt], adapter_slots: Sequence[int] | None, ready: bool) -> None:
        """Shared argument checks of ``generate``: the backend is bound, one slot per prompt."""
        if not ready:
            raise RuntimeError(f"{type(self).__name__}.bind(model, tokenizer, bank) must be called before generate()")
        if adapter_slots is not None and len(adapter_slots) != len(prompts):
            raise ValueError("adapter_slots needs one entry per prompt")

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        adapter_slots: Sequence[int] | None = None,
    ) -> list[str]:
        """One completion per prompt, in order."""
