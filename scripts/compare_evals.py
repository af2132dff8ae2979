"""Paired bootstrap between knowledge evaluations on the same questions.

    python scripts/compare_evals.py --a runs/x/round_1/eval runs/y/round_1/eval --b runs/x/base/eval runs/y/base/eval
    python scripts/compare_evals.py --a runs/x/round_1/eval --b runs/x/round_1/eval --condition-b passage_only

Each side is one or more ``seal test`` run directories of the knowledge module (``predictions.jsonl``);
several directories on a side (e.g. the same policy evaluated with several sampling seeds) are
pooled: a question's score is its mean verdict over them. Prints and returns the mean difference
a - b over the shared questions with its 95% bootstrap interval, and how many questions moved:
scored higher on a (``a_better``), higher on b (``b_better``), or the same (``same``). A small
difference with many questions moving both ways says the two sides know different facts, equally
many; few moving, that they know the same ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seal_pl.knowledge.records import PredictionRecord
from seal_pl.pipelines.knowledge_restem import question_scores, read_predictions
from seal_pl.pipelines.restem import paired_difference


def pooled_scores(run_dirs: list[Path], condition: str) -> dict[tuple[str, str], float]:
    """Per question: the mean of ``condition``'s verdicts over every run directory."""
    predictions = []
    for run_dir in run_dirs:
        if not PredictionRecord.merged(run_dir).is_file():
            raise SystemExit(f"{run_dir}: no predictions.jsonl (is it a finished knowledge `seal test` run?)")
        predictions += read_predictions(run_dir)
    return question_scores(predictions, condition)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", type=Path, required=True, help="run directories of side a")
    parser.add_argument("--b", nargs="+", type=Path, required=True, help="run directories of side b")
    parser.add_argument("--condition-a", default="self_edit")
    parser.add_argument("--condition-b", default="self_edit")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    a = pooled_scores(args.a, args.condition_a)
    b = pooled_scores(args.b, args.condition_b)
    shared = sorted(a.keys() & b.keys())
    result = {
        "a": [str(p) for p in args.a],
        "b": [str(p) for p in args.b],
        "mean_a": sum(a.values()) / len(a),
        "mean_b": sum(b.values()) / len(b),
        **paired_difference(a, b, seed=args.seed),
        "a_better": sum(a[q] > b[q] for q in shared),
        "b_better": sum(a[q] < b[q] for q in shared),
        "same": sum(a[q] == b[q] for q in shared),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
