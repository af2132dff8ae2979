"""The knowledge domain of the ReST-EM outer loop (plain Python): best-of-K self-edits per passage.

The E-step (:class:`~seal_pl.lightning.KnowledgeIncorporationModule` under ``seal predict``)
writes one :class:`~seal_pl.knowledge.records.KnowledgeSelfEdit` per sampled self-edit. The filter
(:func:`best_of_k`) keeps the best ``top_k`` of the K self-edits of every passage (ties go to the
lower edit index, as a stable sort does in the reference). The reference keeps the best even when
it gained nothing; ``min_gain`` drops self-edits that gained less than that over the baseline
``gain_over`` names (``no_adaptation``, the reference's un-adapted accuracy, or ``passage_only``:
what training on the passage alone already teaches); ``max_copied_line_share`` leaves out
self-edits that mostly copy the passage (:mod:`seal_pl.knowledge.self_edit_stats`) before ranking:
a copy teaches what ``passage_only`` does, so when it wins the ranking it won on reward noise.

Held out: the accuracy per condition of a ``seal test`` run (headline: ``self_edit``), the
self-edits' statistics and two samples; across evaluations, paired bootstrap intervals over the
questions (:meth:`KnowledgeDomain.comparisons`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from seal_pl.knowledge.records import KnowledgeSelfEdit, PassageRecord, PredictionRecord
from seal_pl.knowledge.self_edit_stats import STATS_KEYS, summarize_self_edit_stats
from seal_pl.pipelines.restem import (
    FilterOptions,
    GainBaseline,
    HeldOut,
    ReSTEMDomain,
    latest_by_id,
    paired_difference,
)
from seal_pl.records import SFTExample, read_all_typed, read_typed

GAIN_FIELDS = {"no_adaptation": "gain", "passage_only": "gain_over_passage"}
"""The record field holding a self-edit's gain over each baseline."""


def best_of_k(
    records: Iterable[KnowledgeSelfEdit],
    *,
    min_gain: float | None = None,
    top_k: int = 1,
    gain_over: GainBaseline = "no_adaptation",
    max_copied_line_share: float | None = None,
) -> list[SFTExample]:
    """The ``top_k`` best self-edits per passage; optionally only those that gained at least
    ``min_gain`` over the ``gain_over`` baseline, and only among those whose
    ``stats["copied_line_share"]`` is at most ``max_copied_line_share``."""
    FilterOptions(top_k=top_k, min_gain=min_gain, gain_over=gain_over, max_copied_line_share=max_copied_line_share)
    gain_field = GAIN_FIELDS[gain_over]
    groups: dict[str, list[KnowledgeSelfEdit]] = {}
    for record in records:
        if record.reward is None:
            continue
        if max_copied_line_share is not None and copied_line_share(record) > max_copied_line_share:
            continue
        groups.setdefault(str(record.context_id), []).append(record)
    kept = []
    for key in sorted(groups):
        ranked = sorted(groups[key], key=lambda r: (-float(r.reward), int(r.edit_index)))
        for best in ranked[:top_k]:
            gain = getattr(best, gain_field)
            if min_gain is not None and (gain is None or gain < min_gain):
                continue
            kept.append(SFTExample.of(best))
    return kept


def copied_line_share(record: KnowledgeSelfEdit) -> float:
    if not record.stats or record.stats.get("copied_line_share") is None:
        raise ValueError(
            f"self-edit {record.id!r} has no stats.copied_line_share: max_copied_line_share needs the "
            "knowledge E-step's self-edit statistics"
        )
    return float(record.stats["copied_line_share"])


def round_evidence(records: Sequence[KnowledgeSelfEdit], kept: Sequence[SFTExample]) -> dict[str, Any]:
    """What a knowledge E-step found, beyond the reward statistics.

    ``best_beats_passage_only``: the share of passages whose best self-edit scored above training
    on the passage alone (None when the E-step did not run ``passage_only``); ``self_edits`` and
    ``kept_self_edits``: mean length, lines, name/number coverage and copied-line share of every
    sampled and of the kept self-edits.
    """
    by_context: dict[str, list[KnowledgeSelfEdit]] = {}
    for record in records:
        by_context.setdefault(str(record.context_id), []).append(record)
    beats = []
    for group in by_context.values():
        scored = [r for r in group if r.reward is not None]
        baseline = group[0].passage_only_accuracy
        if scored and baseline is not None:
            beats.append(max(float(r.reward) for r in scored) > baseline)
    stats_by_id = {r.id: r.stats for r in records}
    return {
        "best_beats_passage_only": sum(beats) / len(beats) if beats else None,
        "self_edits": summarize_self_edit_stats(r.stats for r in records if _has_stats(r.stats)),
        "kept_self_edits": summarize_self_edit_stats(
            stats_by_id[k.id] for k in kept if _has_stats(stats_by_id.get(k.id))
        ),
    }


def _has_stats(stats: dict[str, float] | None) -> bool:
    return bool(stats) and all(key in stats for key in STATS_KEYS)


