"""Statistics for comparing runs on the same questions (plain Python).

With about a hundred questions, one question moves accuracy by about a point, so a difference
between two conditions needs an interval. :func:`paired_bootstrap` resamples the questions (the
pairs of verdicts on the same question) with replacement and reports the mean difference with a
percentile interval.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


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
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1.0 - confidence) / 2.0
    low = means[min(resamples - 1, int(tail * resamples))]
    high = means[min(resamples - 1, int((1.0 - tail) * resamples))]
    return {
        "difference": sum(diffs) / n,
        "low": low,
        "high": high,
        "n": n,
        "resamples": resamples,
        "confidence": confidence,
    }
