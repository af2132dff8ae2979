"""ReST-EM bookkeeping without Lightning: round layout, policy chain, stage configs, trainer checks."""

from __future__ import annotations

import json

import pytest

from seal_pl.restem.layout import (
    RoundLayout,
    finished_rounds,
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


def test_bookkeeping_imports_neither_lightning_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, seal_pl.restem.layout, seal_pl.pipelines.restem, seal_pl.pipelines.knowledge_restem; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
