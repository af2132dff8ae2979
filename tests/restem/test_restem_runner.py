"""``seal restem`` end to end with the tiny model: round layout, outputs, resume after a kill, refusal."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_cli import load_script

from seal_pl.arc.records import ArcEditRecord
from seal_pl.cli import main
from seal_pl.knowledge.records import KnowledgeSelfEdit, PassageRecord
from seal_pl.pipelines.arc_restem import ArcScoredSelfEdit
from seal_pl.records import SFTExample, read_records, read_typed
from seal_pl.restem.runner import ReSTEMConfigError, run_from_args

ROOT = Path(__file__).resolve().parents[2]

KNOWLEDGE_MODULE = {
    "class_path": "seal_pl.lightning.KnowledgeIncorporationModule",
    "init_args": {
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "inner": {"lr": 1e-3, "epochs": 1, "batch_size": 4},
        "conditions": ["no_adaptation", "self_edit"],
        "n_self_edits": 2,
        "settings": {"self_edit_sampling": {"max_new_tokens": 10}, "answer_max_new_tokens": 4},
    },
}
TINY_KNOWLEDGE = {
    "model": "tiny-random-llama",
    "rounds": 2,
    "evaluate_base": False,
    "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False},
    "estep": {
        "model": KNOWLEDGE_MODULE,
        "data": {
            "class_path": "seal_pl.lightning.KnowledgeDataModule",
            "init_args": {"path": "data/knowledge/train.json", "limit": 3},
        },
    },
    "sft": {
        "model": {
            "class_path": "seal_pl.lightning.PolicySFTModule",
            "init_args": {"lora": {"r": 4, "alpha": 8}, "lr": 1e-2},
        },
        "data": {"class_path": "seal_pl.lightning.SFTDataModule", "init_args": {"batch_size": 2, "max_length": 4096}},
        "trainer": {"max_epochs": 1},
    },
}


def knowledge_config(tmp_path: Path, **changes) -> Path:
    config = copy.deepcopy(TINY_KNOWLEDGE)
    config.update(changes)
    path = tmp_path / "restem.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def with_eval(limit: int = 1) -> dict:
    module = copy.deepcopy(KNOWLEDGE_MODULE)
    module["init_args"].update(conditions=["no_adaptation", "passage_only", "self_edit"], n_self_edits=1)
    return {
        "model": module,
        "data": {
            "class_path": "seal_pl.lightning.KnowledgeDataModule",
            "init_args": {"path": "data/knowledge/val.json", "limit": limit},
        },
    }


@pytest.fixture
def one_thread():
    """Single-threaded torch, as in the killed subprocess, so that both runs compute the same numbers."""
    torch.set_num_threads(1)


def test_knowledge_round_layout_results_and_plot(tmp_path, capsys, one_thread):
    estep = copy.deepcopy(TINY_KNOWLEDGE["estep"])
    estep["model"]["init_args"]["conditions"] = ["no_adaptation", "passage_only", "self_edit"]
    config = knowledge_config(
        tmp_path,
        rounds=1,
        evaluate_base=True,
        eval=with_eval(limit=2),
        estep=estep,
        gain_over="passage_only",
        max_copied_line_share=1.0,
    )
    run_dir = tmp_path / "run"
    main(["restem", "--config", str(config), "--run_dir", str(run_dir)])

    round_0 = run_dir / "round_0"
    for name in (
        "estep.yaml",
        "sft.yaml",
        "eval.yaml",
        "self_edits.jsonl",
        "sft.jsonl",
        "filter.json",
        "summary.json",
    ):
        assert (round_0 / name).is_file(), name
    assert (round_0 / "estep/self_edits.rank0.jsonl").is_file() and (round_0 / "estep/config.yaml").is_file()
    assert (round_0 / "policy/model.safetensors").is_file() and (round_0 / "policy/seal_policy.json").is_file()
    assert (run_dir / "base/eval/results.json").is_file() and (run_dir / "config.yaml").is_file()

    records = list(read_typed(round_0 / "self_edits.jsonl", KnowledgeSelfEdit))
    assert len(records) == 3 * 2  # 3 passages x K = 2
    for record in records:
        assert record.seed is not None and record.prompt and record.context_id == record.passage_id
        assert record.gain == pytest.approx(record.reward - record.baseline_accuracy)
        assert record.gain_over_passage == pytest.approx(record.reward - record.passage_only_accuracy)
        assert set(record.stats) == {"words", "lines", "entity_coverage", "copied_line_share"}
    kept = list(read_typed(round_0 / "sft.jsonl", SFTExample))
    assert len(kept) == 3 and {k.context_id for k in kept} == {r.context_id for r in records}

    # Each stage config runs alone and uses the round's model and paths.
    estep = yaml.safe_load((round_0 / "estep.yaml").read_text())
    sft = yaml.safe_load((round_0 / "sft.yaml").read_text())
    evaluation = yaml.safe_load((round_0 / "eval.yaml").read_text())
    assert estep["model"]["init_args"]["model"] == "tiny-random-llama"
    assert sft["model"]["init_args"]["output_dir"] == str(round_0 / "policy")
    assert sft["data"]["init_args"]["path"] == str(round_0 / "sft.jsonl")
    assert evaluation["model"]["init_args"]["model"] == str(round_0 / "policy")
    assert estep["trainer"]["inference_mode"] is False and sft["trainer"]["log_every_n_steps"] == 1

    summary = json.loads((round_0 / "summary.json").read_text())
    assert summary["policy_in"] == "tiny-random-llama" and summary["policy_out"] == str(round_0 / "policy")
    assert summary["estep"]["kept"] == 3 and summary["estep"]["n"] == 6 and len(summary["estep"]["histogram"]) == 10
    assert summary["estep"]["rule"] == "best 1 of K per passage, copied-line share <= 1.0"
    assert summary["sft"]["trained"] and summary["sft"]["n_examples"] == 3
    assert set(summary["eval"]["metrics"]) == {"no_adaptation", "passage_only", "self_edit"}
    # Evidence per round: what the filter saw, what the self-edits look like, where the time went.
    assert 0.0 <= summary["estep"]["best_beats_passage_only"] <= 1.0
    assert summary["estep"]["self_edits"]["n"] == 6 and summary["estep"]["kept_self_edits"]["n"] == 3
    assert summary["eval"]["self_edit_stats"]["n"] == 2 and len(summary["eval"]["samples"]) == 2
    timing = summary["timing"]
    assert all(timing[f"{stage}_seconds"] > 0 for stage in ("estep", "sft", "eval"))
    assert timing["estep_phases"]["train_seconds"] > 0 and timing["estep_phases"]["sample_seconds"] > 0
    assert 0.0 < timing["estep_train_fraction_of_peak"] < 2.0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["machine"]["peak_fp32_flops"] > 0
    comparisons = results["comparisons"]
    for name in ("self_edit_last_minus_base", "self_edit_minus_passage_only_last", "self_edit_minus_passage_only_base"):
        c = comparisons[name]
        assert c["low"] <= c["difference"] <= c["high"] and c["n"] > 0
    questions = sum(1 for _ in read_records(run_dir / "round_0/eval/predictions.jsonl")) // 3
    assert comparisons["self_edit_last_minus_base"]["n"] == questions
    assert results["base"]["eval"]["model"] == "tiny-random-llama" and len(results["rounds"]) == 1
    assert "held-out" in capsys.readouterr().out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "histograms": 0}).Reload()
    tags = events.Tags()
    assert {"estep/reward_mean", "estep/reward_max", "filter/kept_fraction", "heldout/self_edit"} <= set(
        tags["scalars"]
    )
    assert "sft/loss_round_0" in tags["scalars"] and "estep/reward" in tags["histograms"]
    assert {"estep/best_beats_passage_only", "estep/self_edits_words", "heldout/self_edit_entity_coverage"} <= set(
        tags["scalars"]
    )
    assert {"time/estep_seconds", "time/estep_train_fraction_of_peak"} <= set(tags["scalars"])
    assert any("self_edits" in tag for tag in tags["tensors"])
    assert [e.step for e in events.Scalars("heldout/self_edit")] == [0, 1]

    png = load_script("plot_restem").main([str(run_dir)])
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def snapshot(run_dir: Path) -> dict:
    """What a run computed: every round's self-edits, rewards, SFT set, filter and policy weights."""
    out = {}
    for round_dir in sorted(run_dir.glob("round_*")):
        records = [{k: v for k, v in r.items() if k != "prompt"} for r in read_records(round_dir / "self_edits.jsonl")]
        summary = json.loads((round_dir / "summary.json").read_text())
        out[round_dir.name] = {
            "self_edits": records,
            "sft": list(read_records(round_dir / "sft.jsonl")),
            "filter": json.loads((round_dir / "filter.json").read_text()),
            "policy_in": summary["policy_in"].replace(str(run_dir), ""),
            "weights": load_file(round_dir / "policy/model.safetensors"),
        }
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, round_a in a.items():
        round_b = b[name]
        weights_a, weights_b = round_a.pop("weights"), round_b.pop("weights")
        assert round_a == round_b, name
        assert weights_a.keys() == weights_b.keys()
        for key, tensor in weights_a.items():
            torch.testing.assert_close(tensor, weights_b[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path, one_thread):
    """Kill a run in the middle of round 1's E-step, re-run it, and compare with an uninterrupted run."""
    config = knowledge_config(tmp_path)
    whole = tmp_path / "whole"
    main(["restem", "--config", str(config), "--run_dir", str(whole)])

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "seal_pl", "restem", "--config", str(config), "--run_dir", str(killed)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = killed / "round_1/estep/passages.rank0.jsonl"
    deadline = time.monotonic() + 300
    while not (progress.is_file() and progress.read_text().count("\n") >= 1):
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "round_0/summary.json").is_file() and not (killed / "round_1/summary.json").is_file()
    finished = {p: p.stat().st_mtime_ns for p in (killed / "round_0").rglob("*") if p.is_file()}

    main(["restem", "--config", str(config), "--run_dir", str(killed)])
    assert {p: p.stat().st_mtime_ns for p in (killed / "round_0").rglob("*") if p.is_file()} == finished
    assert len(list(read_records(killed / "round_1/estep/passages.rank0.jsonl"))) == 3  # no passage redone
    assert_same(snapshot(whole), snapshot(killed))

    # A finished run re-run: nothing is touched; a different configuration is refused.
    before = {p: p.stat().st_mtime_ns for p in whole.rglob("*") if p.is_file() and "round_" in str(p)}
    main(["restem", "--config", str(config), "--run_dir", str(whole)])
    assert {p: p.stat().st_mtime_ns for p in whole.rglob("*") if p.is_file() and "round_" in str(p)} == before
    with pytest.raises(ReSTEMConfigError, match="different configuration"):
        run_from_args(["--config", str(config), "--run_dir", str(whole), "--top_k", "2"]).run()


