"""Command lines of the shipped knowledge configs shrunk to the tiny random model, for CLI tests,
and the scripts of ``scripts/`` loaded as modules.

``tests/`` is on ``sys.path`` (pytest puts the root ``conftest.py``'s folder there), so test files
import this module as ``tiny_cli``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
