"""Command lines of the shipped knowledge configs shrunk to the tiny random model, for CLI tests.

``tests/`` is on ``sys.path`` (pytest puts the root ``conftest.py``'s folder there), so test files
import this module as ``tiny_cli``.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_knowledge_argv(
    run_dir: Path,
    *extra: str,
    configs: tuple[str, ...] = ("configs/knowledge/demo.yaml",),
    new_tokens: int = 8,
    answer_tokens: int = 4,
    subcommand: str = "test",
) -> list[str]:
    """``seal <subcommand>`` of ``configs`` (composed left to right) on ``tiny-random-llama``: one
    inner epoch, ``new_tokens``-token self-edits, ``answer_tokens``-token answers, no progress bar,
    ``run_dir``; then ``extra``."""
    argv = [subcommand]
    for config in configs:
        argv += ["--config", str(REPO / config)]
    return [
        *argv,
        "--model.init_args.model",
        "tiny-random-llama",
        "--model.init_args.inner.epochs",
        "1",
        "--model.init_args.settings.self_edit_sampling.max_new_tokens",
        str(new_tokens),
        "--model.init_args.settings.answer_max_new_tokens",
        str(answer_tokens),
        "--trainer.enable_progress_bar",
        "false",
        "--run_dir",
        str(run_dir),
        *extra,
    ]
