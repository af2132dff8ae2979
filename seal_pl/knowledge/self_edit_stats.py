"""What a self-edit looks like, measured against its passage (plain Python).

ReST-EM changes the policy's self-edits; these numbers say how, round after round:

* ``words`` and ``lines``: size of the self-edit (non-blank lines, whitespace-separated words);
* ``entity_coverage``: the share of the passage's names and numbers that the self-edit mentions.
  A name is a capitalised word that occurs at least once other than as the first word of a
  sentence (so "The" and "She" are not names, "Quenby" is), a number is a run of digits (``1,200``
  and ``3.5`` count as one); matching is case-sensitive on whole words;
* ``copied_line_share``: the share of the self-edit's lines copied from the passage: at least
  ``copy_threshold`` of the line's word trigrams occur in the passage (lines under three words:
  the whole line occurs in it), after lower-casing and dropping punctuation.

:func:`summarize_self_edit_stats` averages them over many self-edits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"\b[A-Z][a-zA-Z'-]+\b")

STATS_KEYS = ("words", "lines", "entity_coverage", "copied_line_share")


def _normalised_words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def passage_entities(passage: str) -> set[str]:
    """Names and numbers of a passage (see the module docstring)."""
    names = {m.group(0) for m in _CAPITALISED.finditer(passage) if not _is_sentence_start(passage, m.start())}
    return names | set(_NUMBER.findall(passage))


def _is_sentence_start(text: str, index: int) -> bool:
    """Whether only spaces separate ``index`` from the text's start or from a sentence end."""
    before = index - 1
    while before >= 0 and text[before] in " \t":
        before -= 1
    return before < 0 or text[before] in ".!?:;\n"


def _trigrams(words: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + 3]) for i in range(len(words) - 2)]


def line_is_copied(line: str, passage_text: str, passage_trigrams: set, threshold: float) -> bool:
    """``passage_text``: the passage's normalised words joined by single spaces, with a space at each end."""
    words = _normalised_words(line)
    if not words:
        return False
    if len(words) < 3:
        return f" {' '.join(words)} " in passage_text
    grams = _trigrams(words)
    return sum(g in passage_trigrams for g in grams) / len(grams) >= threshold


def self_edit_stats(completion: str, passage: str, copy_threshold: float = 0.8) -> dict[str, float]:
    """``words``, ``lines``, ``entity_coverage`` and ``copied_line_share`` of one self-edit."""
    lines = [line for line in completion.splitlines() if line.strip()]
    entities = passage_entities(passage)
    mentioned = set(_CAPITALISED.findall(completion)) | set(_NUMBER.findall(completion))
    passage_words = _normalised_words(passage)
    passage_text = f" {' '.join(passage_words)} "
    passage_trigrams = set(_trigrams(passage_words))
    copied = sum(line_is_copied(line, passage_text, passage_trigrams, copy_threshold) for line in lines)
    return {
        "words": float(len(completion.split())),
        "lines": float(len(lines)),
        "entity_coverage": len(entities & mentioned) / len(entities) if entities else 0.0,
        "copied_line_share": copied / len(lines) if lines else 0.0,
    }


def summarize_self_edit_stats(stats: Iterable[dict[str, float]]) -> dict[str, float | int]:
    """Mean of every statistic over ``stats`` (and ``n``, how many); empty input gives ``{"n": 0}``."""
    rows = list(stats)
    if not rows:
        return {"n": 0}
    return {"n": len(rows), **{key: sum(r[key] for r in rows) / len(rows) for key in STATS_KEYS}}