def question_scores(predictions: Iterable[PredictionRecord], condition: str) -> dict[tuple[str, str], float]:
    """Per (passage id, question id): the mean verdict of ``condition``'s runs on that question."""
    verdicts: dict[tuple[str, str], list[float]] = {}
    for p in predictions:
        if p.condition == condition:
            verdicts.setdefault((str(p.passage_id), str(p.question_id)), []).append(float(p.correct))
    return {key: sum(v) / len(v) for key, v in verdicts.items()}


def read_predictions(eval_dir: Path) -> list[PredictionRecord]:
    """The merged predictions of a finished knowledge evaluation (``predictions.jsonl``)."""
    return list(read_typed(PredictionRecord.merged(eval_dir), PredictionRecord))


def heldout_samples(eval_dir: Path, n: int = 2) -> list[dict[str, Any]]:
    """The first ``n`` held-out passages' self-edits (the same passages every round) with their accuracy."""
    records = {r.passage_id: r for r in read_all_typed(PassageRecord.shards(eval_dir), PassageRecord)}
    samples = []
    for passage_id in sorted(records)[:n]:
        runs = records[passage_id].conditions.get("self_edit") or []
        if runs and runs[0].adaptation is not None:
            samples.append(
                {"passage_id": passage_id, "accuracy": runs[0].accuracy, "completion": runs[0].adaptation.completion}
            )
    return samples


class KnowledgeDomain(ReSTEMDomain):
    """Knowledge incorporation: passages, best-of-K self-edits, closed-book accuracy held out."""

    name = "knowledge"
    scored = KnowledgeSelfEdit

    def check(self, estep_init_args: dict[str, Any], options: FilterOptions) -> None:
        conditions = estep_init_args.get("conditions")
        if conditions is not None and "self_edit" not in conditions:
            raise ValueError("estep: the knowledge module needs the self_edit condition")
        if options.gain_over == "passage_only" and "passage_only" not in (conditions or []):
            raise ValueError(
                "gain_over: passage_only needs the passage_only condition in estep.model.init_args.conditions"
            )

    def collect(self, stage_dir: Path) -> list[KnowledgeSelfEdit]:
        return latest_by_id(read_all_typed(KnowledgeSelfEdit.shards(stage_dir), KnowledgeSelfEdit))

    def select(self, records: Sequence[KnowledgeSelfEdit], options: FilterOptions) -> list[SFTExample]:
        return best_of_k(
            records,
            min_gain=options.min_gain,
            top_k=options.top_k,
            gain_over=options.gain_over,
            max_copied_line_share=options.max_copied_line_share,
        )

    def rule(self, options: FilterOptions) -> str:
        rule = f"best {options.top_k} of K per passage"
        if options.min_gain is not None:
            rule += f", gain over {options.gain_over} >= {options.min_gain}"
        if options.max_copied_line_share is not None:
            rule += f", copied-line share <= {options.max_copied_line_share}"
        return rule

    def evidence(self, records: Sequence[KnowledgeSelfEdit], kept: Sequence[SFTExample]) -> dict[str, Any]:
        return round_evidence(records, kept)

    def heldout(self, eval_dir: Path) -> HeldOut:
        results = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
        metrics = {name: row["accuracy"] for name, row in results.get("conditions", {}).items()}
        return HeldOut(
            metrics=metrics,
            headline=metrics.get("self_edit"),
            extras={
                "self_edit_stats": (results.get("self_edit_stats") or {}).get("self_edit"),
                "samples": heldout_samples(eval_dir),
                "timing": results.get("timing"),
            },
        )

    def comparisons(self, evaluations: Sequence[tuple[str, Path]], *, seed: int = 0) -> dict[str, Any]:
        """Paired bootstrap intervals over the held-out questions.

        ``self_edit_round_<k>_minus_base``: self_edit accuracy after round k minus the base policy's;
        ``self_edit_minus_passage_only_<base|round_k>``: within one evaluation. The last round's are
        also given as ``self_edit_last_minus_base`` and ``self_edit_minus_passage_only_last``.
        """
        scores = {}
        for name, eval_dir in evaluations:
            if PredictionRecord.merged(eval_dir).is_file():
                predictions = read_predictions(eval_dir)
                scores[name] = {c: question_scores(predictions, c) for c in ("self_edit", "passage_only")}
        out: dict[str, Any] = {}
        for name, by_condition in scores.items():
            if by_condition["self_edit"] and by_condition["passage_only"]:
                out[f"self_edit_minus_passage_only_{name}"] = paired_difference(
                    by_condition["self_edit"], by_condition["passage_only"], seed=seed
                )
            if name != "base" and "base" in scores and by_condition["self_edit"] and scores["base"]["self_edit"]:
                out[f"self_edit_{name}_minus_base"] = paired_difference(
                    by_condition["self_edit"], scores["base"]["self_edit"], seed=seed
                )
        rounds = [name for name in scores if name != "base"]
        if rounds:
            last = rounds[-1]
            for key, alias in (
                (f"self_edit_{last}_minus_base", "self_edit_last_minus_base"),
                (f"self_edit_minus_passage_only_{last}", "self_edit_minus_passage_only_last"),
            ):
                if key in out:
                    out[alias] = {**out[key], "round": last}
        return out

    def describe(self, record: KnowledgeSelfEdit) -> str:
        gain = f", gain {record.gain:+.3f}" if record.gain is not None else ""
        return f"**{record.id}** reward {record.reward}{gain}"
