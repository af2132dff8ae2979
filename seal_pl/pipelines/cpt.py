"""Multi-passage continued pretraining (CPT): one update on the self-edits of N passages together.

The reference (spec 2.7) pools the training sequences of ``N`` passages, ``K`` self-edits each (each
self-edit's sequences end with the passage itself; ``K = 0`` trains on the passages alone), trains
one adapter on all of them (paper v1: LoRA, 3 epochs, lr 1e-3, batch 4, gradient accumulation 2;
lr 1e-4 for passage only; paper v2: full fine-tuning), and compares closed-book accuracy on all the
passages' questions before and after. This module holds the plain-Python parts, tested without
Lightning: the pooled training texts, the question subset, sharding of evaluation work across
processes, the summary (baseline, adapted, gain, per-passage slices) and the reference numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from seal_pl.knowledge.data import Passage

T = TypeVar("T")

REFERENCE = {
    "source": "SEAL reference results/cpt (spec 2.11): 200 SQuAD val passages, 974 questions, GPT-4.1 grader",
    "lora_paper_v1": {
        "protocol": "LoRA r32/alpha64 on q,v; 3 epochs, lr 1e-3, batch 4, grad accum 2; K=5 (passage only: K=0, lr 1e-4)",
        "passage_only": {"baseline": 0.3224, "adapted": 0.3224},
        "base_implications": {"baseline": 0.3255, "adapted": 0.4097},
        "gpt4_1_implications": {"baseline": 0.3255, "adapted": 0.3943},
        "seal": {"baseline": 0.3326, "adapted": 0.4384},
    },
    "full_finetune_paper_v2": {
        "protocol": "full fine-tuning (hyper-parameters not in the studied snapshot; SEAL issue #13)",
        "gpt4_1_implications": {"adapted": 0.594},
        "seal": {"adapted": 0.582},
    },
}
"""The reference's CPT numbers (accuracy fractions), labelled by paper version."""


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items process ``rank`` of ``world_size`` handles (round robin: ``items[rank::world_size]``)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} of world size {world_size}")
    return list(items[rank::world_size])


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive chunks of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def pooled_training_texts(
    passages: Sequence[Passage],
    completions: Mapping[str, Sequence[str]],
    k: int,
    build: Callable[[Passage, str | None], list[str]],
) -> list[dict]:
    """The pooled training texts of all passages, in passage order.

    Args:
        passages: the N passages.
        completions: self-edits per passage id (at least ``k`` each when ``k > 0``).
        k: self-edits used per passage; 0 trains on each passage alone.
        build: ``(passage, completion or None) -> texts`` (the knowledge pipeline's sequence builder:
            the self-edit's segments, then the passage).

    Returns:
        ``{"passage_id", "edit_index", "text"}`` rows (``edit_index`` None for passage-only texts).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rows: list[dict] = []
    for passage in passages:
        if k == 0:
            rows.extend({"passage_id": passage.id, "edit_index": None, "text": t} for t in build(passage, None))
            continue
        available = list(completions.get(passage.id, []))
        if len(available) < k:
            raise ValueError(f"passage {passage.id!r} has {len(available)} self-edits, {k} needed")
        for index, completion in enumerate(available[:k]):
            rows.extend({"passage_id": passage.id, "edit_index": index, "text": t} for t in build(passage, completion))
    return rows


def select_eval_questions(passages: Sequence[Passage], limit: int | None, seed: int = 42) -> list[Passage]:
    """All questions, or a seeded random subset of ``limit`` of them (the reference's ``--eval_question_limit``).

    The chosen questions keep their passage and their order; passages left without questions are dropped.
    """
    if limit is None:
        return list(passages)
    if limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    keys = [(p.id, q.id) for p in passages for q in p.questions]
    chosen = set(random.Random(seed).sample(keys, min(limit, len(keys))))
    out = []
    for p in passages:
        kept = tuple(q for q in p.questions if (p.id, q.id) in chosen)
        if kept:
            out.append(Passage(p.id, p.title, p.context, kept))
    return out


def summarize_cpt(records: Sequence[dict], passages: Sequence[Passage]) -> dict:
    """Baseline and adapted accuracy over all questions, their gain, and per-passage slices.

    Args:
        records: evaluation records ``{"phase": "baseline"|"adapted", "passage_id", "questions": [graded]}``
            (duplicates by (phase, passage) count once).
        passages: the evaluated passages (order of the per-passage slices).

    ``fixed`` / ``broken`` count questions wrong before and right after, and the reverse (the
    reference's per-question gains of +1 / -1).
    """
    by_key = {(r["phase"], r["passage_id"]): r for r in records}
    table: dict = {"phases": {}}
    for phase in ("baseline", "adapted"):
        present = [by_key[(phase, p.id)] for p in passages if (phase, p.id) in by_key]
        if not present:
            continue
        correct = sum(q["correct"] for r in present for q in r["questions"])
        total = sum(len(r["questions"]) for r in present)
        table["phases"][phase] = {
            "accuracy": correct / max(1, total),
            "n_correct": correct,
            "n_questions": total,
            "n_passages": len(present),
        }
    phases = table["phases"]
    table["baseline_accuracy"] = phases.get("baseline", {}).get("accuracy")
    table["adapted_accuracy"] = phases.get("adapted", {}).get("accuracy")
    table["gain"] = (
        None
        if table["baseline_accuracy"] is None or table["adapted_accuracy"] is None
        else table["adapted_accuracy"] - table["baseline_accuracy"]
    )
    per_passage = []
    fixed = broken = 0
    for p in passages:
        row: dict = {"passage_id": p.id, "title": p.title}
        for phase in ("baseline", "adapted"):
            record = by_key.get((phase, p.id))
            flags = [bool(q["correct"]) for q in record["questions"]] if record else None
            row[f"{phase}_correct"] = flags
            row[f"{phase}_accuracy"] = None if flags is None else sum(flags) / max(1, len(flags))
        if row["baseline_correct"] is not None and row["adapted_correct"] is not None:
            fixed += sum(not b and a for b, a in zip(row["baseline_correct"], row["adapted_correct"]))
            broken += sum(b and not a for b, a in zip(row["baseline_correct"], row["adapted_correct"]))
        per_passage.append(row)
    table["fixed"] = fixed
    table["broken"] = broken
    table["per_passage"] = per_passage
    return table


def format_cpt(summary: dict, header: str = "") -> str:
    """The summary as a small text table."""
    lines = [header] if header else []
    lines.append(f"{'':<10} {'accuracy':>9} {'correct':>8} {'questions':>10}")
    for phase, row in summary["phases"].items():
        lines.append(f"{phase:<10} {100 * row['accuracy']:>8.1f}% {row['n_correct']:>8} {row['n_questions']:>10}")
    if summary["gain"] is not None:
        lines.append(
            f"{'gain':<10} {100 * summary['gain']:>+8.1f}  (questions fixed {summary['fixed']}, broken {summary['broken']})"
        )
    return "\n".join(lines)
