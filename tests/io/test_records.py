"""Partitioned reading of corpus files: every line read exactly once, rejects with positions."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.io.records import (
    SourcedRecord,
    plan_partitions,
    read_partition,
    read_partition_data,
)


def _read_all(inputs: list[str], target: int) -> tuple[list, list, int]:
    records, rejects, blank = [], [], 0
    for part in plan_partitions(inputs, target_bytes=target):
        data = read_partition_data(part)
        records += data.records
        rejects += data.rejects
        blank += data.blank_lines
    return records, rejects, blank


def _lines_file(path: Path, lines: list[bytes], trailing_newline: bool = True) -> Path:
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline else b""))
    return path


@pytest.mark.parametrize("target", [1, 2, 5, 17, 64, 1000, 1 << 20])
def test_every_line_read_once_whatever_the_range_size(tmp_path: Path, target: int) -> None:
    lines = [orjson.dumps({"i": i, "text": "x" * (i * 7 % 50)}) for i in range(40)]
    lines[5] = b"   "  # blank
    lines[9] = lines[9] + b"\r"  # CRLF line end
    path = _lines_file(tmp_path / "a.jsonl", lines, trailing_newline=False)
    records, rejects, blank = _read_all([str(path)], target)
    assert [r["i"] for r in records] == [i for i in range(40) if i != 5]
    assert rejects == [] and blank == 1
    data = path.read_bytes()
    for r in records:  # offsets point at the line start, whatever partition read it
        assert data[r.offset :].startswith(b'{"i":%d,' % r["i"])
    first = plan_partitions([str(path)], target_bytes=target)[0]
    assert all(r.line == r["i"] + 1 for r in read_partition_data(first).records)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=30), min_size=0, max_size=25),
    target=st.integers(min_value=1, max_value=80),
    trailing=st.booleans(),
)
def test_byte_ranges_partition_lines_exactly(
    tmp_path: Path, lengths: list[int], target: int, trailing: bool
) -> None:
    lines = [orjson.dumps({"n": i, "t": "é" * n}) if n % 5 else b"" for i, n in enumerate(lengths)]
    path = _lines_file(tmp_path / "h.jsonl", lines, trailing)
    if not path.stat().st_size:
        return
    reference = path.read_bytes().split(b"\n")
    if reference[-1] == b"":
        reference.pop()
    records, rejects, blank = _read_all([str(path)], target)
    assert [r["n"] for r in records] == [orjson.loads(x)["n"] for x in reference if x]
    assert blank == reference.count(b"") and not rejects


def test_bad_lines_become_rejects_with_reason_and_position(tmp_path: Path) -> None:
    good = orjson.dumps({"text": "ok"})
    lines = [
        good,
        b'{"text": "cut',
        b'{"text": "caf\xc3"}',
        b'{"text": "\\ud800"}',
        b"[1, 2]",
        good,
    ]
    path = _lines_file(tmp_path / "bad.jsonl", lines)
    records, rejects = read_partition(plan_partitions([str(path)])[0])
    assert len(records) == 2
    assert [(r["reason"], r["line"]) for r in rejects] == [
        ("invalid_json", 2),
        ("invalid_utf8", 3),
        ("invalid_unicode", 4),
        ("not_an_object", 5),
    ]
    assert rejects[1]["raw"] == '{"text": "caf\\xc3"}'  # undecodable bytes stay visible
    assert all(r["file"] == str(path) and r["offset"] is not None for r in rejects)


def test_line_numbers_unknown_in_later_ranges_but_offsets_known(tmp_path: Path) -> None:
    lines = [b"{bad"] + [orjson.dumps({"i": i}) for i in range(20)] + [b"{bad"]
    path = _lines_file(tmp_path / "a.jsonl", lines)
    parts = plan_partitions([str(path)], target_bytes=40)
    first, last = read_partition(parts[0])[1], read_partition(parts[-1])[1]
    assert first[0]["line"] == 1 and first[0]["offset"] == 0
    assert last[0]["line"] is None and path.read_bytes()[last[0]["offset"] :] == b"{bad\n"


def test_compressed_files_are_one_partition_with_line_numbers(tmp_path: Path) -> None:
    data = b"\n".join(orjson.dumps({"i": i}) for i in range(30)) + b"\n"
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    parts = plan_partitions([str(tmp_path)], target_bytes=10)
    assert [(p.compression, p.start) for p in parts] == [("gzip", 0), ("zstd", 0)]
    for p in parts:
        records = read_partition(p)[0]
        assert [r["i"] for r in records] == list(range(30)) and records[-1].line == 30


def test_parquet_partitions_by_row_groups(tmp_path: Path) -> None:
    table = pa.table({"text": [f"doc {i}" for i in range(100)], "i": list(range(100))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=10)
    parts = plan_partitions([str(tmp_path / "a.parquet")], target_bytes=1)
    assert len(parts) == 10 and parts[3].start == 3 and parts[3].end == 4
    rows = [r for p in parts for r in read_partition(p)[0]]
    assert [r["i"] for r in rows] == list(range(100))
    assert rows[42].line == 43 and rows[42].offset == 42


def test_inputs_sorted_deduplicated_and_hidden_files_skipped(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "sub/c.jsonl", ".hidden/d.jsonl", "_tmp.jsonl", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'{"text": "x"}\n')
    parts = plan_partitions(
        [str(tmp_path / "b.jsonl"), str(tmp_path), str(tmp_path / "[ab].jsonl")]
    )
    assert [Path(p.path).relative_to(tmp_path).as_posix() for p in parts] == [
        "a.jsonl",
        "b.jsonl",
        "sub/c.jsonl",
    ]
    assert [p.index for p in parts] == [0, 1, 2]


def test_input_problems_are_gathered_in_one_error(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(
        UserError, match=r"missing\.jsonl.*does not exist.*x\.csv.*not a known file type.*nothing\*"
    ):
        plan_partitions(
            [str(tmp_path / "missing.jsonl"), str(tmp_path / "x.csv"), str(tmp_path / "nothing*")]
        )


def test_records_pickle_with_their_position() -> None:
    rec = SourcedRecord({"text": "a"}, "f.jsonl", 3, 120)
    back = pickle.loads(pickle.dumps(rec))
    assert back == {"text": "a"} and (back.file, back.line, back.offset) == ("f.jsonl", 3, 120)
    assert orjson.dumps(back) == b'{"text":"a"}'
