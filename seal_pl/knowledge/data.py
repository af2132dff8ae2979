"""Passages, questions and the files they live in.

The knowledge-incorporation task works on SQuAD passages: a title, a context paragraph and the
questions asked about it. Two file shapes are in circulation and both load into the same
``Passage`` objects:

* the official SQuAD JSON (v1.1, and v2 whose unanswerable questions are skipped):
  ``{"version": ..., "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``;
* the flat per-passage list used by the SEAL reference (``squad_val.json`` and the synthetic
  self-edit files): ``[{"title", "context", "questions": [{"question", "answer"}]}]``, as one JSON
  list or as JSONL with one passage per line. Passages and questions may carry an ``"id"``;
  questions may carry several gold answers in ``"answers"``.

Every passage gets a unique id (the record's own, or ``<slug of title>-<index>``) so results,
caches and self-edits can refer to it. Malformed input never passes silently: the error names the
file and the record (position, and id/title when known). That includes a key repeated inside one
JSON object (which ``json`` would silently resolve to its last value), two passages or questions
sharing an id, and a gold answer that SQuAD normalisation reduces to nothing (``"the"``, ``"!!!"``),
which no prediction could ever match. ``select_passages`` reproduces the reference's subset choice
(``random.seed(42)`` then an in-place shuffle, then a slice); the data modules refuse a selection
that selects no passage (:func:`seal_pl.inputs.require_selection`).
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seal_pl.errors import UserError
from seal_pl.inputs import DuplicateKeyError, check_start_limit, loads_strict, require_selection
from seal_pl.knowledge.grading import is_gradable

JSONL_SUFFIXES = (".jsonl", ".ndjson")


class SquadFormatError(UserError, ValueError):
    """A passage or self-edit file does not have the expected shape; the message names file and record."""


@dataclass(frozen=True)
class Question:
    """One question about a passage with its gold answers (first one is the primary answer)."""

    id: str
    question: str
    answers: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "answers", tuple(self.answers))
        _check_text(self.id, "question id")
        _check_text(self.question, "question text")
        if not self.answers:
            raise ValueError(f"question {self.id!r} has no gold answer")
        for answer in self.answers:
            _check_text(answer, f"gold answer of question {self.id!r}")

    @property
    def answer(self) -> str:
        """The primary (first) gold answer."""
        return self.answers[0]

    def to_dict(self) -> dict[str, Any]:
        """Flat-shape record: ``answer`` always, ``answers`` only when there is more than one gold."""
        record: dict[str, Any] = {"id": self.id, "question": self.question, "answer": self.answer}
        if len(self.answers) > 1:
            record["answers"] = list(self.answers)
        return record

    @classmethod
    def from_dict(cls, record: Any) -> Question:
        """Inverse of ``to_dict``; the record must carry an ``id``."""
        where = "question record"
        if not isinstance(record, dict):
            raise SquadFormatError(f"{where}: expected an object, got {_type_name(record)}")
        question_id = _required_text(record, "id", "<in memory>", where)
        return _parse_flat_question(record, "<in memory>", where, default_id=question_id)


@dataclass(frozen=True)
class Passage:
    """A titled context paragraph and the questions asked about it."""

    id: str
    title: str
    context: str
    questions: tuple[Question, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "questions", tuple(self.questions))
        _check_text(self.id, "passage id")
        _check_text(self.title, f"title of passage {self.id!r}")
        _check_text(self.context, f"context of passage {self.id!r}")

    def to_dict(self) -> dict[str, Any]:
        """Flat-shape record, the one ``write_passages`` writes."""
        return {
            "id": self.id,
            "title": self.title,
            "context": self.context,
            "questions": [question.to_dict() for question in self.questions],
        }

    @classmethod
    def from_dict(cls, record: Any) -> Passage:
        """Inverse of ``to_dict``; the record must carry an ``id`` (question ids are derived if absent)."""
        where = "passage record"
        if not isinstance(record, dict):
            raise SquadFormatError(f"{where}: expected an object, got {_type_name(record)}")
        _required_text(record, "id", "<in memory>", where)
        return _parse_flat_passage(record, "<in memory>", where, index=0, require_questions=False)


def slugify(title: str) -> str:
    """Lower-case ASCII slug of a title (accents folded, runs of other characters become '-')."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^0-9a-z]+", "-", ascii_title.lower()).strip("-")
    return slug or "passage"


