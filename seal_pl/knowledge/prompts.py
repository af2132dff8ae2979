"""Prompts for the knowledge task: writing self-edits and answering questions closed-book.

A self-edit is free text that the model writes about a passage and is then fine-tuned on. The
reference drives a *base* model with a plain-text prompt: one instruction sentence, a blank line,
the passage (title and context), a blank line, and a cue line that the model continues. Five
styles differ only in what the instruction asks for and in the cue (see ``PROMPT_STYLES``).
Instruct models get a chat variant of the same request that also asks for one standalone
statement per line, because every line becomes its own training sequence (see ``sequences``).

Answering is closed-book: the question is shown with the passage title as its topic, never the
passage, and the model is asked for a short direct answer. ``clean_answer`` trims a generated
answer at the first stop string. All wording here is our own.

A passage too long for the model's context cannot be put in a prompt whole: ``fit_context`` finds
the longest beginning of it (cut at a word boundary) whose prompt fits a token budget, with the
token counting injected so nothing here imports a tokenizer. ``PromptTooLongError`` is raised when
not even an empty passage fits (a huge title or question, or a generation budget as large as the
context).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from seal_pl.errors import UserError

PromptStyle = Literal["implications", "implications-long", "implications-very-long", "rewrite", "self-qa"]
PROMPT_STYLES: tuple[str, ...] = get_args(PromptStyle)

ANSWER_STOP_STRINGS = ("\n", "Question:", "Topic:")

SELF_QA_CUE = "Question 1: "


@dataclass(frozen=True)
class _SelfEditStyle:
    """What one prompt style asks for, in the text and the chat variants.

    Attributes:
        instruction: the sentence opening the base-model prompt.
        cue: the text the base-model prompt ends with, which the model continues.
        chat_request: the request opening the user turn of the chat variant.
        chat_unit: what one training example is (a statement, a rewritten version, a pair).
        chat_layout: how the units are laid out on lines.
    """

    instruction: str
    cue: str
    chat_request: str
    chat_unit: str
    chat_layout: str


_STYLES: dict[str, _SelfEditStyle] = {
    "implications": _SelfEditStyle(
        instruction=(
            "Read the passage below and list the implications that follow from it, whether it states "
            "them outright or they can be inferred from what it says."
        ),
        cue="Implications:\n",
        chat_request=(
            "List the implications of this passage: facts it states outright and conclusions that can "
            "be inferred from it."
        ),
        chat_unit="statement",
        chat_layout="Write one statement per line.",
    ),
    "implications-long": _SelfEditStyle(
        instruction=(
            "Read the passage below and write a long list of implications that follow from it, covering "
            "both what it states outright and what can be inferred from it."
        ),
        cue="Implications:\n",
        chat_request=(
            "Write a long list of implications of this passage, covering both the facts it states "
            "outright and the conclusions that can be inferred from it."
        ),
        chat_unit="statement",
        chat_layout="Write one statement per line.",
    ),
    "implications-very-long": _SelfEditStyle(
        instruction=(
            "Read the passage below and write a very long, exhaustive list of implications that follow "
            "from it, covering every fact it states outright and everything that can be inferred from it."
        ),
        cue="Implications:\n",
        chat_request=(
            "Write a very long, exhaustive list of implications of this passage: every fact it states "
            "outright and everything that can be inferred from it."
        ),
        chat_unit="statement",
        chat_layout="Write one statement per line.",
    ),
    "rewrite": _SelfEditStyle(
        instruction=(
            "Rewrite the passage below in several different ways, keeping every fact, and put each "
            "rewritten version on a line of its own."
        ),
        cue="Rewritten versions:\n",
        chat_request=(
            "Rewrite this passage in several different ways, keeping every fact. Put each complete "
            "rewritten version on a single line of its own."
        ),
        chat_unit="rewritten version",
        chat_layout="Write one rewritten version per line.",
    ),
    "self-qa": _SelfEditStyle(
        instruction=(
            "Turn the passage below into a series of question-and-answer pairs that together cover everything it says."
        ),
        cue=SELF_QA_CUE,
        chat_request=(
            "Turn this passage into question-and-answer pairs that together cover everything it says. "
            "Write each pair as a line 'Question N: ...' followed by a line 'Answer: ...', numbering "
            "the questions from 1."
        ),
        chat_unit="question-answer pair",
        chat_layout="Write each pair as a question line followed by its answer line.",
    ),
}

_SELF_EDIT_SYSTEM = (
    "You turn a passage into study notes that a language model will be trained on. {layout} "
    "Each {unit} becomes a separate training example and is read without the others, so every "
    "{unit} must be self-contained: repeat names, places and dates instead of using pronouns such "
    "as 'he', 'it' or 'they', and never refer back to 'the passage' or to earlier lines. Write only "
    "the requested content, with no introduction or closing remarks."
)

_ANSWER_INSTRUCTION = (
    "Answer the question below from your own knowledge. Give a short, direct answer: just the "
    "words that answer it, without explanation."
)

_ANSWER_SYSTEM = (
    "You answer quiz questions from your own knowledge. Reply with a short, direct answer, only "
    "the few words that answer the question, with no explanation and no full sentence."
)


def self_edit_prompt(title: str, context: str, style: str = "implications") -> str:
    """Plain-text self-edit prompt for a base model; the model continues after the style's cue.

    Layout: instruction, blank line, ``Passage:`` with the title and the context, blank line, cue.
    The cue is ``Implications:`` or ``Rewritten versions:`` followed by a newline, or, for
    ``self-qa``, ``Question 1: `` so the model starts writing the first question directly.
    """
    spec = _style(style)
    return f"{spec.instruction}\n\nPassage:\n{title}\n{context}\n\n{spec.cue}"


def self_edit_messages(title: str, context: str, style: str = "implications") -> list[dict[str, str]]:
    """Chat variant of ``self_edit_prompt`` for instruct models: a system turn and a user turn."""
    spec = _style(style)
    user = f"{spec.chat_request}\n\nTitle: {title}\n\n{context}"
    system = _SELF_EDIT_SYSTEM.format(unit=spec.chat_unit, layout=spec.chat_layout)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def answer_prompt(title: str, question: str) -> str:
    """Closed-book answer prompt for a base model: the title as topic, the question, an ``Answer:`` cue."""
    return f"{_ANSWER_INSTRUCTION}\n\nTopic: {title}\nQuestion: {question}\nAnswer:"


def answer_messages(title: str, question: str) -> list[dict[str, str]]:
    """Chat variant of ``answer_prompt``: no passage, only the topic and the question."""
    return [
        {"role": "system", "content": _ANSWER_SYSTEM},
        {"role": "user", "content": f"Topic: {title}\nQuestion: {question}"},
    ]


def clean_answer(text: str, stop_strings: tuple[str, ...] = ANSWER_STOP_STRINGS) -> str:
    """Cut a generated answer at the first stop string and strip whitespace and enclosing quotes.

    Leading whitespace is skipped first, so an answer that starts on a new line is not cut to nothing.
    """
    answer = text.lstrip()
    positions = [answer.find(stop) for stop in stop_strings if stop]
    cut = min((position for position in positions if position >= 0), default=len(answer))
    return answer[:cut].strip().strip("\"'`“”‘’").strip()


class PromptTooLongError(UserError, ValueError):
    """A prompt does not fit the model's context even with the passage cut away; the message names
    the passage (and question) and says what to shorten or lower."""


def fit_context(
    build: Callable[[str], Any], context: str, count_tokens: Callable[[Any], int], budget: int
) -> str | None:
    """The longest beginning of ``context`` whose prompt ``build(beginning)`` has at most ``budget`` tokens.

    When the cut would split a word it is moved back to the last whitespace before it (if that still
    fits), and trailing whitespace is dropped. Returns ``context`` itself when it fits whole, and None when even the empty
    beginning does not fit. ``count_tokens`` is assumed to grow with the text, as it does for
    tokenizers; the result is checked against the budget whatever the tokenizer does.
    """

    def fits(length: int) -> bool:
        return count_tokens(build(context[:length])) <= budget

    if fits(len(context)):
        return context
    if not fits(0):
        return None
    # Grow the kept length from about one character per token, doubling, so a huge passage is never
    # tokenized whole again; then bisect between the last length that fits and the first that does not.
    low, probe = 0, min(len(context) - 1, max(1, budget))
    while fits(probe):
        low = probe
        if probe == len(context) - 1:
            break
        probe = min(len(context) - 1, 2 * probe)
    high = low if low == len(context) - 1 else probe - 1  # every length above ``high`` is too long
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    kept = context[:low]
    candidate = kept
    if kept and not kept[-1].isspace() and not context[low].isspace():  # the cut splits a word
        candidate = kept[: max(kept.rfind(" "), kept.rfind("\n"), kept.rfind("\t"), 0)]
    candidate = candidate.rstrip()
    return candidate if candidate and candidate != kept and fits(len(candidate)) else kept


def _style(style: str) -> _SelfEditStyle:
    """The style definition, or a ValueError that lists the valid styles."""
    if style not in _STYLES:
        raise ValueError(f"unknown self-edit prompt style {style!r}; valid styles: {', '.join(PROMPT_STYLES)}")
    return _STYLES[style]
