"""scripts/best_of_k.py: exact subset averages against enumeration, and a tiny-model run."""

from __future__ import annotations

import json
from itertools import combinations

import pytest
from tiny_cli import load_script, tiny_knowledge_argv

from seal_pl.cli import main

best_of_k = load_script("best_of_k")


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_subset_averages_match_enumeration(k):
    rewards = [0.2, 0.0, 0.5, 0.2, 0.8]
    subsets = list(combinations(range(5), k))
    assert best_of_k.expected_best(rewards, k) == pytest.approx(
        sum(max(rewards[i] for i in s) for s in subsets) / len(subsets)
    )
    marked = {2, 4}
    assert best_of_k.chance_any(len(marked), 5, k) == pytest.approx(
        sum(any(i in marked for i in s) for s in subsets) / len(subsets)
    )


def test_best_of_k_on_a_tiny_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    options = ("--data.init_args.limit", "2", "--model.init_args.n_self_edits", "3")
    conditions = ("--model.init_args.conditions", "[passage_only, self_edit]")
    main(tiny_knowledge_argv(run_dir, *options, "--data.init_args.self_edits_path", "null", *conditions))
    out = tmp_path / "best.json"
    result = best_of_k.main([str(run_dir), "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["passages"] == 2 and result["K"] == 3 and [r["k"] for r in result["per_k"]] == [1, 2, 3]
    best = [r["best_reward"] for r in result["per_k"]]
    beats = [r["best_beats_passage_only_share"] for r in result["per_k"]]
    assert best == sorted(best) and beats == sorted(beats)  # more samples never lower the best
    assert "best beats passage_only" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs passages"):
        best_of_k.main([str(tmp_path / "empty")])