def derived_passage_id(title: str, index: int) -> str:
    """Id given to a passage that has none: the title's slug and the passage's position in its file."""
    return f"{slugify(title)}-{index}"


def load_passages(path: str | Path, *, require_questions: bool = True) -> list[Passage]:
    """Load passages from official SQuAD JSON, a flat JSON list, or flat JSONL (detected from content).

    Args:
        path: the file. A ``.jsonl``/``.ndjson`` suffix, or JSON values one after another, means JSONL.
        require_questions: if True, a passage without any (answerable) question is an error.

    Returns:
        Passages in file order, with unique passage ids and unique question ids.

    Raises:
        SquadFormatError: invalid JSON, a wrong shape, a missing key, a wrong type, an empty
            string, or a duplicate id; the message names the file and the record.
    """
    path = Path(path)
    file_label = str(path)
    document = _read_document(path)
    if document.records is not None:
        passages = [
            _parse_flat_passage(record, file_label, where, index=index, require_questions=require_questions)
            for index, (where, record) in enumerate(document.records)
        ]
    elif isinstance(document.value, dict) and "data" in document.value:
        passages = _parse_squad(document.value, file_label, require_questions)
    elif isinstance(document.value, list):
        passages = [
            _parse_flat_passage(record, file_label, f"record {index}", index=index, require_questions=require_questions)
            for index, record in enumerate(document.value)
        ]
    else:
        raise SquadFormatError(
            f"{file_label}: expected a SQuAD object with a 'data' list or a list of passage records, "
            f"got {_type_name(document.value)}"
            + (f" with keys {sorted(document.value)}" if isinstance(document.value, dict) else "")
        )
    _check_unique_ids(passages, file_label)
    return passages


def select_passages(
    passages: Sequence[Passage], *, seed: int | None = 42, start: int = 0, limit: int | None = None
) -> list[Passage]:
    """Seeded subset as the reference picks it: shuffle a copy with ``seed``, then take ``[start:start+limit]``.

    ``random.Random(seed).shuffle`` gives the same permutation as ``random.seed(seed); random.shuffle``
    without touching the global generator. ``seed=None`` keeps file order. The input is not modified.
    The result may be empty; callers that need passages check it with
    :func:`seal_pl.inputs.require_selection`.

    Raises:
        OptionError: ``start`` or ``limit`` is negative.
    """
    check_start_limit(start, limit, what="passages")
    ordered = list(passages)
    if seed is not None:
        random.Random(seed).shuffle(ordered)
    end = None if limit is None else start + limit
    return ordered[start:end]


def write_passages(path: str | Path, passages: Iterable[Passage]) -> None:
    """Write passages in the flat shape (JSONL if the suffix says so, else a JSON list); reloads identically.

    The file is written to a temporary sibling and renamed into place, so an interrupted write
    never leaves a truncated file behind.
    """
    path = Path(path)
    passages = list(passages)
    first_position: dict[str, int] = {}
    for position, passage in enumerate(passages):
        if passage.id in first_position:
            raise ValueError(
                f"{path}: passages {first_position[passage.id]} and {position} share the id {passage.id!r}"
            )
        first_position[passage.id] = position
    records = [passage.to_dict() for passage in passages]
    if path.suffix.lower() in JSONL_SUFFIXES:
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    else:
        text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    _write_atomically(path, text)


