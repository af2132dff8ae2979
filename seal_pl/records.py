"""Typed JSONL records: how stages hand work to each other through a run directory.

Each record kind is a dataclass deriving from :class:`Record`: its ``KIND`` (written into every
line), its file ``STEM`` (per-rank shards ``<stem>.rank<r>.jsonl``, merged ``<stem>.jsonl``: one
file name, one shape) and its ``SCHEMA`` version. Writers call :func:`append` with a record,
readers :func:`read_typed` / :func:`read_all_typed` with the class they expect, and get a
:class:`RecordKindError` naming the file and line for a record of another kind or schema, a
missing field or a field the kind does not have: renaming a field fails loudly. Fields may be
nested dataclasses (or lists / string-keyed dicts of them); they are rebuilt from JSON.

Every record is one JSON object per line, appended and flushed as soon as the item it describes is
finished, so killing a process loses at most the item in progress. Readers tolerate a truncated
last line (the trace of such a kill) and refuse anything else that does not parse, naming the file
and line. ``completed_ids`` is what makes every stage resumable: re-running skips finished ids.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from seal_pl.errors import UserError

log = logging.getLogger(__name__)


class RecordFileError(UserError, ValueError):
    """A JSONL record file is corrupt somewhere other than its last line."""


class RecordKindError(RecordFileError):
    """A record is not of the kind (or schema version, or shape) its reader expects."""


R = TypeVar("R", bound="Record")


@dataclasses.dataclass
class Record:
    """Base of every record kind (a dataclass with ``KIND``, ``STEM`` and ``SCHEMA``)."""

    KIND: ClassVar[str] = ""
    STEM: ClassVar[str] = ""
    SCHEMA: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one line: ``kind``, ``schema`` and every field."""
        return {"kind": self.KIND, "schema": self.SCHEMA, **_plain(dataclasses.asdict(self))}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "record") -> typing.Self:
        """The record of one JSON object; :class:`RecordKindError` (naming ``where``) if it is not one."""
        if not isinstance(data, dict):
            raise RecordKindError(f"{where}: expected a JSON object, got {type(data).__name__}")
        kind, schema = data.get("kind"), data.get("schema")
        if kind != cls.KIND:
            raise RecordKindError(
                f"{where}: a {kind!r} record where {cls.KIND!r} records belong"
                + (" (written by an older seal-pl: start a new run directory)" if kind is None else "")
            )
        if schema != cls.SCHEMA:
            raise RecordKindError(
                f"{where}: {cls.KIND!r} record of schema {schema!r}, this seal-pl reads schema {cls.SCHEMA}"
            )
        return _build(cls, {k: v for k, v in data.items() if k not in ("kind", "schema")}, where)

    @classmethod
    def shard(cls, run_dir: str | Path, rank: int) -> Path:
        """One process's file of this kind: ``<run_dir>/<stem>.rank<r>.jsonl``."""
        return Path(run_dir) / f"{cls.STEM}.rank{rank}.jsonl"

    @classmethod
    def shards(cls, run_dir: str | Path) -> Path:
        """The glob pattern of every rank's shard."""
        return Path(run_dir) / f"{cls.STEM}.rank*.jsonl"

    @classmethod
    def merged(cls, run_dir: str | Path) -> Path:
        """The merged file of every rank's records: ``<run_dir>/<stem>.jsonl``."""
        return Path(run_dir) / f"{cls.STEM}.jsonl"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecordKindError(f"{where}: {cls.__name__} has no field(s) {', '.join(unknown)}")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecordKindError(f"{where}: {cls.__name__} record lacks {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _convert(hints[name], value, f"{where}: {name}") for name, value in data.items()})


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` with every dict that a dataclass annotation asks for rebuilt as that dataclass."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        candidates = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(candidates[0], value, where) if len(candidates) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value, where)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_convert(item, v, where) for v in value]
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(hint)
        return {k: _convert(args[1], v, where) for k, v in value.items()} if len(args) == 2 else value
    return value


def append(path: str | Path, record: Record) -> None:
    """Append one typed record (see :func:`append_record`)."""
    append_record(path, record.to_json())


def read_typed(path: str | Path, kind: type[R]) -> Iterator[R]:
    """The records of one file, each checked to be of ``kind``."""
    for number, data in _numbered(path):
        yield kind.from_json(data, where=f"{path}:{number}")


def read_all_typed(pattern: str | Path, kind: type[R]) -> list[R]:
    """The records of every file matching a glob pattern (per-rank shards), each of ``kind``."""
    out: list[R] = []
    for name in sorted(glob.glob(str(pattern))):
        out.extend(read_typed(name, kind))
    return out


def rewrite_typed(path: str | Path, records: Iterable[Record]) -> None:
    """Write a whole file of typed records atomically."""
    rewrite_records(path, (record.to_json() for record in records))


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record and flush it to disk.

    A half-written last line (left by a process killed mid-write) is cut off first, so the new
    record starts on a line of its own instead of being glued to the fragment.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_partial_last_line(path)
    line = json.dumps(record, ensure_ascii=False, sort_keys=False)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _drop_partial_last_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        data = handle.seek(0) or handle.read()
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping a half-written last line (%d bytes) before appending", path, len(data) - keep)
        handle.truncate(keep)


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of one file as plain JSON objects; a truncated final line is skipped with a warning."""
    for _, record in _numbered(path):
        yield record


def _numbered(path: str | Path) -> Iterator[tuple[int, Any]]:
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            is_last = all(not rest.strip() for rest in lines[number:])
            if is_last and not path.read_text(encoding="utf-8").endswith("\n"):
                log.warning("%s:%d: skipping a truncated last record (interrupted write)", path, number)
                return
            raise RecordFileError(f"{path}:{number}: not valid JSON ({error.msg})") from error


def read_all(pattern: str | Path) -> list[dict[str, Any]]:
    """Records of every file matching a glob pattern (e.g. the per-rank shards of one stage)."""
    out: list[dict[str, Any]] = []
    for name in sorted(glob.glob(str(pattern))):
        out.extend(read_records(name))
    return out


def completed_ids(records: Iterable[dict[str, Any]], key: str = "id") -> set[str]:
    return {str(r[key]) for r in records if key in r}


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def rewrite_records(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write a whole JSONL file atomically (used to merge per-rank shards)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    os.replace(tmp, path)


# ------------------------------------------------------------------------ outer-loop records
POLICY_MARKER = "seal_policy.json"
"""Written last into a policy folder saved by :class:`~seal_pl.lightning.PolicySFTModule` (what it was
trained from, examples, steps, losses): the M-step that saved it is finished."""


@dataclasses.dataclass(kw_only=True)
class ScoredSelfEdit(Record):
    """One self-edit of an E-step with its reward, as the outer loop sees it (every domain).

    A domain's own kind derives from it and adds what its filter and evidence read (the
    knowledge gains and self-edit statistics, the ARC validity and training trace).
    ``reward`` is ``None`` for a self-edit that could not be scored (an ARC task without solutions).
    """

    KIND = "scored_self_edit"
    STEM = ""  # abstract: a domain's kind names its own file

    id: str
    context_id: str
    edit_index: int
    seed: int | None
    prompt: Any
    completion: str
    reward: float | None


@dataclasses.dataclass(kw_only=True)
class SFTExample(Record):
    """One (prompt, completion) pair kept by the filter: a row of the M-step's SFT set.

    ``prompt`` is what the E-step sampled with (chat messages or text); ``id``/``context_id``,
    ``edit_index`` and ``reward`` say where it came from.
    """

    KIND = "sft_example"
    STEM = "sft"

    prompt: Any
    completion: str
    id: str | None = None
    context_id: str | None = None
    edit_index: int | None = None
    reward: float | None = None

    @classmethod
    def of(cls, scored: ScoredSelfEdit) -> SFTExample:
        return cls(
            prompt=scored.prompt,
            completion=scored.completion,
            id=scored.id,
            context_id=scored.context_id,
            edit_index=scored.edit_index,
            reward=scored.reward,
        )
