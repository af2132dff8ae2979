"""scripts/inner_seed_agreement.py on a tiny-model run with two inner seeds."""

from __future__ import annotations

import json

import pytest
from tiny_cli import load_script, tiny_knowledge_argv

from seal_pl.cli import main


def _script():
    return load_script("inner_seed_agreement")


def test_agreement_of_two_inner_seeds(tmp_path):
    run_dir = tmp_path / "run"
    options = ("--data.init_args.limit", "2", "--model.init_args.n_self_edits", "2", "--data.init_args.self_edits_path")
    conditions = ("--model.init_args.conditions", "[passage_only, self_edit]")
    main(tiny_knowledge_argv(run_dir, *options, "null", *conditions, "--model.init_args.inner_seeds", "2"))
    out = tmp_path / "agreement.json"
    result = _script().main([str(run_dir), "--batch-size", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["passages"] == 2 and result["self_edits"] == 4
    assert 0.0 <= result["same_reward_share"] <= 1.0 and result["mean_abs_difference"] >= 0.0
    assert result["self_edits_over_one_batch"] == 0  # 8-token self-edits: a line or two, one batch an epoch
    # The seed only orders the sequences; one batch an epoch trains the same adapter either way.
    assert result["same_reward_share"] == 1.0 and result["passage_only_same_share"] == 1.0
    assert result["best_of_k_seed0_reward"] == result["best_of_k_seed0_reward_under_seed1"]

    single = tmp_path / "single"
    main(tiny_knowledge_argv(single, *options, "null", *conditions))
    with pytest.raises(SystemExit, match="no second inner seed"):
        _script().main([str(single)])