def load_self_edits(path: str | Path) -> dict[str, list[str]]:
    """Load self-edits (completions) written by a model, keyed by passage id.

    Accepted shapes:

    * the reference's synthetic files: a JSON list (or JSONL) of flat passage records, each with a
      ``"completions": [str, ...]`` key (``"prompt"`` and other keys are ignored). The key is the
      record's ``"id"`` if it has one, else the id ``load_passages`` derives for that same record
      (``<slug of title>-<index>``), so ``load_passages(f)`` and ``load_self_edits(f)`` agree for
      the same file. Titles alone are not used as keys because many passages share a title.
    * JSONL of ``{"passage_id": str, "completion": str}`` (or ``"completions": [str, ...]``) lines, as
      ``write_self_edits`` writes them; several lines for one passage accumulate in file order.

    Empty completions are kept (an empty self-edit is the "train on the passage only" baseline).

    Raises:
        SquadFormatError: invalid JSON, a wrong shape or type, or two passage records with the same key.
    """
    path = Path(path)
    file_label = str(path)
    document = _read_document(path)
    if document.records is not None:
        records = document.records
    elif isinstance(document.value, list):
        records = [(f"record {index}", record) for index, record in enumerate(document.value)]
    else:
        raise SquadFormatError(
            f"{file_label}: expected a list of passage records with 'completions' or JSONL lines with "
            f"'passage_id', got {_type_name(document.value)}"
        )
    edits: dict[str, list[str]] = {}
    record_of_key: dict[str, str] = {}
    for index, (where, record) in enumerate(records):
        if not isinstance(record, dict):
            raise SquadFormatError(f"{file_label}: {where}: expected an object, got {_type_name(record)}")
        if "passage_id" in record:
            passage_id = _required_text(record, "passage_id", file_label, where)
            edits.setdefault(passage_id, []).extend(_completions_of(record, file_label, where))
            continue
        where = _describe(where, record)
        if "completions" not in record:
            raise SquadFormatError(f"{file_label}: {where}: missing 'completions' (or 'passage_id')")
        if "id" in record:
            key = _required_text(record, "id", file_label, where)
        else:
            key = derived_passage_id(_required_text(record, "title", file_label, where), index)
        if key in record_of_key:
            raise SquadFormatError(f"{file_label}: {where}: passage key {key!r} already used by {record_of_key[key]}")
        record_of_key[key] = where
        edits[key] = _completions_of(record, file_label, where)
    return edits


def self_edits_for(path: str | Path, passage_ids: Iterable[str], at_least: int = 1) -> dict[str, list[str]]:
    """Load a self-edit file (:func:`load_self_edits`) and check that every one of ``passage_ids`` has
    at least ``at_least`` self-edits; otherwise raise an error naming the file and the first ids short."""
    edits = load_self_edits(path)
    short = sorted({pid for pid in passage_ids if len(edits.get(pid, [])) < at_least})
    if short:
        what = "no self-edit" if at_least == 1 else f"fewer than {at_least} self-edits"
        raise SquadFormatError(
            f"{path}: {what} for passage ids {short[:5]}{' ...' if len(short) > 5 else ''} "
            f"({len(short)} passage(s) short); add them to the file, or select passages the file covers"
        )
    return edits


def write_self_edits(path: str | Path, edits: dict[str, Sequence[str]]) -> None:
    """Write self-edits as JSONL, one ``{"passage_id", "completion"}`` line per completion.

    Raises:
        ValueError: there is no completion at all (``load_self_edits`` rejects an empty file).
    """
    lines = []
    for passage_id, completions in edits.items():
        _check_text(passage_id, "passage id")
        for completion in completions:
            if not isinstance(completion, str):
                raise TypeError(f"completion for passage {passage_id!r} must be a string, got {_type_name(completion)}")
            lines.append(json.dumps({"passage_id": passage_id, "completion": completion}, ensure_ascii=False))
    if not lines:
        raise ValueError(f"{path}: no self-edits to write")
    _write_atomically(Path(path), "".join(line + "\n" for line in lines))


@dataclass(frozen=True)
class _Document:
    """A parsed file: ``records`` holds (location, value) pairs for JSONL and is None for one JSON ``value``."""

    value: Any = None
    records: list[tuple[str, Any]] | None = None


