"""Statistics for comparing runs on the same questions (plain Python).

With about a hundred questions, one question moves accuracy by about a point, so a difference
between two conditions needs an interval. :func:`paired_bootstrap` resamples the questions (the
pairs of verdicts on the same question) with replacement and reports the mean difference with a
percentile interval. :func:`exchange_null` answers the other question a comparison raises: how
much would two evaluations of the *same* policy differ, by resampling its self-edits alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def _percentiles(values: list[float], confidence: float) -> tuple[float, float]:
    """The central ``confidence`` range of ``values``: its lower and upper percentile."""
    ordered = sorted(values)
    tail = (1.0 - confidence) / 2.0
    last = len(ordered) - 1
    return ordered[min(last, int(tail * len(ordered)))], ordered[min(last, int((1.0 - tail) * len(ordered)))]


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float | int]:
    """Mean of ``a - b`` over paired items and its bootstrap percentile interval.

    Args:
        a, b: per-item scores (1.0 correct, 0.0 wrong) of two conditions on the same items, in the
            same order.
        resamples: bootstrap resamples.
        confidence: interval coverage (0.95: the 2.5th and 97.5th percentiles).
        seed: seed of the resampling (same seed, same interval).

    Returns:
        ``{"difference", "low", "high", "n", "resamples", "confidence"}``.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap needs paired scores, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_bootstrap needs at least one pair")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(diffs)
    rng = random.Random(seed)
    low, high = _percentiles([sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)], confidence)
    return {
        "difference": sum(diffs) / n,
        "low": low,
        "high": high,
        "n": n,
        "resamples": resamples,
        "confidence": confidence,
    }


def _side_scores(groups, split) -> tuple[list[float], list[float]]:
    """Per question (group by group): the mean verdict of side a's and side b's samples."""
    a_scores, b_scores = [], []
    for samples, n_a in zip(groups, split):
        width = len(samples[0])
        a_part, b_part = samples[:n_a], samples[n_a:]
        a_scores += [sum(s[q] for s in a_part) / len(a_part) for q in range(width)]
        b_scores += [sum(s[q] for s in b_part) / len(b_part) for q in range(width)]
    return a_scores, b_scores


def exchange_null(
    groups: Sequence[tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]],
    *,
    permutations: int = 2_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float | int | dict[str, float]]:
    """What resampling alone does to a comparison of two evaluations: a permutation null.

    Each group is one passage: side a's samples and side b's samples, a sample being one self-edit's
    verdicts on the passage's questions (the same questions, in the same order, in every sample of
    the group). If both sides drew their self-edits from one policy, the samples of a group are
    exchangeable: the null reassigns them at random between the sides (keeping each side's count),
    whole samples at a time, so the questions a self-edit answers together stay together. The
    observed comparison is then read against the spread of the reassigned ones.

    Returns ``observed`` (``difference`` of the mean scores a - b, ``a_better``/``b_better``: the
    questions each side scores higher), ``null`` (for each of the three, its mean and the central
    ``confidence`` range over the permutations), ``p_value`` (two-sided: the share of permutations
    with ``|difference|`` at least the observed one), ``permutations`` and ``n`` (questions).
    """
    if not groups:
        raise ValueError("exchange_null needs at least one group")
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pooled, split = [], []
    for index, (a_samples, b_samples) in enumerate(groups):
        if not a_samples or not b_samples:
            raise ValueError(f"group {index} needs at least one sample on each side")
        samples = [list(map(float, s)) for s in (*a_samples, *b_samples)]
        if len({len(s) for s in samples}) != 1 or not samples[0]:
            raise ValueError(f"group {index}: every sample needs a verdict on the same, non-empty questions")
        pooled.append(samples)
        split.append(len(a_samples))

    def summary(a_scores: list[float], b_scores: list[float]) -> dict[str, float]:
        return {
            "difference": (sum(a_scores) - sum(b_scores)) / len(a_scores),
            "a_better": sum(x > y for x, y in zip(a_scores, b_scores)),
            "b_better": sum(x < y for x, y in zip(a_scores, b_scores)),
        }

    observed = summary(*_side_scores(pooled, split))
    rng = random.Random(seed)
    draws = []
    for _ in range(permutations):
        shuffled = [rng.sample(samples, len(samples)) for samples in pooled]
        draws.append(summary(*_side_scores(shuffled, split)))
    null = {}
    for key in ("difference", "a_better", "b_better"):
        values = [d[key] for d in draws]
        low, high = _percentiles(values, confidence)
        null[key] = {"mean": sum(values) / len(values), "low": low, "high": high}
    extreme = sum(abs(d["difference"]) >= abs(observed["difference"]) - 1e-12 for d in draws)
    return {
        "observed": observed,
        "null": null,
        "p_value": extreme / permutations,
        "permutations": permutations,
        "confidence": confidence,
        "n": sum(len(samples[0]) for samples in pooled),
    }
