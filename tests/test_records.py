"""JSONL records: appended per item, a truncated last line (a killed write) is tolerated, nothing else."""

from __future__ import annotations

import pytest

from seal_pl.records import RecordFileError, append_record, read_all, read_records, rewrite_records, write_json


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