def _read_document(path: Path) -> _Document:
    """Read ``path`` as one JSON value, or as JSONL if the suffix or the content says so."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SquadFormatError(f"{path}: not valid UTF-8 ({error})") from error
    if not text.strip():
        raise SquadFormatError(f"{path}: file is empty")
    if path.suffix.lower() in JSONL_SUFFIXES:
        return _Document(records=list(_parse_jsonl(text, path)))
    try:
        return _Document(value=loads_strict(text, source=str(path)))
    except DuplicateKeyError as error:
        raise _duplicate_key_error(error, str(path), None) from error
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            return _Document(records=list(_parse_jsonl(text, path)))
        raise SquadFormatError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error


def _parse_jsonl(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``("line N", value)`` for every non-blank line."""
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {line_number}", loads_strict(line, source=f"{path}: line {line_number}")
        except DuplicateKeyError as error:
            raise _duplicate_key_error(error, str(path), f"line {line_number}") from error
        except json.JSONDecodeError as error:
            raise SquadFormatError(f"{path}: line {line_number}: invalid JSON: {error.msg}") from error


def _duplicate_key_error(error: DuplicateKeyError, file_label: str, line: str | None) -> SquadFormatError:
    """The format error for a repeated key: the file, the record (id and title when readable) and the key.

    ``line`` is ``"line N"`` for one JSONL line (the location is then inside that line's value); for
    a whole JSON file the records of a top-level list are called ``record N`` as elsewhere here.
    """
    node = error.document
    where = _describe(line, node) if line else ""
    labelled = bool(line)  # the last segment is a record label or an (id, title) description
    for position, part in enumerate(error.location):
        node = node[part]
        if position == 0 and line is None and isinstance(part, int):
            where, labelled = f"record {part}", True
        elif isinstance(part, int):
            where, labelled = f"{where}[{part}]", False
        elif where:
            where, labelled = f"{where}{': ' if labelled else '.'}{part}", False
        else:
            where = part
        described = _describe(where, node)
        where, labelled = described, labelled or described != where
    return SquadFormatError(
        f"{file_label}: {where or 'top level'}: the key {error.key!r} appears twice in one object; JSON would "
        "silently keep only the last value, so fix the record: remove or rename one of the two"
    )


def _check_gradable(answers: Sequence[str], file_label: str, where: str) -> None:
    """Refuse a gold answer that SQuAD normalisation reduces to nothing (it can never be graded correct)."""
    for answer in answers:
        if not is_gradable(answer):
            raise SquadFormatError(
                f"{file_label}: {where}: the gold answer {answer!r} is empty after SQuAD answer normalisation "
                "(lower-case, punctuation and the articles a/an/the removed), so no prediction could ever be "
                "graded correct; write the answer out in words or remove it"
            )


def _parse_squad(document: dict[str, Any], file_label: str, require_questions: bool) -> list[Passage]:
    """Flatten an official SQuAD document into passages, one per paragraph."""
    articles = document["data"]
    if not isinstance(articles, list):
        raise SquadFormatError(f"{file_label}: 'data' must be a list, got {_type_name(articles)}")
    passages: list[Passage] = []
    for article_index, article in enumerate(articles):
        where = f"data[{article_index}]"
        if not isinstance(article, dict):
            raise SquadFormatError(f"{file_label}: {where}: expected an object, got {_type_name(article)}")
        title = _required_text(article, "title", file_label, where)
        where = f"{where} (title {title!r})"
        paragraphs = _required_list(article, "paragraphs", file_label, where)
        for paragraph_index, paragraph in enumerate(paragraphs):
            paragraph_where = f"data[{article_index}].paragraphs[{paragraph_index}]"
            if not isinstance(paragraph, dict):
                raise SquadFormatError(
                    f"{file_label}: {paragraph_where}: expected an object, got {_type_name(paragraph)}"
                )
            context = _required_text(paragraph, "context", file_label, paragraph_where)
            raw_questions = _required_list(paragraph, "qas", file_label, paragraph_where)
            passage_id = derived_passage_id(title, len(passages))
            questions = []
            for question_index, raw_question in enumerate(raw_questions):
                question = _parse_squad_question(
                    raw_question,
                    file_label,
                    f"{paragraph_where}.qas[{question_index}]",
                    passage=f"passage {passage_id!r} (title {title!r})",
                )
                if question is not None:
                    questions.append(question)
            if require_questions and not questions:
                raise SquadFormatError(
                    f"{file_label}: {paragraph_where} (title {title!r}): no answerable question "
                    "(pass require_questions=False to keep such passages)"
                )
            passages.append(Passage(id=passage_id, title=title, context=context, questions=tuple(questions)))
    return passages


