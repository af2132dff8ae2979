"""ReST-EM filtering: from rewarded self-edits to the supervised fine-tuning set (plain Python).

The E-step writes one record per self-edit (``passage_id``/``task_id``, ``edit_index``, ``prompt``,
``completion``, ``reward`` and, for knowledge, ``gain`` over the un-adapted model). The filter keeps:

* knowledge: the best of the K self-edits of every passage (ties go to the lower edit index, as a
  stable sort does in the reference). The reference keeps the best even when it gained nothing;
  ``min_gain`` drops passages whose best self-edit gained less than that; ``top_k`` keeps more
  than one per passage (the reference script's ``--k_best``);
* ARC: every self-edit whose task was solved (reward 1). Unscored pairs (reward ``None``: no
  solutions available) are never kept.

The result is a list of ``{"prompt", "completion", ...}`` rows for :class:`SFTDataModule`.

:func:`knowledge_self_edits` and :func:`arc_self_edits` turn the E-step modules' record shards into
one uniform record per self-edit (``id``, ``context_id``, ``edit_index``, ``seed``, ``prompt``,
``completion``, ``reward``, ``components``); :func:`select` applies the domain's filter to them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

DOMAINS = ("knowledge", "arc")


def best_of_k(
    records: Iterable[dict],
    *,
    group_key: str = "passage_id",
    min_gain: float | None = None,
    top_k: int = 1,
) -> list[dict]:
    """The ``top_k`` best self-edits per context; optionally only those that gained at least ``min_gain``."""
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    groups: dict[str, list[dict]] = {}
    for record in records:
        if record.get("reward") is None:
            continue
        groups.setdefault(str(record[group_key]), []).append(record)
    kept = []
    for key in sorted(groups):
        ranked = sorted(groups[key], key=lambda r: (-float(r["reward"]), int(r["edit_index"])))
        for best in ranked[:top_k]:
            if min_gain is not None and (best.get("gain") is None or best["gain"] < min_gain):
                continue
            kept.append(_sft_row(best))
    return kept


def keep_successes(records: Iterable[dict], *, threshold: float = 1.0) -> list[dict]:
    """Every self-edit whose reward reaches ``threshold`` (ARC: the task was solved)."""
    return [_sft_row(r) for r in records if r.get("reward") is not None and float(r["reward"]) >= threshold]


def _sft_row(record: dict) -> dict:
    row = {"prompt": record["prompt"], "completion": record["completion"]}
    for key in ("id", "context_id", "passage_id", "task_id", "edit_index", "reward", "gain"):
        if key in record:
            row[key] = record[key]
    return row


def reward_statistics(records: Sequence[dict], kept: Sequence[dict], bins: int = 10) -> dict:
    """Mean, max, min, standard deviation and a histogram of rewards (in [0, 1]), and the fraction kept.

    ``n`` counts every self-edit, ``n_scored`` those with a reward (ARC pairs without solutions have none).
    """
    rewards = [float(r["reward"]) for r in records if r.get("reward") is not None]
    if not rewards:
        return {"n": len(records), "n_scored": 0, "kept": len(kept), "kept_fraction": 0.0}
    mean = sum(rewards) / len(rewards)
    variance = sum((x - mean) ** 2 for x in rewards) / len(rewards)
    histogram = [0] * bins
    for x in rewards:
        histogram[min(bins - 1, max(0, int(x * bins)))] += 1
    return {
        "n": len(records),
        "n_scored": len(rewards),
        "mean": mean,
        "max": max(rewards),
        "min": min(rewards),
        "std": math.sqrt(variance),
        "histogram": histogram,
        "kept": len(kept),
        "kept_fraction": len(kept) / len(records),
    }


def _latest_by_id(records: Iterable[dict]) -> dict[str, dict]:
    """One record per id (a record written again after a resume replaces the earlier one)."""
    return {str(r["id"]): r for r in records}


def knowledge_self_edits(self_edit_records: Iterable[dict]) -> list[dict]:
    """Uniform E-step records from ``self_edits.rank*.jsonl`` of the knowledge module.

    The reward is the mean adapted accuracy over the inner-loop seeds; ``components`` holds the
    per-seed accuracies, the passage's un-adapted accuracy and the gain over it.
    """
    out = []
    for record in _latest_by_id(self_edit_records).values():
        components = {key: record.get(key) for key in ("accuracy_per_seed", "baseline_accuracy", "gain")}
        out.append(
            {
                "id": record["id"],
                "context_id": record["passage_id"],
                "passage_id": record["passage_id"],
                "edit_index": record["edit_index"],
                "seed": record.get("seed"),
                "prompt": record["prompt"],
                "completion": record["completion"],
                "reward": record["reward"],
                "gain": record.get("gain"),
                "components": components,
            }
        )
    return sorted(out, key=lambda r: (str(r["context_id"]), int(r["edit_index"])))


ARC_COMPONENTS = (
    "valid",
    "reason",
    "skipped",
    "trained",
    "solved",
    "config",
    "n_train_examples",
    "planned_steps",
    "steps",
    "train_tokens",
    "train_seconds",
    "infer_seconds",
)


def arc_self_edits(edit_records: Iterable[dict], sample_records: Iterable[dict] = ()) -> list[dict]:
    """Uniform E-step records from the ARC module's ``edits`` (and ``self_edits``, for the seed) shards.

    The reward is 1 iff the task was solved after TTT with the self-edit (``None`` when unscored);
    ``components`` holds validity, compute-cap skip, training trace and per-subtask verdicts.
    """
    seeds = {key: r.get("seed") for key, r in _latest_by_id(sample_records).items()}
    out = []
    for key, record in _latest_by_id(edit_records).items():
        components: dict[str, Any] = {name: record.get(name) for name in ARC_COMPONENTS}
        components["subtasks"] = {s["subtask_id"]: s.get("solved") for s in record.get("subtasks", [])}
        out.append(
            {
                "id": record["id"],
                "context_id": record["task_id"],
                "task_id": record["task_id"],
                "edit_index": record["edit_index"],
                "seed": seeds.get(key),
                "prompt": record.get("prompt"),
                "completion": record.get("completion") or "",
                "reward": record.get("reward"),
                "components": components,
            }
        )
    return sorted(out, key=lambda r: (str(r["context_id"]), int(r["edit_index"])))


def select(domain: str, records: Sequence[dict], *, top_k: int = 1, min_gain: float | None = None) -> list[dict]:
    """The SFT rows of one round: best-of-K per passage (knowledge) or every success (ARC)."""
    if domain == "knowledge":
        return best_of_k(records, group_key="context_id", min_gain=min_gain, top_k=top_k)
    if domain == "arc":
        return keep_successes([r for r in records if r.get("prompt") is not None])
    raise ValueError(f"unknown domain {domain!r}; valid: {list(DOMAINS)}")
