"""Every YAML under configs/ parses against the current signatures (``seal ... --print_config``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seal_pl.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
TASK_CONFIGS = [c for c in CONFIGS if "trainer" not in c.parts]
DEMO = ROOT / "configs/knowledge/demo.yaml"


def _is_overlay(config: Path) -> bool:
    """A partial config (e.g. a grader) meant to be composed after a full one."""
    return "data" not in (yaml.safe_load(config.read_text(encoding="utf-8")) or {})


TRAINER_CONFIGS = [c for c in CONFIGS if "trainer" in c.parts]


def _is_restem(config: Path) -> bool:
    """A ``seal restem`` config: stage sections (estep, sft, eval) instead of model/data."""
    return "estep" in (yaml.safe_load(config.read_text(encoding="utf-8")) or {})


RESTEM_CONFIGS = [c for c in TASK_CONFIGS if _is_restem(c)]
TASK_CONFIGS = [c for c in TASK_CONFIGS if not _is_restem(c)]


def test_configs_exist():
    names = {str(c.relative_to(ROOT)) for c in CONFIGS}
    assert {"configs/knowledge/demo.yaml", "configs/knowledge/reference.yaml"} <= names


def _subcommand(config: Path) -> str:
    header = config.read_text(encoding="utf-8")
    for word in ("fit", "validate", "predict", "test"):
        if f"seal {word} " in header:
            return word
    return "test"


@pytest.mark.parametrize("config", TASK_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_task_config_parses(config: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        base = ["--config", str(DEMO)] if _is_overlay(config) else []
        main([_subcommand(config), *base, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("seal_pl.")
    assert printed["data"]["class_path"].startswith("seal_pl.")


def _restem_args(config: Path) -> list[str]:
    """``--config`` arguments for a ReST-EM config; an overlay (no ``rounds``) goes after the
    ``restem_demo.yaml`` of its folder."""
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    base = [] if "rounds" in raw else ["--config", str(config.parent / "restem_demo.yaml")]
    return [*base, "--config", str(config)]


@pytest.mark.parametrize("config", RESTEM_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_restem_config_parses(config: Path, capsys):
    from seal_pl.restem.runner import run_from_args

    args = _restem_args(config)
    with pytest.raises(SystemExit) as exit_info:
        main(["restem", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for stage in ("estep", "sft", "eval"):
        assert printed[stage]["model"]["class_path"].startswith("seal_pl.")
        assert printed[stage]["data"]["class_path"].startswith("seal_pl.")
    written = yaml.safe_load(config.read_text(encoding="utf-8"))
    for stage in ("estep", "eval"):  # a writer the file sets survives the composition
        writer = written[stage]["model"].get("init_args", {}).get("self_edit_writer")
        if writer:
            assert printed[stage]["model"]["init_args"]["self_edit_writer"]["class_path"] == writer["class_path"]
    run_from_args(args).check()  # every stage parses as its `seal` subcommand


@pytest.mark.parametrize("config", TRAINER_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_trainer_config_composes(config: Path, capsys):
    with pytest.raises(SystemExit):
        main(["test", "--config", str(ROOT / "configs/knowledge/demo.yaml"), "--config", str(config), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load(config.read_text(encoding="utf-8"))["trainer"]
    for key, value in expected.items():
        if isinstance(value, dict) and "class_path" in value:  # e.g. DDPStrategy: the given init_args survive
            assert printed["trainer"][key]["class_path"] == value["class_path"]
            for name, arg in value.get("init_args", {}).items():
                assert printed["trainer"][key]["init_args"][name] == arg
        else:
            assert printed["trainer"][key] == value


def test_gpu_config_is_multiprocess_with_a_long_collective_timeout():
    from datetime import timedelta

    from jsonargparse import ArgumentParser

    from seal_pl.restem.layout import is_multiprocess

    trainer = yaml.safe_load((ROOT / "configs/trainer/gpu.yaml").read_text(encoding="utf-8"))["trainer"]
    assert is_multiprocess(trainer) and is_multiprocess({**trainer, "devices": 1})
    parser = ArgumentParser()
    parser.add_argument("--timeout", type=timedelta)
    timeout = parser.parse_args(["--timeout", trainer["strategy"]["init_args"]["timeout"]]).timeout
    assert timeout > timedelta(minutes=30)  # Lightning's default


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("fit", "validate", "test", "predict", "seal restem"):
        assert word in out
