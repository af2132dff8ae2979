"""Every shipped config command parses and resolves exactly as its snapshot (``seal ... --print_config``).

The shipped commands (a base config, then its overlays) are listed in ``scripts/resolved_configs.py``;
their resolved configs are kept under ``tests/cli/resolved_configs/``. Parse only: no model is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from tiny_cli import load_script

from seal_pl.cli import main
from seal_pl.lightning.policy_sft import SFT_LORA

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


resolved = load_script("resolved_configs")
NAMES = [name for name, _ in resolved.COMMANDS]
RESTEM = [name for name, argv in resolved.COMMANDS if argv[0] == "restem"]


def test_configs_exist():
    names = {str(c.relative_to(ROOT)) for c in CONFIGS}
    assert {"configs/knowledge/demo.yaml", "configs/knowledge/reference.yaml"} <= names


def test_every_config_file_is_in_a_shipped_command():
    used = {file for _, argv in resolved.COMMANDS for file in resolved.config_files(argv)}
    assert {str(c.relative_to(ROOT)) for c in CONFIGS} - used == set()
    assert used - {str(c.relative_to(ROOT)) for c in CONFIGS} == set()  # no command names a missing file
    assert len(NAMES) == len(set(NAMES))


@pytest.mark.parametrize("name", NAMES)
def test_shipped_command_resolves_as_its_snapshot(name):
    assert resolved.differences([name]) == {}, "run `python scripts/resolved_configs.py` for the diff"


def test_every_snapshot_belongs_to_a_shipped_command():
    stale = [
        str(path.relative_to(resolved.SNAPSHOTS).with_suffix(""))
        for path in sorted(resolved.SNAPSHOTS.rglob("*.yaml"))
        if str(path.relative_to(resolved.SNAPSHOTS).with_suffix("")) not in NAMES
    ]
    assert stale == []


def test_snapshots_hold_nothing_machine_or_time_specific():
    for path in resolved.SNAPSHOTS.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert str(ROOT) not in text and not re.search(r"\d{8}-\d{6}", text), path


def _header(config: str) -> str:
    """The leading comment block of a config, one line (continuation backslashes dropped)."""
    lines = []
    for line in (ROOT / config).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").replace("\\", " "))
    return " ".join(" ".join(lines).split())


@pytest.mark.parametrize("name", NAMES)
def test_the_last_config_of_a_command_says_how_to_run_it(name):
    argv = dict(resolved.COMMANDS)[name]
    files = resolved.config_files(argv)
    if files[-1].startswith("configs/trainer/"):  # a trainer overlay composes after any task config
        files = ["<task>.yaml", files[-1]]
        expected = f"--config {' --config '.join(files)}"
    else:
        expected = f"seal {argv[0]} --config {' --config '.join(files)}"
    assert expected in _header(files[-1])


@pytest.mark.parametrize("name", RESTEM)
def test_restem_stage_sections_parse_as_seal_commands(name):
    from seal_pl.restem.runner import run_from_args

    run_from_args(dict(resolved.COMMANDS)[name][1:]).check()


@pytest.mark.parametrize("name", [name for name in NAMES if name.startswith("trainer/")])
def test_trainer_config_composes(name):
    argv = dict(resolved.COMMANDS)[name]
    printed = resolved.resolve(argv)
    expected = yaml.safe_load((ROOT / resolved.config_files(argv)[-1]).read_text(encoding="utf-8"))["trainer"]
    for key, value in expected.items():
        if isinstance(value, dict) and "class_path" in value:  # e.g. DDPStrategy: the given init_args survive
            assert printed["trainer"][key]["class_path"] == value["class_path"]
            for arg_name, arg in value.get("init_args", {}).items():
                assert printed["trainer"][key]["init_args"][arg_name] == arg
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


SFT = ["fit", "--model", "seal_pl.lightning.PolicySFTModule", "--data", "seal_pl.lightning.SFTDataModule"]


def test_policy_sft_takes_one_lora_block_with_the_reference_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*SFT, "--model.lora.r", "8", "--print_config"])
    assert exit_info.value.code in (0, None)
    init = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert init["protocol"] == "lora" and "lora_r" not in init
    assert init["lora"]["r"] == 8 and init["lora"]["alpha"] == 128.0  # the other fields keep their defaults
    assert init["lora"]["target_modules"] == SFT_LORA.target_modules  # all attention and MLP projections
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "seal_pl.lightning.PolicySFTModule"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--model.lora.r R rank of each adapter. (type: int, default: 64)" in help_text


@pytest.mark.parametrize(("option", "value"), [("schedule", "exponential"), ("protocol", "qlora")])
def test_policy_sft_refuses_an_unknown_choice_when_parsing(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*SFT, f"--model.{option}", value, "--print_config"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert option in captured.err and not captured.out


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("fit", "validate", "test", "predict", "seal restem"):
        assert word in out


def test_an_overlay_names_the_configs_before_it_and_is_refused_alone(capsys, monkeypatch):
    """Every ``# seal: overlay on`` line names exactly the files before it in its shipped commands,
    every shipped command passes the check, and an overlay given alone is refused in one paragraph."""
    from seal_pl.stage_cli import check_config_files, config_paths, overlay_bases

    monkeypatch.chdir(ROOT)
    marked = set()
    for _, argv in resolved.COMMANDS:
        check_config_files(argv)
        paths = config_paths(argv)
        for index, path in enumerate(paths):
            bases = overlay_bases((ROOT / path).read_text())
            if bases:
                marked.add(path)
                assert [Path(p).name for p in paths[:index]][-len(bases) :] == bases, path
    assert "configs/knowledge/restem_cpu.yaml" in marked and "configs/knowledge/continual_route_demo.yaml" in marked
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", "configs/knowledge/continual_route_demo.yaml"])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is an overlay on demo.yaml and continual_demo.yaml" in err
    assert "--config configs/knowledge/demo.yaml --config configs/knowledge/continual_demo.yaml" in err
