"""End-to-end CLI smoke of the knowledge table on the tiny model: results, records, resume, refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_cli import tiny_knowledge_argv

from seal_pl.cli import RunDirConflictError, main
from seal_pl.records import read_all

ROOT = Path(__file__).resolve().parents[2]


def run(run_dir: Path, *extra: str) -> None:
    main(tiny_knowledge_argv(run_dir, "--data.init_args.limit", "2", *extra, new_tokens=12, answer_tokens=6))


def test_knowledge_table_end_to_end_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n_passages"] == 2
    conditions = results["conditions"]
    assert set(conditions) >= {"no_adaptation", "passage_only", "self_edit"}
    for row in conditions.values():
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["n_passages"] == 2 and row["n_questions"] > 0
    passages = read_all(run_dir / "passages.rank*.jsonl")
    assert len(passages) == 2
    predictions = list(read_all(run_dir / "predictions.jsonl"))
    assert {p["condition"] for p in predictions} == set(conditions)
    assert all({"question", "gold", "prediction", "correct"} <= set(p) for p in predictions)
    assert (run_dir / "config.yaml").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert "no_adaptation" in capsys.readouterr().out

    # Re-running the same command resumes: nothing is evaluated twice.
    run(run_dir)
    assert len(read_all(run_dir / "passages.rank*.jsonl")) == 2
    assert json.loads((run_dir / "results.json").read_text())["conditions"] == conditions

    # A different data/model configuration in the same run directory is refused: one paragraph, exit 2.
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run(run_dir, "--data.init_args.limit", "3")
    assert stopped.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # the paragraph is wrapped
    assert "different model/data configuration" in err and str(run_dir) in err and "Traceback" not in err


def test_inference_mode_must_be_off(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        run(tmp_path / "run", "--trainer.inference_mode", "true")
    assert stopped.value.code == 2
    assert "trainer.inference_mode: false" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_ddp_shards_and_merges(tmp_path):
    """Two CPU processes (gloo): each rank writes its own shard, rank 0 merges every passage once."""
    import subprocess
    import sys

    run_dir = tmp_path / "ddp"
    configs = ("configs/knowledge/demo.yaml", "configs/trainer/ddp_cpu.yaml")
    argv = tiny_knowledge_argv(run_dir, "--data.init_args.limit", "3", configs=configs)
    command = [sys.executable, "-m", "seal_pl", *argv]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert (run_dir / "passages.rank0.jsonl").is_file() and (run_dir / "passages.rank1.jsonl").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n_passages"] == 3
    predictions = read_all(run_dir / "predictions.jsonl")
    keys = [(p["passage_id"], p["condition"], p["edit_index"], p["question_id"]) for p in predictions]
    assert len(keys) == len(set(keys))
    assert len({p["passage_id"] for p in predictions}) == 3


def _self_edits_by_passage(run_dir: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for record in read_all(run_dir / "passages.rank*.jsonl"):
        runs = sorted(record["conditions"]["self_edit"], key=lambda r: r["edit_index"])
        out[record["passage_id"]] = [r["adaptation"]["completion"] for r in runs]
    return out


def test_grouped_sampling_writes_samples_first_and_resumes_with_them(tmp_path):
    grouped = (
        "--model.init_args.sampling_group",
        "2",
        "--model.init_args.n_self_edits",
        "2",
        "--data.init_args.limit",
        "3",
    )
    run_dir = tmp_path / "grouped"
    run(run_dir, *grouped)
    samples = list(read_all(run_dir / "samples.rank*.jsonl"))
    assert [s["group"] for s in samples] == [0, 0, 1] and [s["seed"] for s in samples] == [0, 0, 2]
    trained = _self_edits_by_passage(run_dir)
    assert trained == {s["passage_id"]: s["completions"] for s in samples}
    assert json.loads((run_dir / "results.json").read_text())["timing"]["sample_seconds"] > 0

    # Kill after the first passage: the resumed run scores the rest with the self-edits sampled before.
    resumed = tmp_path / "resumed"
    run(resumed, *grouped)
    first = read_all(resumed / "passages.rank0.jsonl")[0]
    (resumed / "passages.rank0.jsonl").write_text(json.dumps(first) + "\n")
    (resumed / "samples.rank0.jsonl").write_text(
        "".join(json.dumps(s) + "\n" for s in read_all(resumed / "samples.rank0.jsonl")[:2])
    )
    run(resumed, *grouped)
    assert _self_edits_by_passage(resumed) == trained
    assert len(read_all(resumed / "samples.rank*.jsonl")) == 3


def test_sampling_group_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="sampling_group"):
        run(tmp_path / "bad", "--model.init_args.sampling_group", "0")


def test_ranks_agree_on_the_default_run_dir():
    from seal_pl.cli import resolve_run_dir

    env: dict[str, str] = {}
    first = resolve_run_dir(None, "test", env=env)
    assert first.startswith("runs/test-") and env["SEAL_RUN_DIR"] == first
    # A rank Lightning launches later (other timestamp) inherits the environment: same directory.
    child = {**env, "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    assert resolve_run_dir(None, "test", env=child) == first
    assert resolve_run_dir("mine", "test", env={}) == "mine"
    alone: dict[str, str] = {}
    resolve_run_dir(None, "test", env=alone, spawns_ranks=False)
    assert alone == {}  # a one-process command leaves nothing for the next command in this process
    for outside in ({"LOCAL_RANK": "0"}, {"WORLD_SIZE": "8"}):
        with pytest.raises(RunDirConflictError, match="--run_dir"):
            resolve_run_dir(None, "test", env=dict(outside))
    with pytest.raises(RunDirConflictError, match="--run_dir"):
        resolve_run_dir(None, "test", num_nodes=2, env={})
