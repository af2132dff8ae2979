"""The fully resolved config of every shipped command, compared with its snapshot (or rewritten).

    python scripts/resolved_configs.py            # compare: print a diff per changed command, exit 1 on any
    python scripts/resolved_configs.py --update   # rewrite tests/cli/resolved_configs/<name>.yaml
    python scripts/resolved_configs.py knowledge/demo arc/demo   # only these commands

A shipped command is one the README, ``configs/arc/README.md`` or a config's header tells the user
to run (without ``--run_dir``). Each is resolved in this process as ``seal ... --print_config``
does, nothing is instantiated (no model is loaded), and the result is kept as YAML with sorted keys
under ``tests/cli/resolved_configs/<name>.yaml``. Layering the configs (a variant as an overlay on
its base) must leave every snapshot as it is; a deliberate change of a setting shows up here as a
diff and is accepted with ``--update``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import os
import re
import sys
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = ROOT / "tests/cli/resolved_configs"

K = "configs/knowledge/"
A = "configs/arc/"
T = "configs/trainer/"


def _configs(*paths: str) -> list[str]:
    return [arg for path in paths for arg in ("--config", path)]


COMMANDS: list[tuple[str, list[str]]] = [
    # knowledge: single passage
    ("knowledge/demo", ["test", *_configs(K + "demo.yaml")]),
    ("knowledge/reference", ["test", *_configs(K + "reference.yaml")]),
    ("knowledge/graders/judge_local", ["test", *_configs(K + "demo.yaml", K + "graders/judge_local.yaml")]),
    ("knowledge/graders/judge_openai", ["test", *_configs(K + "demo.yaml", K + "graders/judge_openai.yaml")]),
    # knowledge: continual self-edits
    ("knowledge/continual_demo", ["test", *_configs(K + "demo.yaml", K + "continual_demo.yaml")]),
    (
        "knowledge/continual_replay_demo",
        ["test", *_configs(K + "demo.yaml", K + "continual_demo.yaml", K + "continual_replay_demo.yaml")],
    ),
    (
        "knowledge/continual_route_demo",
        ["test", *_configs(K + "demo.yaml", K + "continual_demo.yaml", K + "continual_route_demo.yaml")],
    ),
    (
        "knowledge/continual_compose_demo",
        ["test", *_configs(K + "demo.yaml", K + "continual_demo.yaml", K + "continual_compose_demo.yaml")],
    ),
    ("knowledge/continual_reference", ["test", *_configs(K + "reference.yaml", K + "continual_reference.yaml")]),
    # knowledge: multi-passage continued pretraining
    ("knowledge/cpt_demo", ["fit", *_configs(K + "cpt_demo.yaml")]),
    ("knowledge/cpt_full_demo", ["fit", *_configs(K + "cpt_demo.yaml", K + "cpt_full_demo.yaml")]),
    ("knowledge/cpt_reference", ["fit", *_configs(K + "cpt_demo.yaml", K + "cpt_reference.yaml")]),
    (
        "knowledge/cpt_full_reference",
        ["fit", *_configs(K + "cpt_demo.yaml", K + "cpt_reference.yaml", K + "cpt_full_reference.yaml")],
    ),
    # knowledge: ReST-EM and the distillation baseline
    ("knowledge/restem_demo", ["restem", *_configs(K + "restem_demo.yaml")]),
    ("knowledge/restem_cpu", ["restem", *_configs(K + "restem_demo.yaml", K + "restem_cpu.yaml")]),
    ("knowledge/restem_reference", ["restem", *_configs(K + "restem_reference.yaml")]),
    ("knowledge/distill", ["fit", *_configs(K + "distill.yaml")]),
    # ARC
    ("arc/demo", ["test", *_configs(A + "demo.yaml")]),
    ("arc/demo_icl", ["test", *_configs(A + "demo.yaml", A + "icl.yaml")]),
    (
        "arc/demo_self_edit",
        ["test", *_configs(A + "demo.yaml", A + "self_edit.yaml"), "--model.init_args.n_self_edits", "2"],
    ),
    (
        "arc/demo_schema_self_edits",
        ["test", *_configs(A + "demo.yaml", A + "self_edit.yaml", A + "schema_self_edits.yaml")],
    ),
    ("arc/demo_voting_likelihood", ["test", *_configs(A + "demo.yaml", A + "voting_likelihood.yaml")]),
    ("arc/icl", ["test", *_configs(A + "icl.yaml")]),
    ("arc/self_edit", ["test", *_configs(A + "self_edit.yaml")]),
    ("arc/ttt_fixed", ["test", *_configs(A + "ttt_fixed.yaml")]),
    ("arc/reference", ["test", *_configs(A + "reference.yaml")]),
    ("arc/reference_icl", ["test", *_configs(A + "reference.yaml", A + "icl.yaml")]),
    ("arc/reference_oracle", ["test", *_configs(A + "reference.yaml", A + "ttt_fixed.yaml")]),
    (
        "arc/reference_oracle_likelihood",
        ["test", *_configs(A + "reference.yaml", A + "ttt_fixed.yaml", A + "voting_likelihood.yaml")],
    ),
    ("arc/restem_demo", ["restem", *_configs(A + "restem_demo.yaml")]),
    (
        "arc/restem_schema_self_edits",
        ["restem", *_configs(A + "restem_demo.yaml", A + "restem_schema_self_edits.yaml")],
    ),
    ("arc/restem_reference", ["restem", *_configs(A + "restem_reference.yaml")]),
    # trainer overlays
    ("trainer/cpu", ["test", *_configs(K + "demo.yaml", T + "cpu.yaml")]),
    ("trainer/ddp_cpu", ["fit", *_configs(K + "cpt_demo.yaml", T + "ddp_cpu.yaml")]),
    ("trainer/gpu", ["test", *_configs(K + "reference.yaml", T + "gpu.yaml")]),
]
"""(snapshot name, ``seal`` arguments) of every shipped command; paths relative to the repository."""

_TIMESTAMPED = re.compile(r"\b(runs/[\w.-]*?)-\d{8}-\d{6}\b")


def config_files(argv: list[str]) -> list[str]:
    """The ``--config`` files of one command, in order."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]