@pytest.mark.slow
def test_two_process_round(tmp_path, monkeypatch):
    """2 CPU processes (DDP over gloo): the E-step shards contexts, the M-step trains under DDP."""
    config = knowledge_config(tmp_path, rounds=1)
    run_dir = tmp_path / "ddp"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # One trainer for every stage: 2 processes, so each stage runs as its own `seal` command.
    main(
        [
            "restem",
            "--config",
            str(config),
            "--trainer.accelerator",
            "cpu",
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--run_dir",
            str(run_dir),
        ]
    )
    round_0 = run_dir / "round_0"
    shards = [list(read_typed(PassageRecord.shard(round_0 / "estep", rank), PassageRecord)) for rank in (0, 1)]
    assert all(shards), "both ranks scored passages"
    ids = [r.passage_id for shard in shards for r in shard]
    assert len(ids) == len(set(ids)) == 3  # disjoint slices covering every passage
    records = list(read_typed(round_0 / "self_edits.jsonl", KnowledgeSelfEdit))
    assert len(records) == 3 * 2 and {r.context_id for r in records} == set(ids)

    sft = yaml.safe_load((round_0 / "sft/config.yaml").read_text())
    assert sft["trainer"]["strategy"] == "ddp" and sft["trainer"]["devices"] == 2
    policy = json.loads((round_0 / "policy/seal_policy.json").read_text())
    assert policy["n_examples"] == 3 and policy["batches_rank0"] == 1  # 3 pairs, batch 2, 2 ranks: 1 batch each
    assert (round_0 / "policy/model.safetensors").is_file()
    summary = json.loads((round_0 / "summary.json").read_text())
    assert summary["policy_out"] == str(round_0 / "policy")


