"""Database sources (pipeline.io.sql): URL masking, key ranges and values, on real servers."""

from __future__ import annotations

import math

import pytest

from pipeline.errors import UserError
from pipeline.io.records import first_records, iter_partition, plan_partitions
from pipeline.io.sql import SqlSource, database_source, is_database_url, mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:p%40ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql+pg8000://u:pw@h/db?sslmode=require",
            "postgresql+pg8000://u:***@h/db?sslmode=require",
        ),
        ("postgresql://u@h/db?password=pw&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("sqlite:////tmp/games.db", "sqlite:////tmp/games.db"),
    ],
)
def test_mask_url(url, masked):
    assert is_database_url(url) and mask_url(url) == masked
    source = database_source([url], table="t", query=None, key="id")
    assert "pw" not in repr(source) and "p%40ss" not in repr(source)


def test_files_are_no_database_urls():
    assert not any(map(is_database_url, ["s3://b/k.jsonl", "a.jsonl", "file:///x.jsonl"]))
    assert database_source(["a.jsonl"], table=None, query=None, key=None) is None


def _rows(parts):
    out = []
    for part in parts:
        for data in iter_partition(part):
            out += [(r.line, dict(r)) for r in data.records] + [
                (r["line"], r) for r in data.rejects
            ]
    return out


def test_text_keys_cut_into_ranges_that_read_every_row_once_in_order(tmp_path):
    import sqlite3

    db = tmp_path / "k.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (name TEXT PRIMARY KEY, text TEXT, n INTEGER)")
        names = [f"k{i:04d}" for i in range(500)]
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?)", [(k, "x" * 50, i) for i, k in enumerate(names[::-1])]
        )
    source = SqlSource(f"sqlite:///{db}", key="name", table="t")
    for size in (1 << 20, 3000, 100):
        parts = plan_partitions([], None, size, database=source)
        rows = _rows(parts)
        assert [r["name"] for _, r in rows] == names
        assert [line for line, _ in rows] == list(range(1, 501))
        assert parts[-1].last == "k0499"
    assert len(plan_partitions([], None, 100, database=source)) == 500
    assert len(first_records(parts).data.records) == 1


def test_postgres_values_become_json_values(postgres_server):
    conn = postgres_server.connect()
    try:
        conn.run("DROP TABLE IF EXISTS typed")
        conn.run(
            "CREATE TABLE typed (id int PRIMARY KEY, num numeric, num2 numeric, day date, "
            "ts timestamp, u uuid, arr int[], jb jsonb, f double precision, raw bytea, text text)"
        )
        conn.run(
            "INSERT INTO typed VALUES (1, 12, 1.50, '2024-01-15', '2024-01-15 10:30:00', "
            "'12345678-1234-5678-1234-567812345678', '{1,2}', '{\"b\": 1, \"a\": [1.5]}', 0.1, "
            "NULL, 'ok'), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'NaN', NULL, 'nan'), "
            "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '\\x00ff', 'bytes')"
        )
    finally:
        conn.close()
    source = SqlSource(postgres_server.url(), key="id", table="typed")
    rows = _rows(plan_partitions([], None, 1 << 20, database=source))
    assert rows[0][1] == {
        "id": 1,
        "num": 12,
        "num2": 1.5,
        "day": "2024-01-15",
        "ts": "2024-01-15T10:30:00",
        "u": "12345678-1234-5678-1234-567812345678",
        "arr": [1, 2],
        "jb": {"a": [1.5], "b": 1},
        "f": 0.1,
        "text": "ok",
    }
    assert rows[1][1]["reason"] == "unsupported_value" and "nan" in rows[1][1]["detail"].lower()
    assert rows[2][1]["reason"] == "unsupported_value" and "binary" in rows[2][1]["detail"]
    assert rows[2][1]["file"].endswith("table typed, id=3")
    assert not math.isnan(rows[0][1]["f"])


def test_an_empty_table_is_refused(tmp_path):
    import sqlite3

    db = tmp_path / "e.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER, text TEXT)")
    with pytest.raises(UserError, match="holds no rows"):
        plan_partitions(
            [], None, 1 << 20, database=SqlSource(f"sqlite:///{db}", key="id", table="t")
        )
