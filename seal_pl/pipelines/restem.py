"""ReST-EM filtering: from rewarded self-edits to the supervised fine-tuning set (plain Python).

The E-step writes one record per self-edit (``passage_id``/``task_id``, ``edit_index``, ``prompt``,
``completion``, ``reward`` and, for knowledge, ``gain`` over the un-adapted model). The filter keeps:

* knowledge: the best of the K self-edits of every passage (ties go to the lower edit index, as a
  stable sort does in the reference). The reference keeps the best even when it gained nothing;
  ``min_gain`` drops passages whose best self-edit gained less than that over the baseline
  ``gain_over`` names (``no_adaptation``, the reference's un-adapted accuracy, or ``passage_only``:
  what training on the passage alone already teaches); ``top_k`` keeps more than one per passage
  (the reference script's ``--k_best``); ``max_copied_line_share`` refuses self-edits that mostly
  copy the passage (see :mod:`seal_pl.knowledge.self_edit_stats`) before ranking: a copy can teach
  no more than ``passage_only`` does, so when it wins the ranking it won on reward noise;
* ARC: every self-edit whose task was solved (reward 1). Unscored pairs (reward ``None``: no
  solutions available) are never kept.

The result is a list of ``{"prompt", "completion", ...}`` rows for :class:`SFTDataModule`.

:func:`knowledge_self_edits` and :func:`arc_self_edits` turn the E-step modules' record shards into
one uniform record per self-edit (``id``, ``context_id``, ``edit_index``, ``seed``, ``prompt``,
``completion``, ``reward``, ``components``); :func:`select` applies the domain's filter to them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from seal_pl.knowledge.self_edit_stats import STATS_KEYS, summarize_self_edit_stats
from seal_pl.stats import paired_bootstrap

DOMAINS = ("knowledge", "arc")

GainBaseline = Literal["no_adaptation", "passage_only"]
GAIN_FIELDS = {"no_adaptation": "gain", "passage_only": "gain_over_passage"}
"""The record field holding a self-edit's gain over each baseline."""


def best_of_k(
    records: Iterable[dict],
    *,
    group_key: str = "passage_id",
    min_gain: float | None = None,
    top_k: int = 1,
    gain_over: GainBaseline = "no_adaptation",
    max_copied_line_share: float | None = None,
) -> list[dict]:
    """The ``top_k`` best self-edits per context; optionally only those that gained at least
    ``min_gain`` over the ``gain_over`` baseline (a self-edit without that gain is not kept), and
    only among those whose ``stats.copied_line_share`` is at most ``max_copied_line_share``."""
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    if max_copied_line_share is not None and not 0.0 <= max_copied_line_share <= 1.0:
        raise ValueError(f"max_copied_line_share must be in [0, 1], got {max_copied_line_share}")
    if gain_over not in GAIN_FIELDS:
        raise ValueError(f"gain_over must be one of {sorted(GAIN_FIELDS)}, got {gain_over!r}")
    gain_field = GAIN_FIELDS[gain_over]
    groups: dict[str, list[dict]] = {}
    for record in records:
        if record.get("reward") is None:
            continue
        if max_copied_line_share is not None and _copied_line_share(record) > max_copied_line_share:
            continue
        groups.setdefault(str(record[group_key]), []).append(record)
    kept = []
    for key in sorted(groups):
        ranked = sorted(groups[key], key=lambda r: (-float(r["reward"]), int(r["edit_index"])))
        for best in ranked[:top_k]:
            if min_gain is not None and (best.get(gain_field) is None or best[gain_field] < min_gain):
                continue
            kept.append(_sft_row(best))
    return kept


def _copied_line_share(record: dict) -> float:
    stats = record.get("stats")
    if not stats or stats.get("copied_line_share") is None:
        raise ValueError(
            f"self-edit {record.get('id')!r} has no stats.copied_line_share: max_copied_line_share needs the "
            "knowledge E-step's self-edit statistics"
        )
    return float(stats["copied_line_share"])