def normalise(value):
    """The resolved config without anything machine- or time-specific: the repository's absolute
    path becomes ``.`` and a timestamped default run directory ``runs/<name>-<timestamp>``."""
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item) for item in value]
    if isinstance(value, str):
        value = value.replace(str(ROOT), ".")
        return _TIMESTAMPED.sub(r"\1-<timestamp>", value)
    return value


def resolve(argv: list[str]) -> dict:
    """``seal <argv> --print_config`` as data (run from the repository root, nothing instantiated)."""
    from seal_pl.cli import main

    out = io.StringIO()
    previous = Path.cwd()
    os.chdir(ROOT)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.simplefilter("ignore")
            try:
                main([*argv, "--print_config"])
            except SystemExit as stop:
                if stop.code not in (0, None):
                    raise RuntimeError(f"seal {' '.join(argv)} --print_config exited {stop.code}") from None
    finally:
        os.chdir(previous)
    return normalise(yaml.safe_load(out.getvalue()))


def dump(config: dict) -> str:
    """The snapshot text: YAML with sorted keys (the order of keys in a file does not matter)."""
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False, width=100, allow_unicode=True)


def snapshot_path(name: str) -> Path:
    return SNAPSHOTS / f"{name}.yaml"


def differences(names: list[str] | None = None) -> dict[str, str]:
    """{name: unified diff} for every command whose resolved config differs from its snapshot (a
    missing snapshot, and with ``names`` left out a snapshot no command writes, count too)."""
    wanted = dict(COMMANDS) if names is None else {name: dict(COMMANDS)[name] for name in names}
    out = {}
    for name, argv in wanted.items():
        path = snapshot_path(name)
        current = resolve(argv)
        if not path.is_file():
            out[name] = f"no snapshot {path.relative_to(ROOT)} (run with --update)"
            continue
        expected = yaml.safe_load(path.read_text(encoding="utf-8"))
        if expected != current:
            diff = difflib.unified_diff(
                dump(expected).splitlines(),
                dump(current).splitlines(),
                f"{name} (snapshot)",
                f"{name} (now)",
                lineterm="",
            )
            out[name] = "\n".join(diff)
    if names is None:
        for path in sorted(SNAPSHOTS.rglob("*.yaml")):
            name = str(path.relative_to(SNAPSHOTS).with_suffix(""))
            if name not in wanted:
                out[name] = f"snapshot {path.relative_to(ROOT)} belongs to no command in COMMANDS"
    return out


def update(names: list[str] | None = None) -> list[str]:
    """Write the snapshots of ``names`` (default: every command); returns the names written."""
    wanted = dict(COMMANDS) if names is None else {name: dict(COMMANDS)[name] for name in names}
    for name, argv in wanted.items():
        path = snapshot_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# seal {' '.join(argv)} --print_config  (written by scripts/resolved_configs.py --update)\n"
        path.write_text(header + dump(resolve(argv)), encoding="utf-8")
    return list(wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these commands (default: all)")
    parser.add_argument("--update", action="store_true", help="rewrite the snapshots instead of comparing")
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - dict(COMMANDS).keys())
    if unknown:
        parser.error(f"unknown command names: {', '.join(unknown)}")
    names = args.names or None
    if args.list:
        for name, command in COMMANDS:
            if names is None or name in names:
                print(f"{name}: seal {' '.join(command)}")
        return 0
    if args.update:
        for name in update(names):
            print(f"wrote {snapshot_path(name).relative_to(ROOT)}")
        return 0
    found = differences(names)
    for name, diff in found.items():
        print(f"--- {name}\n{diff}\n")
    checked = len(names or COMMANDS)
    print(f"{checked} commands checked, {len(found)} differ" if found else f"{checked} commands: all as the snapshots")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