ARC_MODULE = {
    "class_path": "seal_pl.lightning.arc.ARCTTTModule",
    "init_args": {
        "mode": "self_edit",
        "n_self_edits": 2,
        "lora": {"r": 4},
        "inner": {"warmup_steps": 1, "max_length": 2048},
        "settings": {
            "max_examples": 4,
            "max_tokens": 2048,
            "max_views": 2,
            "max_attempts": 1,
            "self_edit_sampling": {"max_new_tokens": 8},
        },
    },
}


def test_arc_round_with_nothing_solved_keeps_the_policy(tmp_path, one_thread):
    config = {
        "model": "tiny-random-llama",
        "rounds": 1,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False},
        "estep": {
            "model": ARC_MODULE,
            "data": {"class_path": "seal_pl.lightning.arc.ARCDataModule", "init_args": {"task_ids": ["6150a2bd"]}},
        },
        "sft": {"model": {"init_args": {"lora": {"r": 4}}}, "trainer": {"max_epochs": 1}},
    }
    path = tmp_path / "arc.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "arc"
    main(["restem", "--config", str(path), "--run_dir", str(run_dir)])
    records = list(read_typed(run_dir / "round_0/arc_scored_self_edits.jsonl", ArcScoredSelfEdit))
    assert [r.id for r in records] == ["6150a2bd/0", "6150a2bd/1"]
    assert all(r.task_id == "6150a2bd" and r.seed is not None and isinstance(r.valid, bool) for r in records)
    assert len(list(read_typed(ArcEditRecord.merged(run_dir / "round_0/estep"), ArcEditRecord))) == 2
    summary = json.loads((run_dir / "round_0/summary.json").read_text())
    assert summary["domain"] == "arc" and summary["estep"]["kept"] == sum(r.reward == 1 for r in records)
    if summary["estep"]["kept"] == 0:
        assert summary["policy_out"] == "tiny-random-llama" and not summary["sft"]["trained"]
        assert not (run_dir / "round_0/policy").exists()