def _parse_squad_question(raw: Any, file_label: str, where: str, *, passage: str) -> Question | None:
    """One SQuAD ``qas`` entry; None for a v2 question marked impossible (``passage`` names its passage)."""
    if not isinstance(raw, dict):
        raise SquadFormatError(f"{file_label}: {where}: expected an object, got {_type_name(raw)}")
    question_id = _required_text(raw, "id", file_label, where)
    where = f"{where} (id {question_id!r})"
    text = _required_text(raw, "question", file_label, where)
    if raw.get("is_impossible") is True:
        return None
    raw_answers = _required_list(raw, "answers", file_label, where)
    if not raw_answers:
        raise SquadFormatError(
            f"{file_label}: {where}: 'answers' is empty and the question is not marked is_impossible"
        )
    answers: list[str] = []
    for answer_index, raw_answer in enumerate(raw_answers):
        answer_where = f"{where}.answers[{answer_index}]"
        if not isinstance(raw_answer, dict):
            raise SquadFormatError(f"{file_label}: {answer_where}: expected an object, got {_type_name(raw_answer)}")
        answer = _required_text(raw_answer, "text", file_label, answer_where)
        if answer not in answers:
            answers.append(answer)
    _check_gradable(answers, file_label, f"{where} of {passage}")
    return Question(id=question_id, question=text, answers=tuple(answers))


def _parse_flat_passage(record: Any, file_label: str, where: str, *, index: int, require_questions: bool) -> Passage:
    """One flat passage record; ``index`` (its position in the file) names it when it has no ``id``."""
    if not isinstance(record, dict):
        raise SquadFormatError(f"{file_label}: {where}: expected an object, got {_type_name(record)}")
    where = _describe(where, record)
    title = _required_text(record, "title", file_label, where)
    context = _required_text(record, "context", file_label, where)
    if "id" in record:
        passage_id = _required_text(record, "id", file_label, where)
    else:
        passage_id = derived_passage_id(title, index)
    raw_questions = _required_list(record, "questions", file_label, where)
    if require_questions and not raw_questions:
        raise SquadFormatError(
            f"{file_label}: {where}: 'questions' is empty (pass require_questions=False to keep such passages)"
        )
    questions = tuple(
        _parse_flat_question(
            raw_question,
            file_label,
            f"{where}: questions[{question_index}]",
            default_id=f"{passage_id}-q{question_index}",
        )
        for question_index, raw_question in enumerate(raw_questions)
    )
    return Passage(id=passage_id, title=title, context=context, questions=questions)


def _parse_flat_question(raw: Any, file_label: str, where: str, *, default_id: str) -> Question:
    """One flat question: ``question`` plus ``answer`` and/or ``answers`` (merged, de-duplicated, in order)."""
    if not isinstance(raw, dict):
        raise SquadFormatError(f"{file_label}: {where}: expected an object, got {_type_name(raw)}")
    question_id = _required_text(raw, "id", file_label, where) if "id" in raw else default_id
    text = _required_text(raw, "question", file_label, where)
    if "answer" not in raw and "answers" not in raw:
        raise SquadFormatError(f"{file_label}: {where}: missing 'answer'")
    answers: list[str] = []
    if "answer" in raw:
        answers.append(_required_text(raw, "answer", file_label, where))
    if "answers" in raw:
        raw_answers = _required_list(raw, "answers", file_label, where)
        if not raw_answers:
            raise SquadFormatError(f"{file_label}: {where}: 'answers' is empty")
        for answer_index, answer in enumerate(raw_answers):
            if not isinstance(answer, str) or not answer.strip():
                raise SquadFormatError(
                    f"{file_label}: {where}: answers[{answer_index}] must be a non-empty string, got {answer!r}"
                )
            if answer not in answers:
                answers.append(answer)
    _check_gradable(answers, file_label, f"{where} (question id {question_id!r})")
    return Question(id=question_id, question=text, answers=tuple(answers))


