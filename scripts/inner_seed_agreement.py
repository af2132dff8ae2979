"""How much a self-edit's reward depends on the inner-loop seed: read a knowledge run trained with
``inner_seeds`` >= 2 and compare each adaptation's accuracy under seed 0 and seed 1.

    seal test --config configs/knowledge/demo.yaml --data.init_args.path data/knowledge/train.json \\
        --data.init_args.limit 8 --data.init_args.self_edits_path null \\
        --model.init_args.conditions '[passage_only, self_edit]' --model.init_args.n_self_edits 4 \\
        --model.init_args.inner_seeds 2 --run_dir runs/inner-seeds
    python scripts/inner_seed_agreement.py runs/inner-seeds --out inner_seeds.json

Prints (and writes with ``--out``) the share of self-edits whose reward is the same under both seeds,
their correlation and mean absolute difference, how many had more training sequences than one batch
holds (only those can change with the seed: the seed orders the sequences), and whether best-of-K
chosen under seed 0 keeps its reward under seed 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from seal_pl.knowledge.records import PassageRecord
from seal_pl.records import read_all_typed


def accuracy_by_seed(runs) -> dict[tuple[int, int], float]:
    """(edit index, inner seed) -> accuracy on the passage's questions."""
    return {(r.edit_index, r.repeat): r.accuracy for r in runs}


def agreement(records: list[PassageRecord], batch_size: int) -> dict:
    """Seed 0 against seed 1 for every self-edit and passage_only adaptation of ``records``."""
    pairs, passage_pairs, best0, best1, multi_batch = [], [], [], [], 0
    for record in records:
        edits = accuracy_by_seed(record.conditions["self_edit"])
        if not any(seed == 1 for _, seed in edits):
            raise SystemExit(f"passage {record.passage_id}: no second inner seed (run with inner_seeds >= 2)")
        passage = accuracy_by_seed(record.conditions.get("passage_only", []))
        if passage:
            passage_pairs.append((passage[0, 0], passage[0, 1]))
        indices = sorted({index for index, _ in edits})
        pairs += [(edits[i, 0], edits[i, 1]) for i in indices]
        multi_batch += sum(
            len(r.adaptation.sequences) > batch_size for r in record.conditions["self_edit"] if r.repeat == 0
        )
        chosen = max(indices, key=lambda i: edits[i, 0])
        best0.append(edits[chosen, 0])
        best1.append(edits[chosen, 1])
    first, second = zip(*pairs)
    varied = len(set(first)) > 1 and len(set(second)) > 1
    return {
        "passages": len(records),
        "self_edits": len(pairs),
        "self_edits_over_one_batch": multi_batch,
        "same_reward_share": sum(a == b for a, b in pairs) / len(pairs),
        "correlation": statistics.correlation(first, second) if varied else None,
        "mean_abs_difference": statistics.mean(abs(a - b) for a, b in pairs),
        "passage_only_same_share": (
            sum(a == b for a, b in passage_pairs) / len(passage_pairs) if passage_pairs else None
        ),
        "best_of_k_seed0_reward": statistics.mean(best0),
        "best_of_k_seed0_reward_under_seed1": statistics.mean(best1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a seal test run directory (passages.rank*.jsonl)")
    parser.add_argument("--batch-size", type=int, default=4, help="the run's inner.batch_size")
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    records = read_all_typed(PassageRecord.shards(args.run_dir), PassageRecord)
    if not records:
        raise SystemExit(f"{args.run_dir}: no passages.rank*.jsonl records")
    result = agreement(records, args.batch_size)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