def test_config_errors(tmp_path):
    with pytest.raises(ReSTEMConfigError, match="max_epochs"):
        run_from_args(["--config", str(knowledge_config(tmp_path, sft={"trainer": {}}))])
    estep = copy.deepcopy(TINY_KNOWLEDGE["estep"])
    estep["model"]["init_args"]["conditions"] = ["passage_only"]
    with pytest.raises(ReSTEMConfigError, match="self_edit"):
        run_from_args(["--config", str(knowledge_config(tmp_path, estep=estep))])
    with pytest.raises(ReSTEMConfigError, match="min_gain"):
        arc = {"model": ARC_MODULE, "data": {"class_path": "seal_pl.lightning.arc.ARCDataModule"}}
        run_from_args(["--config", str(knowledge_config(tmp_path, estep=arc)), "--min_gain", "0.1"])
    with pytest.raises(ReSTEMConfigError, match="max_copied_line_share"):
        run_from_args(["--config", str(knowledge_config(tmp_path)), "--max_copied_line_share", "2"])
    with pytest.raises(ReSTEMConfigError, match="passage_only condition"):
        run_from_args(["--config", str(knowledge_config(tmp_path)), "--gain_over", "passage_only"])
    with pytest.raises(ReSTEMConfigError, match="one node"):
        run_from_args(["--config", str(knowledge_config(tmp_path)), "--trainer.num_nodes", "2"])
    ddp = {**TINY_KNOWLEDGE["trainer"], "strategy": "ddp", "devices": 2}
    with pytest.raises(ReSTEMConfigError, match="launcher inprocess"):
        run_from_args(["--config", str(knowledge_config(tmp_path, trainer=ddp)), "--launcher", "inprocess"])
    from seal_pl.errors import OptionError
    from seal_pl.restem.runner import ReSTEMRun

    sections = {k: copy.deepcopy(TINY_KNOWLEDGE[k]) for k in ("estep", "sft", "model")}
    for option, value in (("launcher", "srun"), ("sft_from", "scratch"), ("sft_data", "last")):
        # Built from Python (the CLI refuses these while parsing): one error kind, naming the choices.
        with pytest.raises(ReSTEMConfigError, match=f"{option} must be one of .*, got '{value}'") as refused:
            ReSTEMRun(run_dir=str(tmp_path / "choices"), **{option: value}, **copy.deepcopy(sections))
        assert isinstance(refused.value, OptionError)
    run = run_from_args(["--config", str(knowledge_config(tmp_path)), "--estep.trainer.no_such_option", "1"])
    with pytest.raises(ReSTEMConfigError, match="estep"):
        run.check()


def test_help_mentions_restem(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "seal restem" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["restem", "--help"])
    out = capsys.readouterr().out
    for option in ("--rounds", "--estep.model", "--sft.trainer", "--min_gain", "--launcher"):
        assert option in out