def _check_unique_ids(passages: list[Passage], file_label: str) -> None:
    """Raise if two passages, or two questions anywhere in the file, share an id."""
    passage_by_id: dict[str, tuple[int, Passage]] = {}
    question_owner: dict[str, Passage] = {}
    for index, passage in enumerate(passages):
        if passage.id in passage_by_id:
            first_index, first = passage_by_id[passage.id]
            raise SquadFormatError(
                f"{file_label}: passage {index} (title {passage.title!r}) has the id {passage.id!r} "
                f"already used by passage {first_index} (title {first.title!r})"
            )
        passage_by_id[passage.id] = (index, passage)
        for question in passage.questions:
            if question.id in question_owner:
                raise SquadFormatError(
                    f"{file_label}: passage {index} (id {passage.id!r}): question id {question.id!r} "
                    f"already used in passage {question_owner[question.id].id!r}"
                )
            question_owner[question.id] = passage


def _completions_of(record: dict[str, Any], file_label: str, where: str) -> list[str]:
    """The ``completion`` string or ``completions`` list of a self-edit record (empty strings kept)."""
    if "completion" in record:
        completions = [record["completion"]]
        key = "completion"
    elif "completions" in record:
        completions = record["completions"]
        key = "completions"
        if not isinstance(completions, list):
            raise SquadFormatError(
                f"{file_label}: {where}: 'completions' must be a list, got {_type_name(completions)}"
            )
    else:
        raise SquadFormatError(f"{file_label}: {where}: missing 'completion' or 'completions'")
    for position, completion in enumerate(completions):
        if not isinstance(completion, str):
            label = key if key == "completion" else f"completions[{position}]"
            raise SquadFormatError(f"{file_label}: {where}: {label} must be a string, got {_type_name(completion)}")
    return list(completions)


def _describe(where: str, record: Any) -> str:
    """Append the record's id and title to its location when they are readable strings."""
    if not isinstance(record, dict):
        return where
    known = [f"{key} {record[key]!r}" for key in ("id", "title") if isinstance(record.get(key), str)]
    return f"{where} ({', '.join(known)})" if known else where


def _required_text(record: dict[str, Any], key: str, file_label: str, where: str) -> str:
    """``record[key]`` as a non-empty string, or a SquadFormatError naming file, record and key."""
    if key not in record:
        raise SquadFormatError(f"{file_label}: {where}: missing {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise SquadFormatError(f"{file_label}: {where}: {key!r} must be a string, got {_type_name(value)}")
    if not value.strip():
        raise SquadFormatError(f"{file_label}: {where}: {key!r} is empty")
    return value


def _required_list(record: dict[str, Any], key: str, file_label: str, where: str) -> list[Any]:
    """``record[key]`` as a list, or a SquadFormatError naming file, record and key."""
    if key not in record:
        raise SquadFormatError(f"{file_label}: {where}: missing {key!r}")
    value = record[key]
    if not isinstance(value, list):
        raise SquadFormatError(f"{file_label}: {where}: {key!r} must be a list, got {_type_name(value)}")
    return value


def _check_text(value: Any, what: str) -> None:
    """Raise ValueError unless ``value`` is a non-blank string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


def _type_name(value: Any) -> str:
    """JSON-flavoured name of a value's type, for error messages."""
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def selected_passages(path: str, *, seed: int | None, start: int, limit: int | None) -> list[Passage]:
    """The passages of ``path`` picked by ``seed``/``start``/``limit``; an empty pick is refused.

    Raises:
        EmptySelectionError: the file holds no passage, ``limit`` is 0, or ``start`` is past the end.
        OptionError: ``start`` or ``limit`` is negative.
    """
    passages = load_passages(path)
    chosen = select_passages(passages, seed=seed, start=start, limit=limit)
    return require_selection(chosen, source=str(path), total=len(passages), what="passages", start=start, limit=limit)


@dataclass(frozen=True)
class PassageItem:
    """One item of the knowledge evaluation loop: the passage, its position in the selected data set
    (which fixes its seeds, whatever the rank that runs it) and self-edits written elsewhere."""

    index: int
    passage: Passage
    external: tuple[str, ...] = ()
