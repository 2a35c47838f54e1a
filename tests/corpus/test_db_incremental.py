"""Incremental exports from a database (``--incremental`` with ``--key``): a re-run reads only
the rows above the largest key exported, and the result equals a from-scratch export.

Rows are inserted in two batches (ids 1..358 first, then 361..718): the second run must export
exactly the second batch (its run report counts the rows read), each split's records must be the
from-scratch run's records in the same (key) order, and ``encode`` must give a dataset equal to
a from-scratch encode. Rows added below the watermark, or deleted, are refused until
``--rebuild``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import db_services
import pytest
from corpus_helpers import tree_bytes
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401  (session fixture)

from pipeline.cli import main

SPLITS = ("train", "validation", "test")
COMMON = ["--table", "docs", "--key", "id", "--chunk-size", "4k", "--split-key", "id"]


def split_records(out: Path, name: str) -> bytes:
    """A split's bytes, whatever the layout (one file, or one file per generation)."""
    single = out / f"{name}.jsonl"
    if single.exists():
        return single.read_bytes()
    return b"".join(p.read_bytes() for p in sorted((out / name).glob("*.jsonl")))


def insert(db: Path, docs: list[dict]) -> None:
    columns = db_services.COLUMNS
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executemany(
            f"INSERT INTO docs VALUES ({', '.join('?' * len(columns))})",
            [db_services._row(doc) for doc in docs],
        )
        conn.commit()


def rows_read(report: Path) -> int:
    return json.loads(report.read_text(encoding="utf-8"))["steps"][0]["records_in"]


@pytest.fixture
def database(tmp_path: Path) -> tuple[Path, list[dict]]:
    """A SQLite table holding the first 120 of 240 documents; the rest are returned."""
    docs = db_services.documents()
    db = tmp_path / "games.db"
    db_services.write_sqlite(db, docs[:120])
    return db, docs[120:]


def test_new_rows_only_and_equal_to_a_from_scratch_export(database, tmp_path, capsys) -> None:
    db, later = database
    url, out, report = f"sqlite:///{db}", tmp_path / "export", tmp_path / "report.json"
    args = ["corpus", url, "--out", str(out), *COMMON, "--incremental"]
    assert main([*args, "--report", str(report)]) == 0
    assert rows_read(report) == 120
    insert(db, later)
    assert main([*args, "--report", str(report)]) == 0
    assert rows_read(report) == 120  # the new rows, not the 240
    manifest = json.loads((out / "_manifest.json").read_text())
    generations = manifest["incremental"]["generations"]
    assert [g["inputs"][0]["last_key"] for g in generations] == [358, 718]

    before = tree_bytes(out)
    capsys.readouterr()
    assert main([*args, "--report", str(report)]) == 0  # nothing new
    assert "up to date" in capsys.readouterr().err
    assert tree_bytes(out) == before

    scratch = tmp_path / "scratch"
    assert main(["corpus", url, "--out", str(scratch), *COMMON]) == 0
    for name in SPLITS:
        assert split_records(out, name) == split_records(scratch, name), name
    stats = [json.loads((x / "dataset_stats.json").read_text()) for x in (out, scratch)]
    assert stats[0]["splits"] == stats[1]["splits"]
    assert stats[0]["total_documents"] == stats[1]["total_documents"] == 233


def test_rows_below_the_watermark_are_refused_until_rebuild(database, tmp_path, capsys) -> None:
    db, later = database
    url, out = f"sqlite:///{db}", tmp_path / "export"
    args = ["corpus", url, "--out", str(out), *COMMON, "--incremental"]
    assert main(args) == 0
    insert(db, [{**later[0], "id": 2}])  # below the largest key exported (358)
    before = tree_bytes(out)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rows were added below the largest key exported" in err[0]
    assert "--rebuild" in err[0]
    assert tree_bytes(out) == before
    assert main([*args, "--rebuild"]) == 0
    scratch = tmp_path / "scratch"
    assert main(["corpus", url, "--out", str(scratch), *COMMON]) == 0
    for name in SPLITS:
        assert split_records(out, name) == split_records(scratch, name), name


def test_incremental_encode_from_a_database_equals_a_from_scratch_encode(
    database,
    tmp_path,
    byte_bpe_tokenizer_path,  # noqa: F811
) -> None:
    db, later = database
    url = f"sqlite:///{db}"
    enc = ["--table", "docs", "--key", "id", "--partition-size", "4k"]
    enc += ["--tokenizer", str(byte_bpe_tokenizer_path), "--append-eod"]
    grown = tmp_path / "grown" / "ds"
    assert main(["encode", url, "--out", str(grown), *enc, "--incremental"]) == 0
    insert(db, later)
    assert main(["encode", url, "--out", str(grown), *enc, "--incremental"]) == 0
    scratch = tmp_path / "scratch" / "ds"
    assert main(["encode", url, "--out", str(scratch), *enc]) == 0
    for suffix in (".bin", ".idx"):
        assert Path(f"{grown}{suffix}").read_bytes() == Path(f"{scratch}{suffix}").read_bytes()


def test_postgres_incremental_export_masks_the_password(postgres_server, tmp_path, capsys) -> None:
    docs = db_services.documents()
    url = db_services.write_postgres(postgres_server, docs[:100], "incremental_docs")
    args = ["corpus", url, "--table", "incremental_docs", "--key", "id", "--split-key", "id"]
    args += ["--out", str(tmp_path / "export"), "--incremental"]
    assert main(args) == 0
    conn = postgres_server.connect()
    try:
        for doc in docs[100:]:
            values = ", ".join(
                f"CAST(:{c} AS json)" if c == "meta" else f":{c}" for c in db_services.COLUMNS
            )
            params = dict(zip(db_services.COLUMNS, db_services._row(doc), strict=True))
            conn.run(f"INSERT INTO incremental_docs VALUES ({values})", **params)
    finally:
        conn.close()
    assert main(args) == 0
    err = capsys.readouterr().err
    manifest = (tmp_path / "export" / "_manifest.json").read_text()
    assert db_services.PASSWORD not in manifest + err
    generations = json.loads(manifest)["incremental"]["generations"]
    assert [g["inputs"][0]["rows"] for g in generations] == [100, 140]
