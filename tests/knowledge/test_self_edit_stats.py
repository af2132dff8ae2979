"""Self-edit shape statistics and the paired bootstrap."""

from __future__ import annotations

import pytest

from seal_pl.knowledge.self_edit_stats import passage_entities, self_edit_stats, summarize_self_edit_stats
from seal_pl.stats import paired_bootstrap

PASSAGE = "The cartographer Marisol Quenby was born in 1812. She trained under Ottilie Brask in Dunmarrow."


def test_passage_entities_are_names_and_numbers_not_sentence_openers():
    entities = passage_entities(PASSAGE)
    assert {"Marisol", "Quenby", "Ottilie", "Brask", "Dunmarrow", "1812"} <= entities
    assert "The" not in entities and "She" not in entities


def test_self_edit_stats_counts_lines_coverage_and_copies():
    completion = "Marisol Quenby was born in 1812.\nQuenby learned mapmaking from Ottilie Brask.\n\n"
    stats = self_edit_stats(completion, PASSAGE)
    assert stats["lines"] == 2 and stats["words"] == 12
    # Marisol, Quenby, 1812, Ottilie, Brask of 6 names and numbers (Dunmarrow missing)
    assert stats["entity_coverage"] == pytest.approx(5 / 6)
    assert stats["copied_line_share"] == pytest.approx(0.5)  # the first line is copied, the second is not


def test_self_edit_stats_of_an_empty_self_edit():
    assert self_edit_stats("", PASSAGE) == {
        "words": 0.0,
        "lines": 0.0,
        "entity_coverage": 0.0,
        "copied_line_share": 0.0,
    }
    assert summarize_self_edit_stats([]) == {"n": 0}
    summary = summarize_self_edit_stats([self_edit_stats("", PASSAGE), self_edit_stats(PASSAGE, PASSAGE)])
    assert summary["n"] == 2 and summary["copied_line_share"] == pytest.approx(0.5)


def test_paired_bootstrap_interval_contains_the_difference_and_is_seeded():
    a = [1, 0, 1, 1, 0, 1, 1, 0] * 10
    b = [0, 0, 1, 0, 0, 1, 0, 0] * 10
    result = paired_bootstrap(a, b, resamples=2000, seed=3)
    assert result["difference"] == pytest.approx(0.375)
    assert result["low"] < result["difference"] < result["high"] and result["low"] > 0
    assert paired_bootstrap(a, b, resamples=2000, seed=3) == result
    same = paired_bootstrap(a, a, resamples=500)
    assert same["difference"] == same["low"] == same["high"] == 0.0


def test_paired_bootstrap_refuses_unpaired_input():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap([], [])
