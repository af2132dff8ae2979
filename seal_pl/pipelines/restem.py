"""What the ReST-EM outer loop asks of a domain, and the statistics every domain shares (plain Python).

:class:`~seal_pl.restem.runner.ReSTEMRun` knows no domain by name. The E-step module's class names
its domain (``restem_domain``: a :class:`ReSTEMDomain` subclass) and the runner hands it every
domain-specific step of a round:

* :meth:`~ReSTEMDomain.check`: refuse a config the domain cannot run (E-step arguments, filter
  options that do not apply to it);
* :meth:`~ReSTEMDomain.collect`: read the E-step's record shards into one scored record per
  self-edit (a :class:`~seal_pl.records.ScoredSelfEdit` of the domain's ``scored`` kind);
* :meth:`~ReSTEMDomain.select` and :meth:`~ReSTEMDomain.rule`: the filter, from scored
  self-edits to the SFT set (:class:`~seal_pl.records.SFTExample`), and its description;
* :meth:`~ReSTEMDomain.evidence`: what the E-step found beyond the reward statistics;
* :meth:`~ReSTEMDomain.heldout`: an evaluation's numbers and its headline;
* :meth:`~ReSTEMDomain.comparisons`: paired statistics across the run's evaluations.

The domains: :class:`seal_pl.pipelines.knowledge_restem.KnowledgeDomain` (best-of-K per passage)
and :class:`seal_pl.pipelines.arc_restem.ArcDomain` (every solved task). Adding a domain means its
records, its E-step module with ``restem_domain``, its :class:`ReSTEMDomain`, and a config.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from seal_pl.records import ScoredSelfEdit, SFTExample
from seal_pl.stats import paired_bootstrap

GainBaseline = Literal["no_adaptation", "passage_only"]


@dataclasses.dataclass(frozen=True)
class FilterOptions:
    """How the filter keeps self-edits: ``seal restem``'s ``top_k``, ``min_gain``, ``gain_over``
    and ``max_copied_line_share`` (documented on :class:`~seal_pl.restem.runner.ReSTEMRun`).

    A domain applies those that mean something to it and refuses the others when they are set
    (:meth:`ReSTEMDomain.check`).
    """

    top_k: int = 1
    min_gain: float | None = None
    gain_over: GainBaseline = "no_adaptation"
    max_copied_line_share: float | None = None

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.gain_over not in ("no_adaptation", "passage_only"):
            raise ValueError(f"gain_over must be no_adaptation or passage_only, got {self.gain_over!r}")
        if self.max_copied_line_share is not None and not 0.0 <= self.max_copied_line_share <= 1.0:
            raise ValueError(f"max_copied_line_share must be in [0, 1], got {self.max_copied_line_share}")


@dataclasses.dataclass
class HeldOut:
    """An evaluation's numbers: its metrics, the headline one, and domain evidence (``extras``,
    e.g. what the self-edits looked like) for ``summary.json``."""

    metrics: dict[str, float | None]
    headline: float | None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


class ReSTEMDomain(abc.ABC):
    """Base of a domain's outer-loop steps; subclasses set the class variables and define the
    abstract steps (``check``, ``evidence``, ``comparisons`` and ``describe`` have defaults)."""

    name: ClassVar[str] = ""
    scored: ClassVar[type[ScoredSelfEdit]] = ScoredSelfEdit
    """The record kind of the round's scored self-edits (``round_<k>/<its stem>.jsonl``)."""

    def check(self, estep_init_args: dict[str, Any], options: FilterOptions) -> None:
        """Raise ``ValueError`` saying what to change for a config the domain cannot run."""

    @abc.abstractmethod
    def collect(self, stage_dir: Path) -> list[ScoredSelfEdit]:
        """One scored record per self-edit of the E-step run directory ``stage_dir``."""

    @abc.abstractmethod
    def select(self, records: Sequence[ScoredSelfEdit], options: FilterOptions) -> list[SFTExample]:
        """The SFT set of the round."""

    @abc.abstractmethod
    def rule(self, options: FilterOptions) -> str:
        """The filter in words (``filter.json``'s ``rule``)."""

    def evidence(self, records: Sequence[ScoredSelfEdit], kept: Sequence[SFTExample]) -> dict[str, Any]:
        """What the E-step found beyond the reward statistics (merged into ``filter.json``)."""
        return {}

    @abc.abstractmethod
    def heldout(self, eval_dir: Path) -> HeldOut:
        """The numbers of the evaluation run directory ``eval_dir``."""

    def comparisons(self, evaluations: Sequence[tuple[str, Path]], *, seed: int = 0) -> dict[str, Any]:
        """Paired statistics over ``(name, eval_dir)`` evaluations, ``base`` first, then ``round_<k>``."""
        return {}

    def describe(self, record: ScoredSelfEdit) -> str:
        """The heading of a self-edit shown as text in TensorBoard."""
        return f"**{record.id}** reward {record.reward}"


def domain_of_class(cls: type) -> ReSTEMDomain:
    """The domain an E-step module class names (``restem_domain``); ``TypeError`` if it names none."""
    domain = getattr(cls, "restem_domain", None)
    if not (isinstance(domain, type) and issubclass(domain, ReSTEMDomain)):
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} names no ReST-EM domain (restem_domain)")
    return domain()


def latest_by_id(records: Sequence[ScoredSelfEdit]) -> list[ScoredSelfEdit]:
    """One record per id, the last written (a resumed E-step may write one again), sorted by
    (context, edit index)."""
    by_id = {record.id: record for record in records}
    return sorted(by_id.values(), key=lambda r: (str(r.context_id), int(r.edit_index)))


def reward_statistics(records: Sequence[ScoredSelfEdit], kept: Sequence[SFTExample], bins: int = 10) -> dict:
    """Mean, max, min, standard deviation and a histogram of rewards (in [0, 1]), and the fraction kept.

    ``n`` counts every self-edit, ``n_scored`` those with a reward (ARC pairs without solutions have
    none); ``contexts``/``contexts_kept``: the contexts seen and those with a kept self-edit.
    """
    contexts = {
        "contexts": len({r.context_id for r in records}),
        "contexts_kept": len({k.context_id for k in kept}),
    }
    rewards = [float(r.reward) for r in records if r.reward is not None]
    if not rewards:
        return {"n": len(records), "n_scored": 0, "kept": len(kept), "kept_fraction": 0.0, **contexts}
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
        **contexts,
    }


def paired_difference(
    a: Mapping[tuple[str, str], float], b: Mapping[tuple[str, str], float], *, seed: int = 0
) -> dict[str, Any]:
    """Paired bootstrap of ``a - b`` over the items both scored (raises if there are none)."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("the two evaluations share no question")
    return paired_bootstrap([a[k] for k in shared], [b[k] for k in shared], seed=seed)
