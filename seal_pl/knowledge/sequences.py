"""From a self-edit to the text sequences the inner loop fine-tunes on.

A self-edit is one block of generated text. Training on it as one sequence works poorly, so the
reference cuts it into many short sequences, each prefixed with the passage title so the fact is
tied to its topic, and always appends the raw passage itself:

1. split the completion on a separator (``---``);
2. with ``split_newlines``: if a piece is written as numbered question-answer pairs
   (``Question N: ...`` / ``Answer: ...``), cut it before every ``Question N:`` (the very first
   pair lacks its label because the self-qa prompt already wrote ``Question 1: ``, so it is added
   back); otherwise every non-blank line is its own segment, and a first line followed by a line
   starting with ``1.`` is a preamble ("Here are the implications:") and is dropped;
3. each segment becomes ``"<title>\\n<segment>"`` and ``"<title>\\n<context>"`` is added last.

An empty or unusable completion still yields the passage sequence, and ``completion_was_empty``
records it so that runs can report how many self-edits contributed nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBERED_QUESTION = re.compile(r"Question\s*\d+\s*:")
_ANSWER_LABEL = re.compile(r"Answer\s*:")
_LIST_MARKER = re.compile(r"^(?:\d+[.)]|[-*•])(?:\s+|$)")
_FIRST_QUESTION_LABEL = "Question 1: "


@dataclass
class TrainSequences:
    """Training sequences built from one self-edit.

    Attributes:
        sequences: the texts to fine-tune on, title-prefixed segments first, the passage last.
        completion_was_empty: the completion gave no usable segment (only the passage is trained on,
            plus the bare title line when ``keep_empty_segment`` asked for it).
        n_completion_segments: how many sequences came from the completion itself.
    """

    sequences: list[str]
    completion_was_empty: bool
    n_completion_segments: int


def split_completion(
    completion: str,
    *,
    split_newlines: bool = True,
    segment_separator: str = "---",
    drop_preamble: bool = True,
    strip_list_markers: bool = False,
) -> list[str]:
    """Cut a self-edit into stripped, non-empty segments (steps 1 and 2 of the module docstring).

    Args:
        completion: the generated self-edit.
        split_newlines: cut each separator piece into question-answer pairs or lines; if False each
            separator piece is one segment.
        segment_separator: the string between independent pieces of a completion.
        drop_preamble: drop the first line of a piece when its second line starts with ``1.``.
        strip_list_markers: remove a leading ``1.``, ``1)``, ``-``, ``*`` or ``•`` marker from each
            segment (the reference keeps them, hence off by default).
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a string, got {type(completion).__name__}")
    if not segment_separator:
        raise ValueError("segment_separator must be a non-empty string")
    segments: list[str] = []
    for piece_index, piece in enumerate(completion.split(segment_separator)):
        if not split_newlines:
            parts = [piece]
        elif _NUMBERED_QUESTION.search(piece) and _ANSWER_LABEL.search(piece):
            parts = _split_question_answer_pairs(piece, label_first=piece_index == 0)
        else:
            parts = _split_lines(piece, drop_preamble=drop_preamble)
        for part in parts:
            segment = part.strip()
            if strip_list_markers:
                segment = _LIST_MARKER.sub("", segment).strip()
            if segment:
                segments.append(segment)
    return segments


def build_train_sequences(
    title: str,
    context: str,
    completion: str,
    *,
    split_newlines: bool = True,
    segment_separator: str = "---",
    drop_preamble: bool = True,
    include_passage: bool = True,
    keep_empty_segment: bool = False,
    strip_list_markers: bool = False,
) -> TrainSequences:
    """Training sequences for one self-edit: title-prefixed segments, then the raw passage.

    Args:
        title: passage title, prefixed to every sequence.
        context: passage text; ``"<title>\\n<context>"`` is appended when ``include_passage``.
        completion: the self-edit; may be empty.
        split_newlines, segment_separator, drop_preamble, strip_list_markers: see ``split_completion``.
        include_passage: append the raw passage as the last sequence (the reference always does).
        keep_empty_segment: when the completion gives no segment, emit the bare ``"<title>\\n"``
            sequence as the reference does for an empty completion.
    """
    segments = split_completion(
        completion,
        split_newlines=split_newlines,
        segment_separator=segment_separator,
        drop_preamble=drop_preamble,
        strip_list_markers=strip_list_markers,
    )
    sequences = [f"{title}\n{segment}" for segment in segments]
    if not segments and keep_empty_segment:
        sequences.append(f"{title}\n")
    if include_passage:
        sequences.extend(passage_only_sequences(title, context))
    return TrainSequences(sequences=sequences, completion_was_empty=not segments, n_completion_segments=len(segments))


def passage_only_sequences(title: str, context: str) -> list[str]:
    """The single sequence of the "train on the passage only" baseline."""
    return [f"{title}\n{context}"]


def _split_question_answer_pairs(piece: str, *, label_first: bool) -> list[str]:
    """Cut before every ``Question N:``; restore the ``Question 1:`` label the prompt consumed."""
    chunks = re.split(f"(?={_NUMBERED_QUESTION.pattern})", piece)
    first = chunks[0].strip()
    if label_first and first and not _NUMBERED_QUESTION.match(first):
        chunks[0] = _FIRST_QUESTION_LABEL + first
    return chunks


def _split_lines(piece: str, *, drop_preamble: bool) -> list[str]:
    """Non-blank lines; the first is dropped as a preamble when the second starts a ``1.`` list."""
    lines = [line.strip() for line in piece.splitlines() if line.strip()]
    if drop_preamble and len(lines) >= 2 and lines[1].startswith("1."):
        lines = lines[1:]
    return lines
