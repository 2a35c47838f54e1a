"""Database sources: each mistake is one line and exit 2, an unreachable server exit 3, and
the password never appears in any message, output file or log."""

from __future__ import annotations

import time

import db_services
import pytest
from services import free_ports

from pipeline.cli import main


@pytest.fixture(scope="module")
def pg_url(postgres_server) -> str:
    docs = db_services.documents(40)
    url = db_services.write_postgres(postgres_server, docs, "mistake_docs")
    conn = postgres_server.connect()
    try:
        conn.run("DROP TABLE IF EXISTS odd_keys")
        conn.run("CREATE TABLE odd_keys (id int, j json, text text)")
        conn.run(
            """INSERT INTO odd_keys VALUES (1, '{"a": 1}', 'x'), (1, '[]', 'y'), (NULL, '2', 'z')"""
        )
    finally:
        conn.close()
    return url


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dexport: error: "), captured.err
    assert db_services.PASSWORD not in captured.out + captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--table", "no_such_table", "--key", "id"], r"has no table 'no_such_table' \(tables: "),
        (["--table", "mistake_docs", "--key", "nope"], r"--key 'nope': .* has no such column"),
        (["--query", "SELEC id FROM mistake_docs", "--key", "id"], r"--query failed: .*syntax"),
        (["--query", "SELECT * FROM missing_t", "--key", "id"], r"--query failed: .*missing_t"),
        (["--table", "odd_keys", "--key", "j"], r"--key 'j' .* cannot be ordered"),
        (["--table", "odd_keys", "--key", "id"], r"must be unique and never NULL, but 1 rows"),
        (["--table", "mistake_docs"], r"needs --key COLUMN"),
        (["--key", "id"], r"needs exactly one of --table NAME or --query"),
    ],
)
def test_bad_database_input_is_one_line_and_exit_2(flags, message, pg_url, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["corpus", pg_url, "--out", str(out), *flags]) == 2
    assert __import__("re").search(message, _one_error(capsys))
    assert not out.exists()


def test_wrong_password_is_exit_2_and_masked(postgres_server, tmp_path, capsys):
    url = postgres_server.url(password="Wr0ng-" + db_services.PASSWORD)
    out = tmp_path / "out"
    assert main(["corpus", url, "--table", "t", "--key", "id", "--out", str(out)]) == 2
    line = _one_error(capsys)
    assert "cannot open the database postgresql://dexport:***@" in line
    assert "Wr0ng" not in line


def test_unreachable_server_is_exit_3_within_seconds(tmp_path, capsys):
    url = f"postgresql://dexport:{db_services.PASSWORD}@127.0.0.1:{free_ports(1)[0]}/games"
    started = time.monotonic()
    args = ["--table", "t", "--key", "id", "--tokenizer", "tok", "--out", str(tmp_path / "ds")]
    code = main(["encode", url, *args])
    assert code == 3 and time.monotonic() - started < 15
    assert "cannot reach the database postgresql://dexport:***@127.0.0.1:" in _one_error(capsys)


def test_sqlite_mistakes(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    assert (
        main(["corpus", f"sqlite:///{missing}", "--table", "t", "--key", "id", "--out", "o"]) == 2
    )
    assert "does not exist" in _one_error(capsys)
    assert not missing.exists()  # never created
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "x"}\n')
    assert main(["corpus", str(jsonl), "--table", "t", "--out", str(tmp_path / "o")]) == 2
    assert "--table needs a database URL" in _one_error(capsys)


def test_the_password_is_in_no_output_file_or_log(pg_url, tmp_path, capsys):
    out = tmp_path / "export"
    args = [
        "corpus",
        pg_url,
        "--table",
        "mistake_docs",
        "--key",
        "id",
        "--out",
        str(out),
        "--chunk-size",
    ]
    assert main([*args, "2k"]) == 0
    assert main([*args, "2k", "--resume"]) == 0
    captured = capsys.readouterr()
    assert "postgresql://dexport:***@" in (out / "README.md").read_text()  # the Reproduce line
    assert "postgresql://dexport:***@" in (out / "_manifest.json").read_text()
    assert db_services.PASSWORD not in captured.out + captured.err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        assert db_services.PASSWORD.encode() not in path.read_bytes(), path
