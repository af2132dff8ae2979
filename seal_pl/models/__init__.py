"""Model loading: local folders, hub names, GGUF files, the embedded default and tiny test models."""

from seal_pl.models.loading import (
    EMBEDDED_MODELS,
    TINY_MODEL_NAME,
    ModelNotAvailableError,
    load_model_and_tokenizer,
    resolve_model_path,
)

__all__ = [
    "EMBEDDED_MODELS",
    "TINY_MODEL_NAME",
    "ModelNotAvailableError",
    "load_model_and_tokenizer",
    "resolve_model_path",
]
