"""ReST-EM filtering: from rewarded self-edits to the supervised fine-tuning set (plain Python).

The E-step writes one record per self-edit (``passage_id``/``task_id``, ``edit_index``, ``prompt``,
``completion``, ``reward`` and, for knowledge, ``gain`` over the un-adapted model). The filter keeps:

* knowledge: the best of the K self-edits of every passage (ties go to the lower edit index, as a
  stable sort does in the reference). The reference keeps the best even when it gained nothing;
  ``min_gain`` drops passages whose best self-edit gained less than that;
* ARC: every self-edit whose task was solved (reward 1).

The result is a list of ``{"prompt", "completion", ...}`` rows for :class:`SFTDataModule`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def best_of_k(records: Iterable[dict], *, group_key: str = "passage_id", min_gain: float | None = None) -> list[dict]:
    """Best self-edit per context; optionally only those that gained at least ``min_gain``."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(str(record[group_key]), []).append(record)
    kept = []
    for key in sorted(groups):
        ranked = sorted(groups[key], key=lambda r: (-float(r["reward"]), int(r["edit_index"])))
        best = ranked[0]
        if min_gain is not None and (best.get("gain") is None or best["gain"] < min_gain):
            continue
        kept.append(_sft_row(best))
    return kept


def keep_successes(records: Iterable[dict], *, threshold: float = 1.0) -> list[dict]:
    """Every self-edit whose reward reaches ``threshold`` (ARC: the task was solved)."""
    return [_sft_row(r) for r in records if float(r["reward"]) >= threshold]


def _sft_row(record: dict) -> dict:
    row = {"prompt": record["prompt"], "completion": record["completion"]}
    for key in ("id", "passage_id", "task_id", "edit_index", "reward", "gain"):
        if key in record:
            row[key] = record[key]
    return row


def reward_statistics(records: Sequence[dict], kept: Sequence[dict], bins: int = 10) -> dict:
    """Mean, max, min, standard deviation and a histogram of rewards, and the fraction kept."""
    rewards = [float(r["reward"]) for r in records]
    if not rewards:
        return {"n": 0, "kept": len(kept), "kept_fraction": 0.0}
    mean = sum(rewards) / len(rewards)
    variance = sum((x - mean) ** 2 for x in rewards) / len(rewards)
    histogram = [0] * bins
    for x in rewards:
        histogram[min(bins - 1, max(0, int(x * bins)))] += 1
    return {
        "n": len(rewards),
        "mean": mean,
        "max": max(rewards),
        "min": min(rewards),
        "std": math.sqrt(variance),
        "histogram": histogram,
        "kept": len(kept),
        "kept_fraction": len(kept) / len(rewards),
    }
