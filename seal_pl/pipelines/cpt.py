"""Multi-passage continued pretraining (CPT): one update on the self-edits of N passages together.

The reference (spec 2.7) pools the training sequences of ``N`` passages, ``K`` self-edits each (each
self-edit's sequences end with the passage itself; ``K = 0`` trains on the passages alone), trains
one adapter on all of them (paper v1: LoRA, 3 epochs, lr 1e-3, batch 4, gradient accumulation 2;
lr 1e-4 for passage only; paper v2: full fine-tuning), and compares closed-book accuracy on all the
passages' questions before and after. This module holds the plain-Python parts, tested without
Lightning: the self-edits (from a file, or sampled in fixed chunks shared out across processes),
the pooled training texts, the question subset, sharding of evaluation work across processes, the
evaluation of one phase, the summary (baseline, adapted, gain, per-passage slices), ``results.json``
and the reference numbers. Everything it hands over is a typed record of
:mod:`seal_pl.knowledge.cpt_records`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from seal_pl.knowledge.cpt_records import CPTEvalRecord, CPTSelfEditRecord, CPTTrainText
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
) -> list[CPTTrainText]:
    """The pooled training texts of all passages, in passage order.

    Args:
        passages: the N passages.
        completions: self-edits per passage id (at least ``k`` each when ``k > 0``).
        k: self-edits used per passage; 0 trains on each passage alone.
        build: ``(passage, completion or None) -> texts`` (the knowledge pipeline's sequence builder:
            the self-edit's segments, then the passage).

    Returns:
        One :class:`CPTTrainText` per text (``edit_index`` None for passage-only texts).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rows: list[CPTTrainText] = []
    for passage in passages:
        if k == 0:
            rows.extend(CPTTrainText(passage_id=passage.id, edit_index=None, text=t) for t in build(passage, None))
            continue
        available = list(completions.get(passage.id, []))
        if len(available) < k:
            raise ValueError(f"passage {passage.id!r} has {len(available)} self-edits, {k} needed")
        for index, completion in enumerate(available[:k]):
            texts = build(passage, completion)
            rows.extend(CPTTrainText(passage_id=passage.id, edit_index=index, text=t) for t in texts)
    return rows


# -------------------------------------------------------------------------------- self-edits
def self_edit_table(records: Iterable[CPTSelfEditRecord]) -> dict[str, dict[int, str]]:
    """Passage id -> self-edit index -> completion (a record written again replaces the earlier one)."""
    table: dict[str, dict[int, str]] = {}
    for record in records:
        table.setdefault(record.passage_id, {})[record.edit_index] = record.completion
    return table


def missing_self_edits(records: Iterable[CPTSelfEditRecord], passages: Sequence[Passage], k: int) -> list[Passage]:
    """The passages with fewer than ``k`` recorded self-edits."""
    table = self_edit_table(records)
    return [p for p in passages if len(table.get(p.id, {})) < k]


def self_edits_from_file(
    passages: Sequence[Passage], k: int, external: Mapping[str, Sequence[str]], source: str
) -> list[CPTSelfEditRecord]:
    """The first ``k`` self-edits of each passage from a self-edit file (``source``: its path)."""
    return [
        CPTSelfEditRecord.of(p.id, index, completion, source)
        for p in passages
        for index, completion in enumerate(external[p.id][:k])
    ]


def sample_self_edits(
    sample: Callable[[list[Passage], int, int], list[list[str]]],
    passages: Sequence[Passage],
    needed: set[str],
    k: int,
    *,
    chunk_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[CPTSelfEditRecord]:
    """``k`` self-edits per passage written by the model, chunk by chunk (as each chunk is sampled).

    The passages are cut into fixed chunks of ``chunk_size`` (chunk ``c`` samples with ``seed + c``),
    so the self-edits do not depend on the number of processes; this process takes its share of
    the chunks (:func:`shard`) and skips those without a ``needed`` passage.
    ``sample(chunk, k, seed)`` is the knowledge pipeline's ``sample_self_edits``.
    """
    for chunk_index, chunk in shard(list(enumerate(chunks(passages, chunk_size))), rank, world_size):
        if not needed.intersection(p.id for p in chunk):
            continue
        for p, edits in zip(chunk, sample(chunk, k, seed + chunk_index)):
            for index, completion in enumerate(edits):
                yield CPTSelfEditRecord.of(p.id, index, completion, "model", seed=seed + chunk_index)


def new_self_edits(
    sample: Callable[[list[Passage], int, int], list[list[str]]],
    passages: Sequence[Passage],
    have: Iterable[CPTSelfEditRecord],
    k: int,
    *,
    external: Mapping[str, Sequence[str]] | None = None,
    source: str | None = None,
    chunk_size: int = 8,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[CPTSelfEditRecord]:
    """The self-edits this process adds to those it ``have``s so that every passage has ``k``: the
    file's (``external``, written by rank 0 only) or the model's (:func:`sample_self_edits`)."""
    missing = missing_self_edits(have, passages, k)
    if external:
        yield from self_edits_from_file(missing, k, external, source or "file") if rank == 0 else ()
        return
    needed = {p.id for p in missing}
    yield from sample_self_edits(
        sample, passages, needed, k, chunk_size=chunk_size, seed=seed, rank=rank, world_size=world_size
    )


def merged_self_edits(records: Iterable[CPTSelfEditRecord], passages: Sequence[Passage], k: int):
    """The ``k`` self-edits of every passage, one record each (the last written), in passage and index order."""
    by_id = {record.id: record for record in records}
    return [by_id[f"{p.id}/{index}"] for p in passages for index in range(k)]


def completions_by_passage(
    records: Iterable[CPTSelfEditRecord], passages: Sequence[Passage], k: int
) -> dict[str, list[str]]:
    """The ``k`` self-edits of every passage, in index order."""
    table = self_edit_table(records)
    return {p.id: [table[p.id][i] for i in range(k)] for p in passages}


# -------------------------------------------------------------------------------- evaluation
def evaluate_phase(
    answer: Callable[[Passage], list],
    passages: Sequence[Passage],
    phase: str,
    global_step: int,
    done: set[str],
) -> Iterator[CPTEvalRecord]:
    """The graded answers of each passage not ``done`` yet in ``phase`` (as each passage finishes).

    ``answer(passage)`` returns the passage's graded answers; adapted answers are tied to
    ``global_step``.
    """
    for p in passages:
        record_id = CPTEvalRecord.id_of(phase, global_step, p.id)
        if record_id in done:
            continue
        yield CPTEvalRecord(
            id=record_id,
            phase=phase,
            global_step=0 if phase == "baseline" else global_step,
            passage_id=p.id,
            title=p.title,
            questions=list(answer(p)),
        )


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


def run_records(records: Iterable[CPTEvalRecord], passages: Sequence[Passage], global_step: int) -> list[CPTEvalRecord]:
    """The evaluation of this run by id: the baseline answers, and the adapted answers of the
    weights after ``global_step`` steps (earlier adapted answers, from a shorter run, are left out)."""
    wanted = {CPTEvalRecord.id_of(phase, global_step, p.id) for phase in ("baseline", "adapted") for p in passages}
    by_id = {record.id: record for record in records if record.id in wanted}
    return [by_id[key] for key in sorted(by_id)]


def summarize_cpt(records: Sequence[CPTEvalRecord], passages: Sequence[Passage]) -> dict:
    """Baseline and adapted accuracy over all questions, their gain, and per-passage slices.

    Args:
        records: evaluation records of phase ``baseline`` or ``adapted`` (duplicates by (phase,
            passage) count once).
        passages: the evaluated passages (order of the per-passage slices).

    ``fixed`` / ``broken`` count questions wrong before and right after, and the reverse (the
    reference's per-question gains of +1 / -1).
    """
    by_key = {(r.phase, r.passage_id): r for r in records}
    table: dict = {"phases": {}}
    for phase in ("baseline", "adapted"):
        present = [by_key[(phase, p.id)] for p in passages if (phase, p.id) in by_key]
        if not present:
            continue
        correct = sum(q.correct for r in present for q in r.questions)
        total = sum(len(r.questions) for r in present)
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
            flags = [bool(q.correct) for q in record.questions] if record else None
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


def cpt_results(
    summary: dict,
    *,
    model: str,
    protocol: str,
    n_passages: int,
    k_completions: int,
    self_edits: str,
    n_training_texts: int,
    n_questions: int,
    training: dict[str, Any],
    wall_seconds: float,
) -> dict[str, Any]:
    """``results.json``: the setting, baseline and adapted accuracy, gain, slices and the reference.

    ``self_edits`` says where the self-edits came from (``model``, a file, or none with K = 0);
    ``training`` holds the optimizer and trainer facts of the run.
    """
    return {
        "experiment": "knowledge_cpt",
        "model": model,
        "protocol": protocol,
        "paper_version": "v1 (LoRA)" if protocol == "lora" else "v2 (full fine-tuning)",
        "n_passages": n_passages,
        "k_completions": k_completions,
        "self_edits": "none (passages only)" if k_completions == 0 else self_edits,
        "n_training_texts": n_training_texts,
        "n_questions": n_questions,
        "baseline_accuracy": summary["baseline_accuracy"],
        "adapted_accuracy": summary["adapted_accuracy"],
        "gain": summary["gain"],
        **{key: summary[key] for key in ("phases", "fixed", "broken", "per_passage")},
        "training": training,
        "wall_seconds_this_invocation": round(wall_seconds, 1),
        "reference": REFERENCE,
    }
