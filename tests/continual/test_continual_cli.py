"""End-to-end ``seal test`` of continual self-edits on the tiny model: matrix, records, heatmap, resume."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seal_pl.cli import main
from seal_pl.records import read_all, read_records

ROOT = Path(__file__).resolve().parents[2]


def run(run_dir: Path, config: str = "continual_demo.yaml", *extra: str) -> None:
    stack = dict.fromkeys(["demo.yaml", "continual_demo.yaml", config])  # a mitigation is an overlay on the demo
    main(
        [
            "test",
            *(arg for name in stack for arg in ("--config", str(ROOT / "configs/knowledge" / name))),
            "--model.init_args.model", "tiny-random-llama",
            "--model.init_args.inner.epochs", "1",
            "--model.init_args.settings.self_edit_sampling.max_new_tokens", "12",
            "--model.init_args.settings.answer_max_new_tokens", "4",
            "--data.init_args.n_sequences", "2",
            "--data.init_args.length", "3",
            "--trainer.enable_progress_bar", "false",
            "--run_dir", str(run_dir),
            *extra,
        ]
    )  # fmt: skip


def test_continual_matrix_records_heatmap_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "merge"
    run(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["experiment"] == "knowledge_continual" and results["strategy"] == {"name": "merge"}
    assert results["n_sequences"] == 2 and results["length"] == 3
    mean = results["matrix"]["mean"]
    assert len(mean) == 4 and all(len(row) == 3 for row in mean)
    assert [sum(v is not None for v in row) for row in mean] == [3, 1, 2, 3]
    assert results["matrix"]["n"][3] == [2, 2, 2]
    assert set(results["summary"]) >= {"diagonal", "final_row", "forgetting", "base_row_mean", "final_row_mean"}
    assert results["reference"]["final_row_mean"] == 0.247
    assert (run_dir / "forgetting.png").read_bytes()[:4] == b"\x89PNG"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    scalars = set(EventAccumulator(str(run_dir / "tensorboard")).Reload().Tags()["scalars"])
    assert {"continual/final_row_mean", "continual/diagonal_mean", "results/final_row_mean"} <= scalars
    assert "forgetting matrix" in capsys.readouterr().out

    records = list(read_records(run_dir / "continual_sequences.rank0.jsonl"))
    assert [r["id"] for r in records] == ["seq-0000", "seq-0001"]
    for record in records:
        assert len(set(record["passage_ids"])) == 3
        assert [len(row) for row in record["n_questions"]] == [3, 1, 2, 3]
        assert [s["step"] for s in record["steps"]] == [1, 2, 3]
        assert all(s["self_edit_source"] == "model" and s["losses"] for s in record["steps"])
    predictions = read_all(run_dir / "continual_predictions.jsonl")
    assert len(predictions) == sum(sum(row) for r in records for row in r["n_questions"])
    assert {(p["row"], p["column"]) for p in predictions} == {
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
        (3, 2),
    }

    # A kill during the second sequence: its answers may be written, its record is not. Re-running
    # redoes only that sequence, from the exact base weights, and gets the same self-edits and losses.
    shard = run_dir / "continual_sequences.rank0.jsonl"
    shard.write_text(shard.read_text().splitlines()[0] + "\n")
    (run_dir / "results.json").unlink()
    run(run_dir)
    again = list(read_records(run_dir / "continual_sequences.jsonl"))
    assert [r["id"] for r in again] == ["seq-0000", "seq-0001"]
    for before, after in zip(records, again):
        assert after["matrix"] == before["matrix"]
        for s_before, s_after in zip(before["steps"], after["steps"]):
            assert s_after["completion"] == s_before["completion"]
            assert s_after["losses"] == pytest.approx(s_before["losses"], rel=1e-5)
    assert json.loads((run_dir / "results.json").read_text())["matrix"] == results["matrix"]
    assert len(read_all(run_dir / "continual_predictions.jsonl")) == len(predictions)


@pytest.mark.parametrize(
    ("config", "name", "slots"),
    [
        ("continual_replay_demo.yaml", "replay", 1),
        ("continual_route_demo.yaml", "route", 3),
        ("continual_compose_demo.yaml", "compose", 3),
    ],
)
def test_mitigations_run_with_the_same_matrix(tmp_path, config, name, slots):
    run_dir = tmp_path / name
    run(run_dir, config, "--data.init_args.n_sequences", "1")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["strategy"]["name"] == name
    assert len(results["matrix"]["mean"]) == 4
    (record,) = read_records(run_dir / "continual_sequences.rank0.jsonl")
    replayed = [s["n_replayed"] for s in record["steps"]]
    if name == "replay":
        assert replayed[0] == 0 and all(n > 0 for n in replayed[1:])
        assert all(
            set(s["replayed"]) <= {t for e in record["steps"][:i] for t in e["sequences"]}
            for i, s in enumerate(record["steps"])
        )
    else:
        assert replayed == [0, 0, 0]


def test_self_edits_from_a_file_and_the_plot_script(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "file"
    implications = str(ROOT / "data/knowledge/val_implications.jsonl")
    run(run_dir, "continual_demo.yaml", "--data.init_args.self_edits_path", implications, "--data.init_args.n_sequences", "1", "--data.init_args.length", "2")  # fmt: skip
    (record,) = read_records(run_dir / "continual_sequences.rank0.jsonl")
    assert all(s["self_edit_source"] == "file" and len(s["sequences"]) > 2 for s in record["steps"])
    out = tmp_path / "compare.png"
    argv = ["plot_forgetting.py", str(run_dir), str(run_dir), "--pool", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    capsys.readouterr()
    runpy.run_path(str(ROOT / "scripts/plot_forgetting.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "pooled" in printed and "after 2" in printed and out.read_bytes()[:4] == b"\x89PNG"
