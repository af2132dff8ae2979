"""ReST-EM bookkeeping without Lightning: round layout, policy chain, stage configs, E-step records."""

from __future__ import annotations

import json

import pytest

from seal_pl.pipelines.restem import arc_self_edits, best_of_k, knowledge_self_edits, reward_statistics, select
from seal_pl.restem.layout import (
    RoundLayout,
    finished_rounds,
    headline,
    heldout_metrics,
    input_policy,
    is_multiprocess,
    run_results,
    semantic_config,
    stage_config,
)


def finish(run_dir, index, policy_out):
    layout = RoundLayout.of(run_dir, index)
    layout.root.mkdir(parents=True)
    layout.summary.write_text(json.dumps({"round": index, "policy_out": policy_out}))


def test_policy_chain_and_finished_rounds(tmp_path):
    assert input_policy(tmp_path, 0, "base-model") == "base-model"
    with pytest.raises(RuntimeError, match="round 0"):
        input_policy(tmp_path, 1, "base-model")
    finish(tmp_path, 0, str(tmp_path / "round_0/policy"))
    finish(tmp_path, 1, str(tmp_path / "round_0/policy"))  # nothing kept in round 1: the policy stays
    assert input_policy(tmp_path, 1, "base-model") == str(tmp_path / "round_0/policy")
    assert input_policy(tmp_path, 2, "base-model") == str(tmp_path / "round_0/policy")
    finish(tmp_path, 3, "x")  # a gap: round 2 is not finished, so round 3 does not count yet
    assert finished_rounds(tmp_path) == [0, 1]
    assert [r["round"] for r in run_results(tmp_path)["rounds"]] == [0, 1]
    layout = RoundLayout.of(tmp_path, 0)
    assert layout.policy_marker == tmp_path / "round_0/policy/seal_policy.json"
    assert RoundLayout.of(tmp_path, None).root == tmp_path / "base"
    assert layout.stage_config("sft") == tmp_path / "round_0/sft.yaml"


def test_stage_config_layers_trainer_and_overrides_init_args():
    stage = {
        "model": {"class_path": "M", "init_args": {"model": "ignored", "lr": 1.0}},
        "data": {"class_path": "D"},
        "trainer": {"max_epochs": 2},
    }
    config = stage_config(
        stage,
        shared_trainer={"accelerator": "cpu", "max_epochs": 9},
        trainer_defaults={"enable_checkpointing": False, "accelerator": "auto"},
        seed=3,
        model_args={"model": "round_0/policy"},
        data_args={"path": "round_0/sft.jsonl"},
    )
    assert config["trainer"] == {"enable_checkpointing": False, "accelerator": "cpu", "max_epochs": 2}
    assert config["model"]["init_args"] == {"model": "round_0/policy", "lr": 1.0}
    assert config["data"] == {"class_path": "D", "init_args": {"path": "round_0/sft.jsonl"}}
    assert config["seed_everything"] == 3
    assert stage["model"]["init_args"]["model"] == "ignored"  # the section itself is not modified
    with pytest.raises(ValueError):
        stage_config({"model": {"class_path": "M"}}, shared_trainer=None, trainer_defaults={}, seed=0, model_args={})


def test_multiprocess_detection():
    assert not is_multiprocess({})
    assert not is_multiprocess({"accelerator": "cpu", "devices": 1})
    assert is_multiprocess({"devices": 2})
    assert is_multiprocess({"devices": -1})
    assert is_multiprocess({"devices": 1, "strategy": "ddp"})
    assert is_multiprocess({"devices": 1, "num_nodes": 2})
    assert not is_multiprocess({"devices": [0]})


def test_semantic_config_ignores_rounds_and_hardware():
    base = {
        "rounds": 1,
        "launcher": "auto",
        "run_dir": "a",
        "top_k": 1,
        "trainer": {"accelerator": "cpu", "devices": 1},
        "sft": {"model": {"class_path": "P"}, "trainer": {"max_epochs": 2, "devices": 1}},
    }
    extended = json.loads(json.dumps(base))
    extended.update(rounds=3, launcher="subprocess", run_dir="b")
    extended["trainer"] = {"accelerator": "gpu", "devices": 2, "strategy": "ddp"}
    extended["sft"]["trainer"]["devices"] = 2
    assert semantic_config(base) == semantic_config(extended)
    changed = json.loads(json.dumps(base))
    changed["sft"]["trainer"]["max_epochs"] = 3
    assert semantic_config(base) != semantic_config(changed)


