"""Typed JSONL records: how stages hand work to each other through a run directory.

Every record is one JSON object per line, appended and flushed as soon as the item it describes is
finished, so killing a process loses at most the item in progress. Readers tolerate a truncated
last line (the trace of such a kill) and refuse anything else that does not parse, naming the file
and line. ``completed_ids`` is what makes every stage resumable: re-running skips finished ids.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from seal_pl.errors import UserError

log = logging.getLogger(__name__)


class RecordFileError(UserError, ValueError):
    """A JSONL record file is corrupt somewhere other than its last line."""


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
    """Records of one file; a truncated final line is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
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
