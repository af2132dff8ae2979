"""ReST-EM round bookkeeping (plain Python, no Lightning): the run-directory layout, which stage of
which round is finished, the policy chain, and the ``seal`` stage configs of a round.

A ReST-EM run directory::

    <run_dir>/
      config.yaml                the resolved ``seal restem`` config
      results.json               per-round summaries (rewritten after every round)
      tensorboard/               outer-loop curves: rewards, fraction kept, SFT loss, held-out metrics
      base/                      held-out evaluation of the base model (optional)
        eval.yaml  eval/  summary.json
      round_<k>/
        estep.yaml               the E-step as a ``seal predict`` config (runs alone too)
        estep/                   its run dir: the E-step module's record shards and results.json
        <scored>.jsonl           every self-edit, prompt, completion, reward, seed, as its domain scored
                                 it (knowledge self_edits.jsonl, ARC arc_scored_self_edits.jsonl)
        sft.jsonl                the kept (prompt, completion) pairs
        filter.json              reward statistics and how many were kept
        timing.json              wall seconds of each stage as it ran
        sft.yaml  sft/           the M-step as a ``seal fit`` config and its run dir (loss curve)
        policy/                  the merged policy (safetensors): next round's policy and learner
        eval.yaml  eval/         held-out evaluation (``seal test``) of this round's policy
        summary.json             written last: the round is finished

Every file that marks a step as finished is written atomically after the step, so a killed run
resumes at the step (and, inside a stage, the item) it was in.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seal_pl.records import POLICY_MARKER, Record
from seal_pl.rundir import is_multiprocess  # noqa: F401  (re-exported: stage configs and trainers)

STAGE_COMMANDS = {"estep": "predict", "sft": "fit", "eval": "test"}
"""The ``seal`` subcommand that runs each stage."""


DEVICE_KEYS = frozenset(
    {
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "enable_progress_bar",
        "enable_model_summary",
        "log_every_n_steps",
        "logger",
        "callbacks",
        "plugins",
        "default_root_dir",
    }
)
"""Trainer options that may change between invocations of one run (hardware, logging)."""

NON_SEMANTIC_KEYS = frozenset({"rounds", "launcher", "run_dir", "config", "print_config", "__path__"})
"""Top-level ``seal restem`` options that do not change the results of finished rounds."""


@dataclass(frozen=True)
class RoundLayout:
    """The paths of one round (``round_<k>``) or of the base-model evaluation (``base``)."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | Path, index: int | None) -> RoundLayout:
        """Round ``index`` of a run; ``None`` is the base-model evaluation."""
        return cls(Path(run_dir) / ("base" if index is None else f"round_{index}"))

    def stage_config(self, stage: str) -> Path:
        return self.root / f"{stage}.yaml"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def scored_self_edits(self, kind: type[Record]) -> Path:
        """The round's scored self-edits, in the file of the domain's record kind (``<stem>.jsonl``)."""
        return kind.merged(self.root)

    @property
    def sft_set(self) -> Path:
        return self.root / "sft.jsonl"

    @property
    def sft_all_rounds(self) -> Path:
        """The kept pairs of this round and every earlier one (``sft_data: all_rounds``)."""
        return self.root / "sft_all_rounds.jsonl"

    @property
    def filter_stats(self) -> Path:
        return self.root / "filter.json"

    @property
    def policy(self) -> Path:
        return self.root / "policy"

    @property
    def policy_marker(self) -> Path:
        return self.policy / POLICY_MARKER

    @property
    def timing(self) -> Path:
        """Wall seconds of each stage of the round, recorded as the stage runs."""
        return self.root / "timing.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def done(self) -> bool:
        return self.summary.is_file()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def input_policy(run_dir: str | Path, index: int, base_model: str) -> str:
    """The policy (and learner) of round ``index``: the base model, then the previous round's output."""
    if index == 0:
        return base_model
    previous = RoundLayout.of(run_dir, index - 1)
    if not previous.done:
        raise RuntimeError(f"round {index} needs round {index - 1} to be finished ({previous.summary} is missing)")
    return read_json(previous.summary)["policy_out"]


def finished_rounds(run_dir: str | Path) -> list[int]:
    """Indices of the finished rounds, in order, up to the first unfinished one."""
    out = []
    index = 0
    while RoundLayout.of(run_dir, index).done:
        out.append(index)
        index += 1
    return out


def _with_init_args(section: dict[str, Any], **init_args: Any) -> dict[str, Any]:
    out = copy.deepcopy(section)
    out.setdefault("init_args", {})
    out["init_args"] = {**(out["init_args"] or {}), **init_args}
    return out


def stage_config(
    stage: dict[str, Any],
    *,
    shared_trainer: dict[str, Any] | None,
    trainer_defaults: dict[str, Any],
    seed: int,
    model_args: dict[str, Any],
    data_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete ``seal`` config for one stage of one round.

    Trainer options: ``trainer_defaults`` < the run's shared ``trainer`` < the stage's ``trainer``.
    ``model_args``/``data_args`` override the stage's ``init_args`` (the round's model, paths).
    """
    if not stage.get("model") or not stage.get("data"):
        raise ValueError("a stage needs a model and a data section (class_path + init_args)")
    trainer = {**trainer_defaults, **(shared_trainer or {}), **(stage.get("trainer") or {})}
    return {
        "seed_everything": seed,
        "trainer": trainer,
        "model": _with_init_args(stage["model"], **model_args),
        "data": _with_init_args(stage["data"], **(data_args or {})),
    }


def semantic_config(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a ``seal restem`` config that decide the results of finished rounds.

    Left out: the number of rounds (a run can be extended), the launcher, paths, and the trainer's
    hardware and logging options.
    """
    out = {k: copy.deepcopy(v) for k, v in config.items() if k not in NON_SEMANTIC_KEYS}

    def strip(trainer: Any) -> Any:
        if not isinstance(trainer, dict):
            return trainer
        return {k: v for k, v in trainer.items() if k not in DEVICE_KEYS}

    out["trainer"] = strip(out.get("trainer"))
    for stage in STAGE_COMMANDS:
        section = out.get(stage)
        if isinstance(section, dict):
            section["trainer"] = strip(section.get("trainer"))
    return out


def run_results(run_dir: str | Path) -> dict[str, Any]:
    """``results.json`` of a run: the base evaluation and every finished round's summary."""
    base = RoundLayout.of(run_dir, None)
    return {
        "experiment": "restem",
        "base": read_json(base.summary) if base.done else None,
        "rounds": [read_json(RoundLayout.of(run_dir, k).summary) for k in finished_rounds(run_dir)],
    }
