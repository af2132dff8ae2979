"""scripts/compare_evals.py: paired bootstrap between evaluations, pooling several run directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_cli import load_script

from seal_pl.knowledge.records import PredictionRecord
from seal_pl.records import rewrite_typed


def _script():
    return load_script("compare_evals")


def _eval_dir(path: Path, verdicts: dict[str, list[bool]], edit_index: int = 0, passage_id: str = "p") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rows = [
        PredictionRecord(
            passage_id=passage_id,
            condition=condition,
            edit_index=edit_index,
            question_id=f"q{i}",
            question="?",
            gold=["a"],
            prediction="a" if correct else "b",
            correct=correct,
            exact=correct,
            f1=float(correct),
        )
        for condition, values in verdicts.items()
        for i, correct in enumerate(values)
    ]
    rewrite_typed(PredictionRecord.merged(path), rows)
    return path


def test_pooled_difference_and_interval(tmp_path):
    a1 = _eval_dir(tmp_path / "a1", {"self_edit": [True, True, False, False]})
    a2 = _eval_dir(tmp_path / "a2", {"self_edit": [True, False, False, False]})
    b = _eval_dir(tmp_path / "b", {"self_edit": [False, False, False, False], "passage_only": [True] * 4})
    result = _script().main(["--a", str(a1), str(a2), "--b", str(b)])
    assert result["mean_a"] == pytest.approx(3 / 8) and result["difference"] == pytest.approx(3 / 8)
    assert result["low"] <= result["difference"] <= result["high"] and result["n"] == 4
    # pooled a: q0 1.0, q1 0.5, q2 0, q3 0 against b all 0: two questions moved up, none down
    assert (result["a_better"], result["b_better"], result["same"]) == (2, 0, 2)
    against_passage = _script().main(["--a", str(b), "--b", str(b), "--condition-b", "passage_only"])
    assert against_passage["difference"] == -1.0
    assert (against_passage["a_better"], against_passage["b_better"], against_passage["same"]) == (0, 4, 0)


def test_missing_predictions_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="predictions.jsonl"):
        _script().main(["--a", str(tmp_path), "--b", str(tmp_path)])


def test_permutations_add_the_resampling_null(tmp_path):
    a = _eval_dir(tmp_path / "a", {"self_edit": [True, True, False]})
    b = _eval_dir(tmp_path / "b", {"self_edit": [False, False, False]})
    script = _script()
    groups = script.sample_groups(script.side_predictions([a]), script.side_predictions([b]), "self_edit", "self_edit")
    assert groups == [([[1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0]])]
    result = _script().main(["--a", str(a), "--b", str(b), "--permutations", "200"])
    # one self-edit a side: dealt at random, half the time the good one lands on b
    assert result["permutations"] == 200 and 0.0 < result["p_value"] <= 1.0
    assert result["null"]["a_better"]["high"] == 2 and result["null"]["b_better"]["high"] == 2
    assert "null" not in _script().main(["--a", str(a), "--b", str(b)])


def test_negative_permutations_is_a_usage_error(tmp_path, capsys):
    a = _eval_dir(tmp_path / "a", {"self_edit": [True]})
    with pytest.raises(SystemExit):
        _script().main(["--a", str(a), "--b", str(a), "--permutations", "-1"])
    assert "--permutations must be >= 0" in capsys.readouterr().err
