"""Tests for seal_pl.knowledge.prompts: self-edit prompts, answer prompts and answer clean-up."""

from __future__ import annotations

import pytest

from seal_pl.knowledge.prompts import (
    ANSWER_STOP_STRINGS,
    PROMPT_STYLES,
    answer_messages,
    answer_prompt,
    clean_answer,
    self_edit_messages,
    self_edit_prompt,
)

TITLE = "Glimmer Reef"
CONTEXT = "Glimmer Reef glows green because of the lantern snails living on it."


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_every_style_renders_instruction_passage_and_cue(style: str) -> None:
    prompt = self_edit_prompt(TITLE, CONTEXT, style)

    instruction, passage_block, cue = prompt.split("\n\n")
    assert instruction.strip()
    assert passage_block == f"Passage:\n{TITLE}\n{CONTEXT}"
    assert cue.strip()


@pytest.mark.parametrize(
    ("style", "cue", "instruction_word"),
    [
        ("implications", "Implications:\n", "implications"),
        ("implications-long", "Implications:\n", "long list"),
        ("implications-very-long", "Implications:\n", "very long"),
        ("rewrite", "Rewritten versions:\n", "on a line of its own"),
        ("self-qa", "Question 1: ", "question-and-answer"),
    ],
)
def test_style_cue_and_intent(style: str, cue: str, instruction_word: str) -> None:
    prompt = self_edit_prompt(TITLE, CONTEXT, style)

    assert prompt.endswith(cue)
    assert instruction_word in prompt.split("\n\n")[0]


def test_styles_are_distinct() -> None:
    prompts = {self_edit_prompt(TITLE, CONTEXT, style) for style in PROMPT_STYLES}
    messages = {self_edit_messages(TITLE, CONTEXT, style)[1]["content"] for style in PROMPT_STYLES}

    assert len(prompts) == len(PROMPT_STYLES)
    assert len(messages) == len(PROMPT_STYLES)


def test_default_style_is_implications() -> None:
    assert self_edit_prompt(TITLE, CONTEXT) == self_edit_prompt(TITLE, CONTEXT, "implications")


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_chat_variant_has_system_and_user_turns_with_the_passage(style: str) -> None:
    messages = self_edit_messages(TITLE, CONTEXT, style)

    assert [message["role"] for message in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert "pronouns" in system
    assert "separate training example" in system
    assert "self-contained" in system
    assert TITLE in messages[1]["content"] and CONTEXT in messages[1]["content"]


@pytest.mark.parametrize(
    ("style", "layout"),
    [
        ("implications", "one statement per line"),
        ("implications-very-long", "one statement per line"),
        ("rewrite", "one rewritten version per line"),
        ("self-qa", "a question line followed by its answer line"),
    ],
)
def test_chat_variant_asks_for_one_unit_per_line(style: str, layout: str) -> None:
    assert layout in self_edit_messages(TITLE, CONTEXT, style)[0]["content"]


def test_unknown_style_lists_valid_styles() -> None:
    with pytest.raises(ValueError, match=r"unknown self-edit prompt style 'poem'; valid styles: implications, "):
        self_edit_prompt(TITLE, CONTEXT, "poem")
    with pytest.raises(ValueError, match="self-qa"):
        self_edit_messages(TITLE, CONTEXT, "poem")


def test_answer_prompt_is_closed_book_with_topic_and_answer_cue() -> None:
    prompt = answer_prompt(TITLE, "Why does the reef glow?")

    assert f"Topic: {TITLE}\nQuestion: Why does the reef glow?\nAnswer:" in prompt
    assert prompt.endswith("Answer:")
    assert CONTEXT not in prompt
    assert "short, direct answer" in prompt


def test_answer_messages_are_closed_book() -> None:
    messages = answer_messages(TITLE, "Why does the reef glow?")

    assert [message["role"] for message in messages] == ["system", "user"]
    assert messages[1]["content"] == f"Topic: {TITLE}\nQuestion: Why does the reef glow?"
    assert all(CONTEXT not in message["content"] for message in messages)


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        (" lantern snails\nQuestion: next one", "lantern snails"),
        ('\n  "lantern snails"  \n', "lantern snails"),
        ("1847 Topic: Orvel Pass", "1847"),
        ("'snow' Question: What else?", "snow"),
        ("", ""),
        ("   \n\n", ""),
    ],
)
def test_clean_answer_cuts_at_first_stop_string(generated: str, expected: str) -> None:
    assert clean_answer(generated) == expected


def test_stop_strings_cover_newline_and_next_prompt_labels() -> None:
    assert set(ANSWER_STOP_STRINGS) >= {"\n", "Question:", "Topic:"}
