"""Checks shared by every loader of user data: strict JSON, and selections that select something.

Python's ``json`` keeps the last value of a key repeated inside one object without a word, so a
file with two ARC tasks under one id, or a question with two ``"answer"`` keys, loads as something
other than what it says. Every data file the tool reads (passage files, self-edit files, ARC
challenges and solutions) is parsed by :func:`loads_strict`, which raises
:class:`DuplicateKeyError` naming the file, the key and where the object sits in the document (a
path such as ``data[3].paragraphs[0].qas[2]``). The domain loaders turn it into their own format
error with the record's id or title.

A data selection (a file, ``start``, ``limit``) that selects no item would run to the end, exit 0
and leave no results: :func:`check_start_limit` refuses negative values and :func:`require_selection`
raises :class:`~seal_pl.errors.EmptySelectionError` naming the file, how many items it holds and
the ``start``/``limit`` given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from seal_pl.errors import EmptySelectionError, OptionError, UserError

Item = TypeVar("Item")
Location = tuple[str | int, ...]


class DuplicateKeyError(UserError, ValueError):
    """A key appears twice in one JSON object of a data file.

    Attributes:
        source: the file (or ``file: line N`` for one JSONL line).
        key: the repeated key.
        location: keys and list indices leading from the document's top level to the object
            (empty for the top-level object itself).
        document: the parsed document (last value kept for the key), for describing the record.
    """

    def __init__(self, source: str, key: str, location: Location, document: Any) -> None:
        self.source = source
        self.key = key
        self.location = location
        self.document = document
        where = format_location(location) or "top level"
        super().__init__(
            f"{source}: {where}: the key {key!r} appears twice in one JSON object; JSON would silently keep "
            "only the last value, so fix the file: remove or rename one of the two"
        )


def loads_strict(text: str, *, source: str) -> Any:
    """``json.loads`` that refuses a key repeated inside one object.

    Raises:
        DuplicateKeyError: naming ``source``, the key and the object's location (the first repeat
            found, innermost objects first).
        json.JSONDecodeError: the text is not JSON (left to the caller, which names the file).
    """
    found: list[tuple[str, dict[str, Any]]] = []

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        built = dict(pairs)
        if len(built) != len(pairs) and not found:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    found.append((key, built))
                    break
                seen.add(key)
        return built

    document = json.loads(text, object_pairs_hook=build)
    if found:
        key, holder = found[0]
        raise DuplicateKeyError(source, key, locate(document, holder), document)
    return document


def locate(document: Any, target: Any) -> Location:
    """Keys and indices from ``document`` down to the object ``target`` (found by identity)."""
    stack: list[tuple[Any, Location]] = [(document, ())]
    while stack:
        value, location = stack.pop()
        if value is target:
            return location
        if isinstance(value, dict):
            stack.extend((child, (*location, key)) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((child, (*location, index)) for index, child in enumerate(value))
    return ()


def format_location(location: Location) -> str:
    """``("data", 3, "qas")`` -> ``data[3].qas``; an empty location -> ``""``."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def check_start_limit(start: int, limit: int | None, *, what: str) -> None:
    """Refuse a negative ``start`` or ``limit`` (``limit=None`` means all ``what``)."""
    if start < 0:
        raise OptionError(
            f"start must be >= 0, got {start}: it is the position of the first of the {what} to use (0 = the first)"
        )
    if limit is not None and limit < 0:
        raise OptionError(f"limit must be >= 0 or None, got {limit}: it is how many {what} to use (null = all)")


def require_selection(
    selected: Sequence[Item],
    *,
    source: str,
    total: int,
    what: str,
    start: int | None = 0,
    limit: int | None = None,
) -> list[Item]:
    """``selected`` as a list, or an EmptySelectionError when it is empty.

    Args:
        selected: the items the selection picked.
        source: the file (or files) the items came from.
        total: how many items the source holds (before ``start``/``limit``).
        what: plural noun of the items (``passages``, ``ARC tasks``).
        start: the ``start`` given (None when the selection has no such option).
        limit: the ``limit`` given (None = all).
    """
    if selected:
        return list(selected)
    given = ("" if start is None else f"start={start}, ") + f"limit={'null' if limit is None else limit}"
    if total == 0:
        reason = f"it holds 0 {what}; put at least one in it, or point the run at another file"
    elif limit == 0:
        reason = f"it holds {total} {what} and limit 0 selects none of them; set limit to at least 1 (null = all)"
    elif start is not None and start >= total:
        reason = f"it holds {total} {what} and start {start} is past the end; use a start below {total}"
    else:
        reason = f"it holds {total} {what} and none of them was selected; check the selection options"
    raise EmptySelectionError(f"{source}: the selection ({given}) selects no {what}: {reason}")