def test_heldout_metrics():
    knowledge = {"conditions": {"no_adaptation": {"accuracy": 0.0}, "self_edit": {"accuracy": 0.4}}}
    metrics = heldout_metrics("knowledge", knowledge)
    assert metrics == {"no_adaptation": 0.0, "self_edit": 0.4} and headline("knowledge", metrics) == 0.4
    metrics = heldout_metrics("arc", {"success_rate": 0.25, "task_accuracy": 0.5})
    assert headline("arc", metrics) == 0.25


def test_knowledge_records_are_normalised_and_filtered():
    shard = [
        {
            "id": f"p{p}/{k}",
            "passage_id": f"p{p}",
            "seed": p,
            "prompt": f"P{p}",
            "edit_index": k,
            "completion": f"c{p}{k}",
            "reward": r,
            "accuracy_per_seed": [r],
            "baseline_accuracy": 0.1,
            "gain": r - 0.1,
        }
        for p, rewards in ((1, [0.2, 0.5, 0.5]), (0, [0.0, 0.1, 0.0]))
        for k, r in enumerate(rewards)
    ]
    shard.append(dict(shard[0], reward=0.3, completion="rewritten"))  # a record written again on resume wins
    records = knowledge_self_edits(shard)
    assert [r["id"] for r in records] == ["p0/0", "p0/1", "p0/2", "p1/0", "p1/1", "p1/2"]
    assert records[3]["completion"] == "rewritten" and records[3]["seed"] == 1
    assert records[0]["components"] == {
        "accuracy_per_seed": [0.0],
        "baseline_accuracy": 0.1,
        "gain": -0.1,
        "passage_only_accuracy": None,  # the E-step ran no passage_only condition
        "gain_over_passage": None,
    }
    kept = select("knowledge", records)
    assert [r["completion"] for r in kept] == ["c01", "c11"]
    assert [r["completion"] for r in select("knowledge", records, min_gain=0.05)] == ["c11"]
    assert [r["completion"] for r in select("knowledge", records, top_k=2)] == ["c01", "c00", "c11", "c12"]
    stats = reward_statistics(records, kept)
    assert stats["n"] == 6 and stats["kept"] == 2 and stats["max"] == 0.5


def test_arc_records_are_normalised_and_successes_kept():
    edits = [
        {
            "id": "t/0",
            "task_id": "t",
            "edit_index": 0,
            "prompt": [{"role": "user", "content": "x"}],
            "completion": "{}",
            "reward": 1,
            "valid": True,
            "trained": True,
            "subtasks": [{"subtask_id": "t_0", "solved": True}],
        },
        {
            "id": "t/1",
            "task_id": "t",
            "edit_index": 1,
            "prompt": [{"role": "user", "content": "x"}],
            "completion": "oops",
            "reward": 0,
            "valid": False,
            "reason": "no json",
            "subtasks": [],
        },
        {
            "id": "u/0",
            "task_id": "u",
            "edit_index": 0,
            "prompt": [{"role": "user", "content": "y"}],
            "completion": "{}",
            "reward": None,
            "valid": True,
            "subtasks": [],
        },
    ]
    records = arc_self_edits(edits, [{"id": "t/0", "seed": 7}])
    assert [r["seed"] for r in records] == [7, None, None]
    assert records[0]["components"]["subtasks"] == {"t_0": True} and records[1]["components"]["reason"] == "no json"
    kept = select("arc", records)
    assert [r["id"] for r in kept] == ["t/0"]
    stats = reward_statistics(records, kept)
    assert stats["n"] == 3 and stats["n_scored"] == 2 and stats["mean"] == 0.5
    with pytest.raises(ValueError):
        select("chess", records)


def test_best_of_k_rejects_bad_top_k():
    with pytest.raises(ValueError):
        best_of_k([], top_k=0)


def test_bookkeeping_imports_neither_lightning_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, seal_pl.restem.layout, seal_pl.pipelines.restem; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
