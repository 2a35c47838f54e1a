"""``dexport validate`` on token exports (JSONL, CSV, NPZ, Parquet) written by the token writers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.formats import token_records as tr
from pipeline.validate.export import validate_export


def _records(text: bool) -> tr.TokenRecords:
    n, width = 4, 5
    tokens = np.arange(n * width, dtype=np.int32)
    data = "".join(f"window {i} é" for i in range(n)).encode()
    lengths = [len(f"window {i} é".encode()) for i in range(n)]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    details = {k: np.arange(n, dtype=np.int64) for k in tr.DETAIL_FIELDS}
    return tr.TokenRecords(
        index=np.array([7, 8, 9, 10]),
        batch_id=np.array([1, 1, 2, 2]),
        tokens=None if text else tokens,
        token_offsets=None if text else np.arange(n + 1) * width,
        width=None if text else width,
        text=np.frombuffer(data, np.uint8) if text else None,
        text_offsets=offsets if text else None,
        details=details,
    )


def _write(path: Path, fmt: str, rec: tr.TokenRecords) -> None:
    buffer = io.BytesIO()
    if fmt == "npz":
        tr.write_npz_arrays(buffer, tr.npz_arrays(rec, {"tool": "dexport"}))
    else:
        {"jsonl": tr.write_jsonl, "csv": tr.write_csv, "parquet": tr.write_parquet}[fmt](
            buffer, rec
        )
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "npz", "parquet"])
@pytest.mark.parametrize("text", [False, True])
def test_token_exports_pass(tmp_path: Path, fmt: str, text: bool) -> None:
    for part in range(2):
        _write(tmp_path / f"part-{part:05d}.{fmt}", fmt, _records(text))
    report = validate_export(str(tmp_path))
    assert report.kind == "tokens" and [s.documents for s in report.splits] == [8]
    assert report.splits[0].error_count == 0
    assert report.problems == [
        "no _manifest.json: the export is incomplete or was not written by dexport"
    ]
    single = validate_export(str(tmp_path / f"part-00000.{fmt}"))
    assert single.passed and single.splits[0].length_max == (len("window 0 é") if text else 5)


def test_nested_jsonl_and_corrupt_records_fail(tmp_path: Path, capsys) -> None:
    rec = _records(False)
    rec.nested = True
    _write(tmp_path / "nested.jsonl", "jsonl", rec)
    assert validate_export(str(tmp_path / "nested.jsonl")).passed
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"index": 1, "content": [1, 2]}\n{"index": -1, "content": "x"}\n{"index": 2, "content": '
        '[1, "a"]}\nnot json\n'
    )
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert (
        "bad.jsonl:2: index must be a non-negative integer" in out
        and "bad.jsonl:3: content must be" in out
    )
    assert "bad.jsonl:4:" in out and out.rstrip().endswith("1 split(s), 0 export problem(s)")


def test_corrupt_npz_and_csv_are_reported(tmp_path: Path) -> None:
    arrays = tr.npz_arrays(_records(False), {})
    arrays["offsets"] = np.array([0, 5, 3])
    arrays["tokens"] = arrays["tokens"].reshape(-1)
    buffer = io.BytesIO()
    tr.write_npz_arrays(buffer, arrays)
    (tmp_path / "x.npz").write_bytes(buffer.getvalue())
    report = validate_export(str(tmp_path / "x.npz"))
    assert not report.passed and "offsets must rise" in report.splits[0].errors[0]
    (tmp_path / "x.csv").write_text('index,content\r\n1,"[1, 2]"\r\nx,hello\r\n')
    report = validate_export(str(tmp_path / "x.csv"))
    assert (
        report.splits[0].documents == 1 and "index must be an integer" in report.splits[0].errors[0]
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "npz", "parquet"])
def test_blended_records_pass(tmp_path: Path, fmt: str) -> None:
    """A blend's records name their dataset (text, with a comma to be quoted in CSV)."""
    rec = _records(False)
    rec.dataset = np.array(["data/d0", "data/d,1", "data/d0", "s3://b/d2"])
    rec.dataset_sample_id = np.array([0, 5, 1, 2])
    _write(tmp_path / f"part-00000.{fmt}", fmt, rec)
    report = validate_export(str(tmp_path / f"part-00000.{fmt}"))
    assert report.passed and report.splits[0].documents == 4, report.splits[0].errors


def test_blended_records_with_wrong_types_fail(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text(
        'index,content,dataset,dataset_sample_id\r\n1,"[1, 2]",data/d0,3\r\n2,"[1]",data/d0,x\r\n'
    )
    report = validate_export(str(tmp_path / "x.csv"))
    assert report.splits[0].documents == 1
    assert "dataset_sample_id must be an integer (got 'x')" in report.splits[0].errors[0]
    (tmp_path / "x.jsonl").write_text(
        '{"index": 1, "content": [1], "dataset": 3, "dataset_sample_id": 0}\n'
        '{"index": 2, "content": [1], "dataset": "d", "dataset_sample_id": -1}\n'
    )
    errors = validate_export(str(tmp_path / "x.jsonl")).splits[0].errors
    assert "x.jsonl:1: dataset must be" in errors[0]
    assert "x.jsonl:2: dataset_sample_id must be a non-negative integer" in errors[1]
