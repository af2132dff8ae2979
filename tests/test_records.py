"""JSONL records (plain and typed): appended per item, a truncated last line (a killed write) is tolerated, nothing else."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seal_pl.records import (
    Record,
    RecordFileError,
    RecordKindError,
    append,
    append_record,
    read_all,
    read_all_typed,
    read_records,
    read_typed,
    rewrite_records,
    rewrite_typed,
    write_json,
)


def test_append_read_and_merge_shards(tmp_path):
    append_record(tmp_path / "x.rank0.jsonl", {"id": "a", "v": 1})
    append_record(tmp_path / "x.rank1.jsonl", {"id": "b", "v": "é"})
    append_record(tmp_path / "x.rank0.jsonl", {"id": "c"})
    assert [r["id"] for r in read_all(tmp_path / "x.rank*.jsonl")] == ["a", "c", "b"]
    rewrite_records(tmp_path / "merged.jsonl", [{"id": 1}, {"id": 2}])
    assert list(read_records(tmp_path / "merged.jsonl")) == [{"id": 1}, {"id": 2}]
    write_json(tmp_path / "r.json", {"ok": True})
    assert (tmp_path / "r.json").read_text().strip().endswith("}")
    assert list(read_records(tmp_path / "missing.jsonl")) == []


def test_truncated_last_line_is_skipped_but_corruption_elsewhere_is_an_error(tmp_path):
    path = tmp_path / "shard.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "val')
    assert [r["id"] for r in read_records(path)] == ["a"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(RecordFileError, match=r"bad.jsonl:2"):
        list(read_records(bad))


def test_append_after_a_half_written_line_drops_the_fragment(tmp_path):
    path = tmp_path / "items.jsonl"
    append_record(path, {"id": 1})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": 2, "tex')  # a kill in the middle of a write
    append_record(path, {"id": 3})
    assert [r["id"] for r in read_records(path)] == [1, 3]
    assert path.read_text(encoding="utf-8").count("\n") == 2


@dataclasses.dataclass
class _Inner:
    name: str
    score: float = 0.0


@dataclasses.dataclass
class _Example(Record):
    KIND = "example"
    STEM = "examples"

    id: str
    inner: _Inner
    many: list[_Inner] = dataclasses.field(default_factory=list)
    by_name: dict[str, _Inner] = dataclasses.field(default_factory=dict)
    note: str | None = None


@dataclasses.dataclass
class _Other(Record):
    KIND = "other"
    STEM = "others"

    id: str


def test_typed_records_round_trip_through_their_shards(tmp_path):
    record = _Example(id="a", inner=_Inner("x", 0.5), many=[_Inner("y")], by_name={"z": _Inner("z", 1.0)})
    append(_Example.shard(tmp_path, 0), record)
    append(_Example.shard(tmp_path, 1), _Example(id="b", inner=_Inner("q")))
    assert _Example.shard(tmp_path, 1).name == "examples.rank1.jsonl"
    back = read_all_typed(_Example.shards(tmp_path), _Example)
    assert back[0] == record and back[1].id == "b" and isinstance(back[0].by_name["z"], _Inner)
    rewrite_typed(_Example.merged(tmp_path), back)
    assert list(read_typed(tmp_path / "examples.jsonl", _Example)) == back
    assert json.loads(_Example.merged(tmp_path).read_text().splitlines()[0])["kind"] == "example"


def test_a_reader_refuses_records_of_another_kind_schema_or_shape(tmp_path):
    path = tmp_path / "examples.rank0.jsonl"
    append(path, _Other(id="o"))
    with pytest.raises(RecordKindError, match=r"examples.rank0.jsonl:1: a 'other' record where 'example'"):
        list(read_typed(path, _Example))
    with pytest.raises(RecordKindError, match="older seal-pl"):
        _Example.from_json({"id": "a", "inner": {"name": "x"}})
    with pytest.raises(RecordKindError, match="schema 7"):
        _Example.from_json({"kind": "example", "schema": 7, "id": "a", "inner": {"name": "x"}})
    with pytest.raises(RecordKindError, match="no field"):
        _Example.from_json({"kind": "example", "schema": 1, "id": "a", "inner": {"name": "x"}, "renamed": 1})
    with pytest.raises(RecordKindError, match="inner: _Inner has no field"):
        _Example.from_json({"kind": "example", "schema": 1, "id": "a", "inner": {"nme": "x"}})
    with pytest.raises(RecordKindError, match="lacks inner"):
        _Example.from_json({"kind": "example", "schema": 1, "id": "a"})
