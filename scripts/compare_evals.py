"""Paired bootstrap between knowledge evaluations on the same questions.

    python scripts/compare_evals.py --a runs/x/round_1/eval runs/y/round_1/eval --b runs/x/base/eval runs/y/base/eval
    python scripts/compare_evals.py --a runs/x/round_1/eval --b runs/x/round_1/eval --condition-b passage_only
    python scripts/compare_evals.py --a runs/x/round_1/eval --b runs/x/round_0/eval --permutations 2000

Each side is one or more ``seal test`` run directories of the knowledge module (``predictions.jsonl``);
several directories on a side (e.g. the same policy evaluated with several sampling seeds) are
pooled: a question's score is its mean verdict over them. Prints and returns the mean difference
a - b over the shared questions with its 95% bootstrap interval, and how many questions moved:
scored higher on a (``a_better``), higher on b (``b_better``), or the same (``same``). A small
difference with many questions moving both ways says the two sides know different facts, equally
many; few moving, that they know the same ones.

``--permutations N`` adds what resampling alone would do (``null``,
:func:`seal_pl.stats.exchange_null`): if both sides' self-edits came from one policy, the self-edits
of a passage could be dealt to either side; dealing them at random N times gives the difference and
the question moves to expect from sampling noise, and a permutation ``p_value`` for the observed
difference. Each side needs the same questions of a passage in every self-edit (as ``seal test``
writes them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seal_pl.knowledge.records import PredictionRecord
from seal_pl.pipelines.knowledge_restem import question_scores, read_predictions
from seal_pl.pipelines.restem import paired_difference
from seal_pl.stats import exchange_null


def side_predictions(run_dirs: list[Path]) -> list[list[PredictionRecord]]:
    """Each run directory's merged predictions (read once; both the bootstrap and the null use them)."""
    predictions = []
    for run_dir in run_dirs:
        if not PredictionRecord.merged(run_dir).is_file():
            raise SystemExit(f"{run_dir}: no predictions.jsonl (is it a finished knowledge `seal test` run?)")
        predictions.append(read_predictions(run_dir))
    return predictions


def pooled_scores(side: list[list[PredictionRecord]], condition: str) -> dict[tuple[str, str], float]:
    """Per question: the mean of ``condition``'s verdicts over every run directory of a side."""
    return question_scores((p for run in side for p in run), condition)


def sample_groups(
    a_side: list[list[PredictionRecord]], b_side: list[list[PredictionRecord]], condition_a: str, condition_b: str
) -> list[tuple[list[list[float]], list[list[float]]]]:
    """Per passage both sides answered: each side's samples (one per run directory and self-edit), a
    sample being its verdicts on the passage's shared questions in question order."""

    def samples(
        side: list[list[PredictionRecord]], condition: str
    ) -> dict[str, dict[tuple[int, int], dict[str, float]]]:
        by_passage: dict[str, dict[tuple[int, int], dict[str, float]]] = {}
        for index, run in enumerate(side):
            for p in run:
                if p.condition == condition:
                    sample = by_passage.setdefault(p.passage_id, {}).setdefault((index, p.edit_index), {})
                    sample[p.question_id] = float(p.correct)
        return by_passage

    a, b = samples(a_side, condition_a), samples(b_side, condition_b)
    groups = []
    for passage_id in sorted(a.keys() & b.keys()):
        sides = list(a[passage_id].values()), list(b[passage_id].values())
        questions = sorted(set.intersection(*(set(s) for side in sides for s in side)))
        if questions:
            groups.append(tuple([[s[q] for q in questions] for s in side] for side in sides))
    return groups


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", type=Path, required=True, help="run directories of side a")
    parser.add_argument("--b", nargs="+", type=Path, required=True, help="run directories of side b")
    parser.add_argument("--condition-a", default="self_edit")
    parser.add_argument("--condition-b", default="self_edit")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap (and permutation) seed")
    parser.add_argument(
        "--permutations", type=int, default=0, help="also the resampling-only null with this many permutations"
    )
    args = parser.parse_args(argv)
    if args.permutations < 0:
        parser.error(f"--permutations must be >= 0 (0: no null), got {args.permutations}")
    a_side, b_side = side_predictions(args.a), side_predictions(args.b)
    a = pooled_scores(a_side, args.condition_a)
    b = pooled_scores(b_side, args.condition_b)
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
    if args.permutations > 0:
        groups = sample_groups(a_side, b_side, args.condition_a, args.condition_b)
        null = exchange_null(groups, permutations=args.permutations, seed=args.seed)
        result["null"] = null["null"]
        result["p_value"] = null["p_value"]
        result["permutations"] = null["permutations"]
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