def keep_successes(records: Iterable[dict], *, threshold: float = 1.0) -> list[dict]:
    """Every self-edit whose reward reaches ``threshold`` (ARC: the task was solved)."""
    return [_sft_row(r) for r in records if r.get("reward") is not None and float(r["reward"]) >= threshold]


def _sft_row(record: dict) -> dict:
    row = {"prompt": record["prompt"], "completion": record["completion"]}
    for key in ("id", "context_id", "passage_id", "task_id", "edit_index", "reward", "gain", "gain_over_passage"):
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
        components = {
            key: record.get(key)
            for key in ("accuracy_per_seed", "baseline_accuracy", "gain", "passage_only_accuracy", "gain_over_passage")
        }
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
                "gain_over_passage": record.get("gain_over_passage"),
                "stats": record.get("stats"),
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


def select(
    domain: str,
    records: Sequence[dict],
    *,
    top_k: int = 1,
    min_gain: float | None = None,
    gain_over: GainBaseline = "no_adaptation",
    max_copied_line_share: float | None = None,
) -> list[dict]:
    """The SFT rows of one round: best-of-K per passage (knowledge) or every success (ARC)."""
    if domain == "knowledge":
        return best_of_k(
            records,
            group_key="context_id",
            min_gain=min_gain,
            top_k=top_k,
            gain_over=gain_over,
            max_copied_line_share=max_copied_line_share,
        )
    if domain == "arc":
        return keep_successes([r for r in records if r.get("prompt") is not None])
    raise ValueError(f"unknown domain {domain!r}; valid: {list(DOMAINS)}")


# ------------------------------------------------------------------------- knowledge evidence
def knowledge_round_evidence(records: Sequence[dict], kept: Sequence[dict]) -> dict[str, Any]:
    """What a knowledge E-step found, beyond the reward statistics.

    ``best_beats_passage_only``: the share of passages whose best self-edit scored above training
    on the passage alone (None when the E-step did not run ``passage_only``); ``self_edits`` and
    ``kept_self_edits``: mean length, lines, name/number coverage and copied-line share of every
    sampled and of the kept self-edits.
    """
    by_context: dict[str, list[dict]] = {}
    for record in records:
        by_context.setdefault(str(record["context_id"]), []).append(record)
    beats = []
    for group in by_context.values():
        scored = [r for r in group if r.get("reward") is not None]
        baseline = (group[0].get("components") or {}).get("passage_only_accuracy")
        if scored and baseline is not None:
            beats.append(max(float(r["reward"]) for r in scored) > baseline)
    stats_by_id = {r["id"]: r.get("stats") for r in records}
    return {
        "best_beats_passage_only": sum(beats) / len(beats) if beats else None,
        "self_edits": summarize_self_edit_stats(r["stats"] for r in records if _has_stats(r.get("stats"))),
        "kept_self_edits": summarize_self_edit_stats(
            stats_by_id[r["id"]] for r in kept if _has_stats(stats_by_id.get(r.get("id")))
        ),
    }


def _has_stats(stats: Mapping | None) -> bool:
    return bool(stats) and all(key in stats for key in STATS_KEYS)


def question_scores(predictions: Iterable[dict], condition: str) -> dict[tuple[str, str], float]:
    """Per (passage id, question id): the mean verdict of ``condition``'s runs on that question."""
    verdicts: dict[tuple[str, str], list[float]] = {}
    for p in predictions:
        if p["condition"] == condition:
            verdicts.setdefault((str(p["passage_id"]), str(p["question_id"])), []).append(float(p["correct"]))
    return {key: sum(v) / len(v) for key, v in verdicts.items()}


def paired_difference(
    a: Mapping[tuple[str, str], float], b: Mapping[tuple[str, str], float], *, seed: int = 0
) -> dict[str, Any]:
    """Paired bootstrap of ``a - b`` over the questions both answered (raises if there are none)."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("the two evaluations share no question")
    return paired_bootstrap([a[k] for k in shared], [b[k] for k in shared], seed=seed)
