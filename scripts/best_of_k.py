"""How best-of-K selection improves with K: from one E-step-like run with K self-edits per passage,
the expected best reward and the share of passages whose best self-edit beats ``passage_only``, for
every k <= K, averaged exactly over all k-subsets of the K samples (no resampling noise).

    seal test --config configs/knowledge/demo.yaml --data.init_args.path data/knowledge/train.json \\
        --data.init_args.limit 8 --data.init_args.self_edits_path null \\
        --model.init_args.conditions '[passage_only, self_edit]' --model.init_args.n_self_edits 8 \\
        --run_dir runs/best-of-k
    python scripts/best_of_k.py runs/best-of-k --out best_of_k.json

Rewards are accuracies on the passage's questions (the first inner seed); "beats" means by at least
one question, as the shipped filter's ``min_gain: 0.01`` over ``passage_only``.
"""

from __future__ import annotations

import argparse
import json
from math import comb
from pathlib import Path

from seal_pl.knowledge.records import PassageRecord
from seal_pl.records import read_all_typed


def expected_best(rewards: list[float], k: int) -> float:
    """The mean of max(subset) over all k-subsets of ``rewards``: the i-th smallest value is the
    maximum of C(i - 1, k - 1) of the C(K, k) subsets."""
    ordered = sorted(rewards)
    return sum(r * comb(i, k - 1) for i, r in enumerate(ordered)) / comb(len(ordered), k)


def chance_any(hits: int, total: int, k: int) -> float:
    """The share of k-subsets of ``total`` samples that hold at least one of ``hits`` marked ones."""
    return 1.0 - comb(total - hits, k) / comb(total, k)


def best_of_k(records: list[PassageRecord]) -> dict:
    """Per k: mean expected best reward, its gain over passage_only, and the share of passages whose
    best of k beats passage_only by a question or more."""
    passages = []
    for record in records:
        runs = [r for r in record.conditions["self_edit"] if r.repeat == 0]
        baseline = next(r for r in record.conditions["passage_only"] if r.repeat == 0)
        n = len(baseline.questions)
        accuracy = [r.accuracy for r in runs]
        passage_only = baseline.accuracy
        passages.append((accuracy, passage_only, sum(a >= passage_only + 1 / n - 1e-9 for a in accuracy)))
    k_max = min(len(accuracy) for accuracy, _, _ in passages)
    rows = []
    for k in range(1, k_max + 1):
        best = [expected_best(accuracy[:k_max], k) for accuracy, _, _ in passages]
        beats = [chance_any(hits, k_max, k) for _, _, hits in passages]
        rows.append(
            {
                "k": k,
                "best_reward": sum(best) / len(best),
                "best_minus_passage_only": sum(b - p for b, (_, p, _) in zip(best, passages)) / len(best),
                "best_beats_passage_only_share": sum(beats) / len(beats),
            }
        )
    return {"passages": len(passages), "K": k_max, "per_k": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a seal test run directory (passages.rank*.jsonl)")
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    records = read_all_typed(PassageRecord.shards(args.run_dir), PassageRecord)
    if not records or any("passage_only" not in r.conditions or "self_edit" not in r.conditions for r in records):
        raise SystemExit(f"{args.run_dir}: needs passages.rank*.jsonl records with passage_only and self_edit runs")
    result = best_of_k(records)
    print(f"{'k':>3} {'best reward':>12} {'best - passage_only':>20} {'best beats passage_only':>24}")
    for row in result["per_k"]:
        print(
            f"{row['k']:>3} {100 * row['best_reward']:>11.1f}% {100 * row['best_minus_passage_only']:>+19.1f} "
            f"{100 * row['best_beats_passage_only_share']:>23.1f}%"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
