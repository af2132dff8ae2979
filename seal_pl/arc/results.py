"""What an ARC run reports: ``results.json``, the Kaggle submissions and the text table (pure Python).

Everything here reads the typed records of :mod:`seal_pl.arc.records` (merged over ranks):

* :func:`run_results` - ``results.json``: the model, the voting, and :func:`summarize`: per-task
  correctness, the paper's success rate (mean reward over (task, self-edit) pairs with a known
  answer), task and subtask accuracy, self-edit counts, times;
* :func:`likelihood_summary` - likelihood voting next to the reference vote on the same answers;
* :func:`submissions` - file name -> Kaggle submission; subtasks without attempts (an invalid or
  capped self-edit) get ``[[0]]`` for both attempts;
* :func:`format_results` - one line per task, then the totals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from seal_pl.arc.records import EMPTY_GRID, ArcEditRecord, ArcPredictionRecord, ArcRun, ArcTaskRecord


def success_rate(edits: Sequence[ArcEditRecord]) -> float | None:
    """Mean reward over (task, self-edit) pairs with a known answer (the paper's ARC metric)."""
    rewards = [edit.reward for edit in edits if edit.reward is not None]
    return sum(rewards) / len(rewards) if rewards else None


def _mean(values: Sequence[float | int | bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _per_task(tasks: Mapping[str, ArcTaskRecord], finished: Sequence[ArcEditRecord]) -> dict[str, dict[str, Any]]:
    per_task: dict[str, dict[str, Any]] = {}
    for task_id in sorted(tasks):
        mine = sorted((e for e in finished if e.task_id == task_id), key=lambda e: e.edit_index)
        verdicts: dict[str, list[bool | None]] = {}
        for edit in mine:
            for subtask in edit.subtasks:
                verdicts.setdefault(subtask.subtask_id, []).append(subtask.solved)
        per_task[task_id] = {
            "solved": tasks[task_id].solved,
            "rewards": [e.reward for e in mine],
            "subtasks": verdicts,
            "seconds": tasks[task_id].seconds,
        }
    return per_task


def _self_edit_counts(finished: Sequence[ArcEditRecord]) -> dict[str, Any]:
    reasons = Counter(e.reason for e in finished if not e.valid)
    skipped = Counter(e.skipped.split(":")[0] for e in finished if e.valid and e.skipped)
    return {
        "valid": sum(1 for e in finished if e.valid),
        "invalid": sum(1 for e in finished if not e.valid),
        "trained": sum(1 for e in finished if e.trained),
        "skipped": dict(skipped),
        "invalid_reasons": dict(reasons),
    }


def summarize(
    tasks: Mapping[str, ArcTaskRecord], edits: Sequence[ArcEditRecord], *, mode: str, n_self_edits: int
) -> dict[str, Any]:
    """``results.json``: per-task correctness, success rate over (task, self-edit) pairs, counts."""
    finished = [edit for edit in edits if edit.task_id in tasks]
    per_task = _per_task(tasks, finished)
    subtask_flags = [s.solved for e in finished for s in e.subtasks if s.solved is not None]
    known = [t["solved"] for t in per_task.values() if t["solved"] is not None]
    return {
        "experiment": "arc_ttt",
        "mode": mode,
        "n_tasks": len(per_task),
        "n_subtasks": sum(len(t.subtask_ids) for t in tasks.values()),
        "n_self_edits_per_task": n_self_edits,
        "n_pairs": len(finished),
        "n_solved_pairs": sum(1 for e in finished if e.reward == 1),
        "success_rate": success_rate(finished),
        "task_accuracy": _mean(known),
        "subtask_accuracy": _mean(subtask_flags),
        "self_edits": _self_edit_counts(finished),
        "task_seconds": round(sum(t.seconds for t in tasks.values()), 1),
        "train_seconds": round(sum(e.train_seconds for e in finished), 1),
        "infer_seconds": round(sum(e.infer_seconds for e in finished), 1),
        "tasks": per_task,
    }


def run_results(
    run: ArcRun, *, mode: str, n_self_edits: int, model: str, voting: str, wall_seconds: float
) -> dict[str, Any]:
    """``results.json`` of a merged run: :func:`summarize`, the model, the voting (with
    ``voting: likelihood`` also :func:`likelihood_summary`) and this invocation's wall time."""
    results = summarize(run.tasks, run.edits, mode=mode, n_self_edits=n_self_edits)
    results.update({"model": model, "voting": voting, "wall_seconds_this_invocation": round(wall_seconds, 1)})
    if voting == "likelihood":
        results["likelihood_voting"] = likelihood_summary(run.predictions)
    return results


def likelihood_summary(predictions: Sequence[ArcPredictionRecord]) -> dict[str, Any]:
    """Likelihood voting next to the reference vote on the same answers (records of ``voting: likelihood``).

    ``scored``: subtask predictions with at least two candidates (scoring ran); ``changed``: attempts
    that differ from the reference vote's; ``solved`` / ``solved_by_reference_vote``: pass@2 of each
    (subtasks with a known answer).
    """
    mine = [p for p in predictions if p.likelihood is not None]
    known = [p for p in mine if p.solved is not None]
    return {
        "predictions": len(mine),
        "scored": sum(1 for p in mine if p.likelihood.n_rows),
        "changed": sum(1 for p in mine if p.attempts != p.reference_attempts),
        "solved": sum(1 for p in known if p.solved),
        "solved_by_reference_vote": sum(1 for p in known if p.reference_solved),
    }


def submissions(
    tasks: Mapping[str, ArcTaskRecord], predictions: Sequence[ArcPredictionRecord], files: Mapping[str, int]
) -> dict[str, dict[str, list[dict]]]:
    """File name -> Kaggle submission, for ``files``: file name -> the self-edit index it submits."""
    attempts = {(p.subtask_id, p.edit_index): p.attempts for p in predictions}

    def build(edit_index: int) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for task_id in sorted(tasks):
            entries = []
            for subtask_id in tasks[task_id].subtask_ids:
                first, second = attempts.get((subtask_id, edit_index), [EMPTY_GRID, EMPTY_GRID])
                entries.append({"attempt_1": first, "attempt_2": second})
            out[task_id] = entries
        return out

    return {name: build(index) for name, index in files.items()}


def format_results(results: dict[str, Any]) -> str:
    """A short text table: one line per task, then the totals."""
    lines = [f"{'task':<12} {'solved':>7} {'rewards':<24} {'seconds':>8}"]
    for task_id, row in results["tasks"].items():
        rewards = "".join("-" if r is None else str(r) for r in row["rewards"])
        lines.append(f"{task_id:<12} {row['solved']!s:>7} {rewards:<24} {row['seconds']:>8.1f}")
    rate = results["success_rate"]
    lines.append(
        f"mode={results['mode']} tasks={results['n_tasks']} pairs={results['n_pairs']} "
        f"success_rate={'n/a' if rate is None else f'{100 * rate:.1f}%'}"
    )
    return "\n".join(lines)