def test_estep_start_stride_gives_each_round_fresh_contexts(tmp_path):
    from seal_pl.restem.runner import ReSTEMRun

    def estep_starts(stride: int) -> list:
        estep = copy.deepcopy(TINY_KNOWLEDGE["estep"])
        estep["data"]["init_args"]["start"] = 2
        sections = {k: copy.deepcopy(TINY_KNOWLEDGE[k]) for k in ("sft", "trainer", "model", "rounds")}
        run = ReSTEMRun(estep=estep, run_dir=str(tmp_path / f"stride{stride}"), estep_start_stride=stride, **sections)
        return [run.stage_configs(k, "policy")["estep"]["data"]["init_args"]["start"] for k in range(3)]

    assert estep_starts(0) == [2, 2, 2]
    assert estep_starts(5) == [2, 7, 12]  # round k reads from start + k * stride


def test_sft_from_base_and_all_rounds_pairs(tmp_path):
    from seal_pl.records import rewrite_typed
    from seal_pl.restem.layout import RoundLayout
    from seal_pl.restem.runner import ReSTEMRun

    sections = {k: copy.deepcopy(TINY_KNOWLEDGE[k]) for k in ("estep", "sft", "trainer", "model", "rounds")}
    default = ReSTEMRun(run_dir=str(tmp_path / "default"), **copy.deepcopy(sections))
    sft = default.stage_configs(1, "round0-policy")["sft"]
    assert sft["model"]["init_args"]["model"] == "round0-policy"  # the reference: the round's input policy
    assert sft["data"]["init_args"]["path"].endswith("round_1/sft.jsonl")
    assert default.config["sft_from"] == "policy" and default.config["sft_data"] == "round"

    run_dir = tmp_path / "proper"
    run = ReSTEMRun(run_dir=str(run_dir), sft_from="base", sft_data="all_rounds", **sections)
    sft = run.stage_configs(1, "round0-policy")["sft"]
    assert sft["model"]["init_args"]["model"] == TINY_KNOWLEDGE["model"]  # every M-step starts from the base
    assert sft["data"]["init_args"]["path"].endswith("round_1/sft_all_rounds.jsonl")
    assert run.stage_configs(1, "round0-policy")["estep"]["model"]["init_args"]["model"] == "round0-policy"

    earlier = [SFTExample(prompt="p0", completion="c0", id="a/0"), SFTExample(prompt="p1", completion="c1", id="b/0")]
    RoundLayout.of(run_dir, 0).root.mkdir(parents=True)
    rewrite_typed(RoundLayout.of(run_dir, 0).sft_set, earlier)
    now = [SFTExample(prompt="p2", completion="c2", id="c/1")]
    RoundLayout.of(run_dir, 1).root.mkdir(parents=True)
    assert run._sft_pairs(1, now) == earlier + now
    assert list(read_typed(RoundLayout.of(run_dir, 1).sft_all_rounds, SFTExample)) == earlier + now
    assert default._sft_pairs(1, now) == now


@pytest.mark.parametrize("option", [{"sft_from": "init"}, {"sft_data": "every"}])
def test_unknown_sft_choices_are_refused(tmp_path, option):
    from seal_pl.restem.runner import ReSTEMRun

    sections = {k: copy.deepcopy(TINY_KNOWLEDGE[k]) for k in ("estep", "sft", "trainer", "model", "rounds")}
    with pytest.raises(ReSTEMConfigError, match=next(iter(option))):
        ReSTEMRun(run_dir=str(tmp_path), **option, **sections)


def test_two_rounds_from_the_base_on_every_rounds_pairs(tmp_path, one_thread):
    run_dir = tmp_path / "run"
    config = knowledge_config(tmp_path, sft_from="base", sft_data="all_rounds")
    main(["restem", "--config", str(config), "--run_dir", str(run_dir)])

    round_0 = json.loads((run_dir / "round_0/summary.json").read_text())
    round_1 = json.loads((run_dir / "round_1/summary.json").read_text())
    assert round_1["policy_in"] == round_0["policy_out"]  # the E-step samples with the latest policy ...
    assert round_1["sft"]["trained_from"] == "tiny-random-llama"  # ... the M-step starts from the base
    kept_0 = list(read_typed(run_dir / "round_0/sft.jsonl", SFTExample))
    kept_1 = list(read_typed(run_dir / "round_1/sft.jsonl", SFTExample))
    pairs = list(read_typed(run_dir / "round_1/sft_all_rounds.jsonl", SFTExample))
    assert kept_0 and kept_1 and pairs == kept_0 + kept_1
    assert round_1["sft"]["n_examples"] == len(pairs)
