"""Malformed inputs through the real ``seal`` CLI, one table: every one exits 2 with a readable error.

Each row builds the files a new user might get wrong (data files, self-edit files, ARC files,
configs, option values, run directories, model names) in a temporary directory, runs ``seal`` in
this process on the tiny model, and checks what the user sees: exit status 2, no Python traceback,
and the message naming the file, the record or the option at fault. Option values are refused by
the parser (typed options: ``--help`` lists what is allowed) or by the class itself; user errors
raised later print one paragraph (:mod:`seal_pl.errors`). Nothing here may leave a
``results.json`` behind: a refused run has no results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tiny_cli import tiny_knowledge_argv

from seal_pl.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")

REPO = Path(__file__).resolve().parents[2]


def passage(pid: str = "p1", answer: str = "1903", **changes) -> dict:
    record = {
        "id": pid,
        "title": "Orvel Pass",
        "context": "Orvel Pass opened in 1903.",
        "questions": [{"id": f"{pid}-q0", "question": "When did Orvel Pass open?", "answer": answer}],
    }
    record.update(changes)
    return record


def arc_task(n_train: int = 1) -> dict:
    return {"train": [{"input": [[1]], "output": [[2]]}] * n_train, "test": [{"input": [[3]]}]}


TASK_TEXT = json.dumps(arc_task())


def write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def knowledge(tmp: Path, data=None, *extra: str, config: str = "configs/knowledge/demo.yaml") -> list[str]:
    """``seal test`` of the knowledge table on the tiny model, on ``data`` (records, a path or text)."""
    if data is None:
        data = [passage("p1"), passage("p2")]
    path = data if isinstance(data, Path) else write(tmp / "passages.json", data)
    return tiny_knowledge_argv(
        tmp / "run",
        "--model.init_args.conditions",
        "[passage_only, self_edit]",
        "--data.init_args.path",
        str(path),
        "--data.init_args.self_edits_path",
        "null",
        *extra,
        configs=(config,),
        new_tokens=4,
        answer_tokens=2,
    )


def arc(tmp: Path, challenges=None, model: dict | None = None, **data) -> list[str]:
    """``seal test`` of the ARC module on the tiny model with a Kaggle-format challenges file."""
    if challenges is None:
        challenges = {"t1": arc_task()}
    path = challenges if isinstance(challenges, Path) else write(tmp / "challenges.json", challenges)
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "inference_mode": False, "enable_progress_bar": False},
        "model": {
            "class_path": "seal_pl.lightning.arc.ARCTTTModule",
            "init_args": {"model": "tiny-random-llama", **(model or {})},
        },
        "data": {
            "class_path": "seal_pl.lightning.arc.ARCDataModule",
            "init_args": {"source": "kaggle", "challenges_path": str(path), **data},
        },
    }
    return ["test", "--config", str(write(tmp / "arc.yaml", yaml.safe_dump(config))), "--run_dir", str(tmp / "run")]


def fixed_mode(**changes) -> dict:
    """ARC module options for ``fixed`` mode with a recipe whose values ``changes`` replace."""
    recipe = {"basic": True, "size": False, "chain": False, "repeat": False, "strategy": "all_tokens"}
    return {"mode": "fixed", "fixed_config": {**recipe, "learning_rate": 1e-4, "epochs": 1, **changes}}


SFT_BASE = ["--model", "seal_pl.lightning.PolicySFTModule", "--model.model", "tiny-random-llama"]


def sft(tmp: Path, *extra: str) -> list[str]:
    """``seal fit`` of the policy on a valid prompt/completion file."""
    data = write(tmp / "sft.jsonl", json.dumps({"prompt": "Say it.", "completion": "It."}) + "\n")
    return [
        "fit",
        *SFT_BASE,
        "--data",
        "seal_pl.lightning.SFTDataModule",
        "--data.path",
        str(data),
        "--trainer.max_epochs",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--run_dir",
        str(tmp / "run"),
        *extra,
    ]


RESTEM = {
    "model": "tiny-random-llama",
    "rounds": 1,
    "evaluate_base": False,
    "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    "estep": {
        "model": {
            "class_path": "seal_pl.lightning.KnowledgeIncorporationModule",
            "init_args": {"conditions": ["no_adaptation", "self_edit"], "n_self_edits": 2},
        },
        "data": {"class_path": "seal_pl.lightning.KnowledgeDataModule", "init_args": {"limit": 1}},
    },
    "sft": {"trainer": {"max_epochs": 1}},
}


def restem(tmp: Path, **changes) -> list[str]:
    """``seal restem`` with the tiny config above, ``changes`` merged in (a dotted key sets a nested one)."""
    config = json.loads(json.dumps(RESTEM))
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[last] = value
    path = write(tmp / "restem.yaml", yaml.safe_dump(config))
    return ["restem", "--config", str(path), "--run_dir", str(tmp / "run")]


def squad(paragraph_qas: list) -> dict:
    return {
        "data": [{"title": "Orvel", "paragraphs": [{"context": "Orvel Pass opened in 1903.", "qas": paragraph_qas}]}]
    }


@dataclass
class Case:
    """One malformed input: how to build the command, and what the message must name."""

    name: str
    argv: Callable[[Path], list[str]]
    named: tuple[str, ...]  # texts the message must contain; ``{tmp}`` is the test's directory


def flat(text: str) -> str:
    return " ".join(text.split())


def _first_run_then_change(tmp: Path) -> list[str]:
    """A finished run, then the same run directory with other data: a conflicting run dir."""
    assert _seal(knowledge(tmp, None, "--data.init_args.limit", "1"))[0] == 0
    return knowledge(tmp, None, "--data.init_args.limit", "2")


def _locked_by_another_process(tmp: Path) -> list[str]:
    code = "import sys, time\nfrom seal_pl.rundir import lock_run_dir\nlock_run_dir(sys.argv[1])\nprint('ok', flush=True)\ntime.sleep(120)\n"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp / "run")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ok"
    _HOLDERS.append(holder)
    return knowledge(tmp)


_HOLDERS: list[subprocess.Popen] = []

CASES = [
    # ---- option values: the parser refuses them (typed options), naming the option
    Case("inner lr negative", lambda t: knowledge(t, None, "--model.init_args.inner.lr", "-1"), ("lr", "v>0")),
    Case("inner lr NaN", lambda t: knowledge(t, None, "--model.init_args.inner.lr", "nan"), ("lr",)),
    Case("inner lr zero", lambda t: knowledge(t, None, "--model.init_args.inner.lr", "0"), ("lr", "v>0")),
    Case("inner epochs zero", lambda t: knowledge(t, None, "--model.init_args.inner.epochs", "0"), ("epochs", "v>0")),
    Case("inner epochs negative", lambda t: knowledge(t, None, "--model.init_args.inner.epochs", "-2"), ("epochs",)),
    Case(
        "inner schedule typo",
        lambda t: knowledge(t, None, "--model.init_args.inner.schedule", "cosin"),
        ("schedule", "cosin"),
    ),
    Case(
        "inner padding unknown", lambda t: knowledge(t, None, "--model.init_args.inner.padding", "none"), ("padding",)
    ),
    Case(
        "inner precision unknown",
        lambda t: knowledge(t, None, "--model.init_args.inner.precision", "fp16"),
        ("precision",),
    ),
    Case(
        "inner warmup_ratio above 1",
        lambda t: knowledge(t, None, "--model.init_args.inner.warmup_ratio", "1.5"),
        ("warmup_ratio",),
    ),
    Case("model dtype unknown", lambda t: knowledge(t, None, "--model.init_args.dtype", "float8"), ("dtype", "float8")),
    Case(
        "ARC fixed_config lr zero",
        lambda t: arc(t, model=fixed_mode(learning_rate=0.0)),
        ("learning_rate",),
    ),
    Case(
        "ARC fixed_config epochs zero",
        lambda t: arc(t, model=fixed_mode(epochs=0)),
        ("epochs",),
    ),
    Case("SFT lr negative", lambda t: sft(t, "--model.lr=-3e-4"), ("lr", "v>0")),
    Case("SFT schedule unknown", lambda t: sft(t, "--model.schedule", "cosine_with_restarts"), ("schedule",)),
    Case(
        "unknown option",
        lambda t: knowledge(t, None, "--model.init_args.inner.learning_rate", "1e-3"),
        ("learning_rate",),
    ),
    # ---- data files: the file and the record are named
    Case("data path missing", lambda t: knowledge(t, t / "nowhere.json"), ("nowhere.json",)),
    Case("data path is a directory", lambda t: knowledge(t, t), ("{tmp}",)),
    Case("passage file not JSON", lambda t: knowledge(t, '[{"id": "p1", "title": '), ("passages.json",)),
    Case(
        "repeated key in a passage",
        lambda t: knowledge(t, json.dumps([passage()])[:-2] + ', "title": "Again"}]'),
        ("passages.json", "'title' appears twice"),
    ),
    Case("passage id used twice", lambda t: knowledge(t, [passage("p1"), passage("p1")]), ("passages.json", "p1")),
    Case(
        "gold answer 'the'", lambda t: knowledge(t, [passage("p1", answer="the")]), ("passages.json", "p1-q0", "'the'")
    ),
    Case("gold answer '!!!'", lambda t: knowledge(t, [passage("p1", answer="!!!")]), ("passages.json", "'!!!'")),
    Case("gold answer empty", lambda t: knowledge(t, [passage("p1", answer="")]), ("passages.json", "p1")),
    Case(
        "passage without context",
        lambda t: knowledge(t, [{k: v for k, v in passage().items() if k != "context"}]),
        ("passages.json", "context"),
    ),
    Case("questions not a list", lambda t: knowledge(t, [passage(questions="When?")]), ("passages.json", "questions")),
    Case(
        "SQuAD answer normalises to nothing",
        lambda t: knowledge(t, squad([{"id": "q1", "question": "When?", "answers": [{"text": "?"}]}])),
        ("passages.json", "q1"),
    ),
    Case("empty passage list", lambda t: knowledge(t, []), ("passages.json", "selects no passages")),
    Case("limit 0", lambda t: knowledge(t, None, "--data.init_args.limit", "0"), ("passages.json", "limit=0")),
    Case(
        "CPT limit 0",
        lambda t: [
            "fit",
            "--config",
            str(REPO / "configs/knowledge/cpt_demo.yaml"),
            "--model.init_args.model",
            "tiny-random-llama",
            "--data.init_args.path",
            str(write(t / "cpt.json", [passage("p1"), passage("p2")])),
            "--data.init_args.limit",
            "0",
            "--run_dir",
            str(t / "run"),
        ],
        ("cpt.json", "limit=0"),
    ),
    Case(
        "start past the end", lambda t: knowledge(t, None, "--data.init_args.start", "7"), ("passages.json", "start 7")
    ),
    Case("start negative", lambda t: knowledge(t, None, "--data.init_args.start", "-1"), ("start",)),
    Case("limit negative", lambda t: knowledge(t, None, "--data.init_args.limit", "-4"), ("limit",)),
    Case(
        "self-edit file with a repeated key",
        lambda t: knowledge(
            t,
            None,
            "--data.init_args.self_edits_path",
            str(write(t / "edits.jsonl", '{"id": "p1", "id": "p2", "completions": ["x"]}\n')),
        ),
        ("edits.jsonl", "'id' appears twice"),
    ),
    Case(
        "self-edit file missing",
        lambda t: knowledge(t, None, "--data.init_args.self_edits_path", str(t / "no_edits.jsonl")),
        ("no_edits.jsonl",),
    ),
    Case(
        "ARC task id twice",
        lambda t: arc(t, write(t / "twice.json", f'{{"t1": {TASK_TEXT}, "t1": {TASK_TEXT}}}')),
        ("twice.json", "t1"),
    ),
    Case(
        "ARC task without demonstrations",
        lambda t: arc(t, {"t1": arc_task(), "t2": arc_task(n_train=0)}),
        ("challenges.json", "t2", "no demonstrations"),
    ),
    Case("ARC limit 0", lambda t: arc(t, None, limit=0), ("challenges.json", "limit=0")),
    Case("ARC challenges file missing", lambda t: arc(t, t / "no_challenges.json"), ("no_challenges.json",)),
    Case("ARC unknown task id", lambda t: arc(t, None, task_ids=["zz"]), ("zz",)),
    Case(
        "ARC cell value out of range",
        lambda t: arc(t, {"t1": {"train": [{"input": [[11]], "output": [[2]]}], "test": [{"input": [[3]]}]}}),
        ("challenges.json", "t1"),
    ),
    Case(
        "ARC ragged grid",
        lambda t: arc(t, {"t1": {"train": [{"input": [[1, 2], [3]], "output": [[2]]}], "test": [{"input": [[3]]}]}}),
        ("challenges.json", "t1"),
    ),
    # ---- configs
    Case("config file missing", lambda t: ["test", "--config", str(t / "missing.yaml")], ("missing.yaml",)),
    Case(
        "config not YAML",
        lambda t: ["test", "--config", str(write(t / "bad.yaml", "model: [unclosed\n"))],
        ("bad.yaml",),
    ),
    Case(
        "unknown model name",
        lambda t: knowledge(t, None, "--model.init_args.model", "no-such-model-xyz"),
        ("no-such-model-xyz",),
    ),
    # ---- run directories
    Case("run dir is a file", lambda t: knowledge(t, None, "--run_dir", str(write(t / "a_file", "x"))), ("a_file",)),
    Case("run dir holds another configuration", _first_run_then_change, ("different model/data configuration",)),
    Case("run dir locked by a running process", _locked_by_another_process, ("pid",)),
    # ---- seal restem configs
    Case(
        "restem without the self_edit condition",
        lambda t: restem(
            t,
            estep__model={
                "class_path": "seal_pl.lightning.KnowledgeIncorporationModule",
                "init_args": {"conditions": ["no_adaptation"]},
            },
        ),
        ("self_edit",),
    ),
    Case("restem gain over passage_only without it", lambda t: restem(t, gain_over="passage_only"), ("passage_only",)),
    Case("restem top_k 0", lambda t: restem(t, top_k=0), ("top_k",)),
    Case("restem gain_over unknown", lambda t: restem(t, gain_over="baseline"), ("gain_over",)),
    Case("restem config missing", lambda t: ["restem", "--config", str(t / "none.yaml")], ("none.yaml",)),
    Case("restem unknown key", lambda t: restem(t, roundz=2), ("roundz",)),
]


def _seal(argv: list[str]) -> tuple[int, str]:
    """Run ``seal argv`` in this process: (exit status, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return code, err.getvalue()


@pytest.fixture(autouse=True)
def _stop_lock_holders():
    yield
    while _HOLDERS:
        holder = _HOLDERS.pop()
        holder.kill()
        holder.wait()


def test_the_table_covers_forty_malformed_inputs():
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_input_gets_a_clear_error(case, tmp_path):
    argv = case.argv(tmp_path)
    code, stderr = _seal(argv)
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert "error:" in stderr
    for text in case.named:
        assert text.format(tmp=tmp_path) in flat(stderr), stderr
    assert not (tmp_path / "run" / "results.json").exists() or case.name == "run dir holds another configuration"


NESTED = """Parser key "model":
  Does not validate against any of the Union subtypes
  Errors:
    - Problem with given class_path 'seal_pl.lightning.KnowledgeIncorporationModule':
        Parser key "inner":
          Does not validate against any of the Union subtypes
          Errors:
            - Problem with given class_path 'seal_pl.inner.InnerLoopConfig':
                Parser key "lr":
                  Not of type PositiveFloat: -1 does not conform to restriction v>0
            - Expected a <class 'NoneType'>
  Given value: NestedArg(key='inner.lr', val='-1')"""


def test_a_nested_parser_message_becomes_the_option_and_its_reason():
    from seal_pl.errors import describe_parse_error

    assert (
        describe_parse_error(NESTED)
        == "option model.inner.lr: Not of type PositiveFloat: -1 does not conform to restriction v>0"
    )
    assert describe_parse_error("Unrecognized arguments: --x 1") == "Unrecognized arguments: --x 1"


def test_os_errors_are_paragraphs_program_errors_keep_their_traceback(capsys):
    from seal_pl.errors import run_reporting_user_errors

    def read_only(_argv):
        raise PermissionError(13, "Permission denied", "/runs/x/config.yaml")

    with pytest.raises(SystemExit) as stopped:
        run_reporting_user_errors(read_only, [], env={})
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "/runs/x/config.yaml" in err and "--run_dir" in err and "Traceback" not in err

    with pytest.raises(SystemExit):
        run_reporting_user_errors(read_only, ["--debug"], env={})
    assert "Traceback" in capsys.readouterr().err  # --debug shows it

    def bug(_argv):
        raise KeyError("not the user's fault")

    with pytest.raises(KeyError):  # a program error is not dressed up as a user error
        run_reporting_user_errors(bug, [], env={})
