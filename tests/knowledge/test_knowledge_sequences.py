"""Tests for seal_pl.knowledge.sequences: turning a self-edit into training sequences."""

from __future__ import annotations

import pytest

from seal_pl.knowledge.sequences import (
    TrainSequences,
    build_train_sequences,
    passage_only_sequences,
    split_completion,
)

TITLE = "Glimmer Reef"
CONTEXT = "Glimmer Reef glows green because of the lantern snails living on it."
PASSAGE = f"{TITLE}\n{CONTEXT}"


def test_every_line_becomes_a_title_prefixed_sequence_and_the_passage_comes_last() -> None:
    completion = "Glimmer Reef glows green.\n\n  Lantern snails live on Glimmer Reef.  \n"

    result = build_train_sequences(TITLE, CONTEXT, completion)

    assert result == TrainSequences(
        sequences=[
            f"{TITLE}\nGlimmer Reef glows green.",
            f"{TITLE}\nLantern snails live on Glimmer Reef.",
            PASSAGE,
        ],
        completion_was_empty=False,
        n_completion_segments=2,
    )


def test_separator_splits_pieces_and_lines_split_within_pieces() -> None:
    completion = "Fact one.\nFact two.\n---\nFact three.\n---\n"

    assert split_completion(completion) == ["Fact one.", "Fact two.", "Fact three."]
    assert split_completion(completion, split_newlines=False) == ["Fact one.\nFact two.", "Fact three."]


def test_custom_separator() -> None:
    assert split_completion("A B===C D", segment_separator="===", split_newlines=False) == ["A B", "C D"]
    with pytest.raises(ValueError, match="segment_separator"):
        split_completion("x", segment_separator="")


def test_preamble_before_a_numbered_list_is_dropped_by_default() -> None:
    completion = "Here are some implications:\n1. The reef glows.\n2. Snails glow."

    assert split_completion(completion) == ["1. The reef glows.", "2. Snails glow."]
    assert split_completion(completion, drop_preamble=False) == [
        "Here are some implications:",
        "1. The reef glows.",
        "2. Snails glow.",
    ]


def test_first_line_is_kept_when_the_second_line_does_not_start_a_list() -> None:
    completion = "The reef glows.\n2. Snails glow.\n3. Divers visit."

    assert split_completion(completion) == ["The reef glows.", "2. Snails glow.", "3. Divers visit."]


def test_list_markers_are_kept_unless_asked() -> None:
    completion = "1. The reef glows.\n- Snails glow.\n* Divers visit.\n2) Fish hide."

    assert split_completion(completion)[0] == "1. The reef glows."
    assert split_completion(completion, strip_list_markers=True) == [
        "The reef glows.",
        "Snails glow.",
        "Divers visit.",
        "Fish hide.",
    ]
    assert split_completion("- ", strip_list_markers=True) == []


def test_question_answer_pairs_split_before_each_numbered_question() -> None:
    completion = (
        "Why does Glimmer Reef glow?\nAnswer: Because of lantern snails.\n\n"
        "Question 2: What colour is Glimmer Reef?\nAnswer: Green.\n"
        "Question 3: Where do lantern snails live?\nAnswer: On Glimmer Reef."
    )

    result = build_train_sequences(TITLE, CONTEXT, completion)

    assert result.sequences == [
        f"{TITLE}\nQuestion 1: Why does Glimmer Reef glow?\nAnswer: Because of lantern snails.",
        f"{TITLE}\nQuestion 2: What colour is Glimmer Reef?\nAnswer: Green.",
        f"{TITLE}\nQuestion 3: Where do lantern snails live?\nAnswer: On Glimmer Reef.",
        PASSAGE,
    ]
    assert result.n_completion_segments == 3


def test_question_label_is_not_added_twice() -> None:
    completion = "Question 1: Why?\nAnswer: Snails.\nQuestion 2: What colour?\nAnswer: Green."

    assert split_completion(completion) == [
        "Question 1: Why?\nAnswer: Snails.",
        "Question 2: What colour?\nAnswer: Green.",
    ]


def test_question_numbers_without_answers_fall_back_to_lines() -> None:
    completion = "Question 2: Why?\nQuestion 3: What?"

    assert split_completion(completion) == ["Question 2: Why?", "Question 3: What?"]


@pytest.mark.parametrize("completion", ["", "   \n\n ", "---", "\n---\n---\n"])
def test_empty_completion_still_trains_on_the_passage(completion: str) -> None:
    result = build_train_sequences(TITLE, CONTEXT, completion)

    assert result.sequences == [PASSAGE]
    assert result.completion_was_empty is True
    assert result.n_completion_segments == 0


def test_keep_empty_segment_reproduces_the_reference_output_for_an_empty_completion() -> None:
    result = build_train_sequences(TITLE, CONTEXT, "", keep_empty_segment=True)

    assert result.sequences == [f"{TITLE}\n", PASSAGE]
    assert result.completion_was_empty is True
    assert build_train_sequences(TITLE, CONTEXT, "A fact.", keep_empty_segment=True).sequences == [
        f"{TITLE}\nA fact.",
        PASSAGE,
    ]


def test_passage_can_be_left_out() -> None:
    result = build_train_sequences(TITLE, CONTEXT, "A fact.", include_passage=False)

    assert result.sequences == [f"{TITLE}\nA fact."]
    assert build_train_sequences(TITLE, CONTEXT, "", include_passage=False).sequences == []


def test_garbage_completion_is_kept_as_text() -> None:
    result = build_train_sequences(TITLE, CONTEXT, "@@@ ### !!!")

    assert result.sequences == [f"{TITLE}\n@@@ ### !!!", PASSAGE]
    assert result.completion_was_empty is False


def test_non_string_completion_is_rejected() -> None:
    with pytest.raises(TypeError, match="completion must be a string, got NoneType"):
        build_train_sequences(TITLE, CONTEXT, None)  # type: ignore[arg-type]


def test_passage_only_sequences() -> None:
    assert passage_only_sequences(TITLE, CONTEXT) == [PASSAGE]
