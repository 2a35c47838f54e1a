"""Reading records from a database table or query (SQLAlchemy), in partitions of key ranges.

A database source is a URL (``sqlite:///games.db``, ``postgresql://user:pw@host:5432/db``),
a table (``--table``) or a query (``--query``) and a key column (``--key``) whose order is the
record order. ``plan_key_ranges`` runs on the driver: it checks that the key is unique and
never NULL, estimates the size of a row from the first rows (in key order) and cuts the rows
into ranges of about ``target_bytes``: partition ``i`` owns the keys in ``[lo_i, lo_{i+1})``,
the last one ``[lo_last, max_key]``. The ranges depend only on the data and the size, never
on the number of workers, and ``max_key`` (the largest key the export reads,
:attr:`KeyRanges.max_key`) is the watermark an incremental run can start above.

Values become the record fields a JSON line would hold: integers, floats, strings and
booleans as they are, NUMERIC as an int (no fraction digits) or a float, dates and times as
ISO 8601 strings, UUIDs as strings, JSON/JSONB columns (and SQLite columns declared JSON) as
parsed JSON, arrays as lists. SQL NULL means "no value": the field is left out of the record,
as if a JSON line did not have it. A value JSON cannot hold (bytes, NaN, infinity) rejects the
row (``unsupported_value``). A record's position is ``line`` = its 1-based row number in key
order and ``offset`` = the 0-based one; its ``file`` names the source and the row's key.

The password of a URL never leaves this module in a message: :func:`mask_url` replaces it
with ``***`` and every database error is reported through :func:`_one_line`, which masks it.
"""

from __future__ import annotations

import datetime
import decimal
import math
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import TemporaryFailure, UserError
from pipeline.io.records import PartitionData, SourcedRecord, make_reject

# SQLAlchemy dialect names; ``postgres`` is the libpq spelling of ``postgresql``.
DIALECTS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")
DRIVERS = {"postgresql": "postgresql+pg8000", "postgres": "postgresql+pg8000"}
_URL = re.compile(r"^(?P<scheme>[A-Za-z][\w]*(?:\+[\w]+)?)://")
_PASSWORD = re.compile(r"^([\w+]+://[^:/]*):([^@]*)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)
SAMPLE_ROWS = 1000  # rows (the first ones in key order) that estimate the size of a row
FETCH_ROWS = 10_000  # rows handed on at a time
CONNECT_TIMEOUT_S = 10


def is_database_url(text: str) -> bool:
    """Whether ``text`` is a database URL (``sqlite:///…``, ``postgresql://…``)."""
    match = _URL.match(str(text))
    return bool(match) and match["scheme"].split("+")[0].lower() in DIALECTS


def mask_url(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@``, ``?password=``) replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1:***@", url))


@dataclass(frozen=True)
class SqlSource:
    """A table or query of a database, ordered by ``key``. ``url`` holds the password: only
    :attr:`label` and :meth:`as_params` (masked) may be shown."""

    url: str = field(repr=False)
    key: str
    table: str | None = None
    query: str | None = None
    # Incremental runs: only rows whose key is above this one (the largest key exported before).
    after: Any = None

    def __repr__(self) -> str:
        return f"SqlSource({self.label!r}, key={self.key!r})"

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @property
    def label(self) -> str:
        """Where records come from, for messages and rejects (password masked)."""
        what = f"table {self.table}" if self.table else "query"
        return f"{self.masked_url} {what}"

    def as_params(self) -> dict[str, Any]:
        """The source as recorded in a manifest (password masked)."""
        return {"url": self.masked_url, "table": self.table, "query": self.query, "key": self.key}


def database_source(
    inputs: list[str], *, table: str | None, query: str | None, key: str | None
) -> SqlSource | None:
    """The database source that ``inputs`` and ``--table``/``--query``/``--key`` name, or None
    for file inputs; one UserError listing every problem."""
    urls = [i for i in inputs if is_database_url(i)]
    if not urls:
        if table or query or key:
            flags = ", ".join(
                f for f, v in (("--table", table), ("--query", query), ("--key", key)) if v
            )
            raise UserError(
                f"{flags} needs a database URL as the input (sqlite:///games.db, "
                "postgresql://user@host/db); for files leave it out"
            )
        return None
    problems = []
    if len(inputs) != 1:
        problems.append(
            f"a database source is one URL and no other input (got {len(inputs)} inputs); "
            "export the files and the database separately"
        )
    if bool(table) == bool(query):
        problems.append("a database source needs exactly one of --table NAME or --query 'SELECT …'")
    if not key:
        problems.append(
            "a database source needs --key COLUMN: a unique column that orders the records "
            "and cuts them into partitions"
        )
    if problems:
        raise UserError("; ".join(mask_secret(p, urls[0]) for p in problems))
    return SqlSource(urls[0], key=str(key), table=table or None, query=query or None)


def mask_secret(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (as written and percent-decoded) masked."""
    from urllib.parse import unquote

    match = _PASSWORD.match(url)
    secrets = {match[2], unquote(match[2])} if match and match[2] else set()
    query = re.search(r"[?&]password=([^&]*)", url, re.IGNORECASE)
    if query and query[1]:
        secrets |= {query[1], unquote(query[1])}
    text = text.replace(url, mask_url(url))
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# -- connecting ----------------------------------------------------------------------------
_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


def _forget_engines_after_fork() -> None:
    """In a forked worker: never touch the parent's pooled connections (a connection used by
    two processes corrupts both); the child opens its own."""
    global _engines_lock
    _engines_lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_forget_engines_after_fork)


def _engine(source: SqlSource) -> Any:
    """One engine per URL and process (workers re-use its connections between tasks)."""
    with _engines_lock:
        engine = _engines.get(source.url)
        if engine is None:
            engine = _engines[source.url] = _create_engine(source)
        return engine


def _create_engine(source: SqlSource) -> Any:
    import sqlalchemy as sa

    try:
        url = sa.engine.make_url(source.url)
    except sa.exc.ArgumentError:
        raise UserError(f"{source.masked_url} is not a database URL") from None
    dialect = url.get_backend_name()
    if url.drivername in DRIVERS:
        url = url.set(drivername=DRIVERS[url.drivername])
    connect_args: dict[str, Any] = {}
    if dialect == "sqlite":
        path = url.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            raise UserError(
                f"{source.masked_url}: name a SQLite database file (sqlite:///path/to/file.db)"
            )
        if not os.path.isfile(path):
            raise UserError(f"SQLite database {path!r} does not exist; check the path")
        # Read only: an export never writes to its source.
        url = url.set(database=f"file:{os.path.abspath(path)}?mode=ro", query={"uri": "true"})
    elif dialect == "postgresql":
        connect_args["timeout"] = CONNECT_TIMEOUT_S
    try:
        return sa.create_engine(url, connect_args=connect_args)
    except ImportError as exc:
        raise UserError(
            f"no driver for {source.masked_url} ({exc.name} is not installed); dexport reads "
            "SQLite and PostgreSQL"
        ) from None


def _connect(source: SqlSource) -> Any:
    """An open connection; an unreachable server is a TemporaryFailure (exit 3), a refused
    login or a missing database a UserError (exit 2)."""
    import sqlalchemy as sa

    engine = _engine(source)
    try:
        return engine.connect()
    except sa.exc.DBAPIError as exc:
        message = _one_line(exc, source)
        if isinstance(exc, sa.exc.InterfaceError) or _unreachable(exc):
            raise TemporaryFailure(
                f"cannot reach the database {source.masked_url} ({message}); check that the "
                "server runs and the host and port are right, then retry"
            ) from None
        raise UserError(
            f"cannot open the database {source.masked_url} ({message}); check the URL, user "
            "and password"
        ) from None


def _unreachable(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return any(
        s in text
        for s in ("connection refused", "timed out", "could not connect", "name or service")
    )


def _one_line(exc: BaseException, source: SqlSource) -> str:
    """The database's own message, one line, without SQLAlchemy's footer or the password."""
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], dict):  # pg8000: {'S': 'ERROR', 'M': message, ...}
        text = args[0].get("M") or str(orig)
    else:
        text = str(orig)
    return mask_secret(" ".join(text.split()) or type(orig).__name__, source.url)


# -- what is read --------------------------------------------------------------------------
@dataclass
class _Selectable:
    """The table or query as a SQLAlchemy FROM clause, its columns and its key column."""

    source: Any
    columns: list[Any]
    key: Any
    parse_json: frozenset[str]  # SQLite columns declared JSON: stored as text, parsed here


def _selectable(conn: Any, source: SqlSource) -> _Selectable:
    import sqlalchemy as sa

    if source.table:
        schema, _, name = source.table.rpartition(".")
        try:
            table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
        except sa.exc.NoSuchTableError:
            names = sorted(sa.inspect(conn).get_table_names(schema=schema or None))
            raise UserError(
                f"{source.masked_url} has no table {source.table!r} (tables: "
                f"{', '.join(names[:20]) or 'none'}); correct --table"
            ) from None
        columns = list(table.columns)
        sqlite = conn.dialect.name == "sqlite"
        parse_json = frozenset(c.name for c in columns if sqlite and isinstance(c.type, sa.JSON))
        # SQLite keeps JSON as text: read it raw and parse it the way a JSON line is parsed.
        columns = [
            sa.type_coerce(c, sa.String).label(c.name) if c.name in parse_json else c
            for c in columns
        ]
        from_clause = table
    else:
        try:
            names = list(
                conn.execute(sa.text(f"SELECT * FROM ({source.query}) AS q LIMIT 0")).keys()
            )
        except sa.exc.DBAPIError as exc:
            raise UserError(
                f"--query failed: {_one_line(exc, source)}; correct the query"
            ) from None
        from_clause = sa.text(source.query).columns(*(sa.column(n) for n in names)).subquery("q")
        columns, parse_json = list(from_clause.columns), frozenset()
    by_name = {c.name: c for c in columns}
    if source.key not in by_name:
        raise UserError(
            f"--key {source.key!r}: {source.label} has no such column (columns: "
            f"{', '.join(list(by_name)[:30])}); name a unique column that orders the records"
        )
    key = from_clause.c[source.key]
    if source.after is not None:  # an incremental run: the rows added since the last one
        newer = sa.select(*columns).select_from(from_clause).where(key > source.after)
        from_clause = newer.subquery("newer")
        columns = list(from_clause.columns)
        key = from_clause.c[source.key]
    return _Selectable(from_clause, columns, key, parse_json)


def count_rows_up_to(source: SqlSource, last: Any) -> int:
    """Rows whose key is at most ``last`` (an incremental run checks that the rows an earlier
    run exported are still the ones there)."""
    import sqlalchemy as sa

    with _connect(source) as conn:
        try:
            sel = _selectable(conn, source)
            query = sa.select(sa.func.count()).select_from(sel.source).where(sel.key <= last)
            return int(conn.execute(query).scalar_one())
        except sa.exc.DBAPIError as exc:
            raise _key_problem(exc, source) from None


@dataclass(frozen=True)
class SqlPartition:
    """Rows of one key range: ``lo <= key < hi`` (``hi`` None: ``key <= last``); rows
    ``start .. end-1`` in key order when planned. Fields shared with file partitions:
    ``index``, ``path``, ``start``, ``end``, ``format``, ``compression``."""

    index: int
    path: str  # the source's label (password masked)
    start: int
    end: int
    source: SqlSource
    lo: Any  # first key (inclusive); None for the first partition
    hi: Any  # next partition's first key (exclusive); None for the last partition
    last: Any  # the largest key planned (the last partition stops there)
    format: str = "sql"
    compression: None = None


@dataclass
class KeyRanges:
    """Planned partitions and the key range they cover."""

    partitions: list[SqlPartition]
    rows: int
    min_key: Any
    max_key: Any


def plan_key_ranges(source: SqlSource, target_bytes: int, first_row: int = 0) -> KeyRanges:
    """Cut the rows into key ranges of about ``target_bytes`` each (see the module notes);
    rows are numbered from ``first_row`` (an incremental run continues the earlier ones').
    An incremental source (``after`` set) without new rows gives no partition."""
    import sqlalchemy as sa

    if target_bytes <= 0:
        raise UserError(f"the partition size must be positive (got {target_bytes})")
    with _connect(source) as conn:
        try:
            sel = _selectable(conn, source)
            key = sel.key
            stats = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count(key),
                    sa.func.count(sa.distinct(key)),
                    sa.func.min(key),
                    sa.func.max(key),
                ).select_from(sel.source)
            ).one()
        except sa.exc.DBAPIError as exc:
            raise _key_problem(exc, source) from None
        rows, non_null, distinct, min_key, max_key = stats
        problems = []
        if rows == 0 and source.after is not None:
            return KeyRanges([], 0, None, None)
        if rows == 0:
            raise UserError(f"{source.label} holds no rows; nothing to export")
        if non_null < rows:
            problems.append(f"{rows - non_null:,} rows have no key (NULL)")
        if distinct < non_null:
            problems.append(f"{non_null - distinct:,} rows repeat a key")
        if problems:
            raise UserError(
                f"--key {source.key!r} of {source.label} must be unique and never NULL, but "
                f"{' and '.join(problems)}; pick a unique key so the record order is defined"
            )
        sample = conn.execute(
            sa.select(*sel.columns).select_from(sel.source).order_by(key).limit(SAMPLE_ROWS)
        ).fetchall()
        row_bytes = max(1, sum(len(_row_text(r)) for r in sample) // max(1, len(sample)))
        per_part = max(1, target_bytes // row_bytes)
        starts = [min_key]
        if rows > per_part:
            numbered = sa.select(
                key.label("k"), sa.func.row_number().over(order_by=key).label("n")
            ).subquery()
            starts = list(
                conn.execute(
                    sa.select(numbered.c.k)
                    .where((numbered.c.n - 1) % per_part == 0)
                    .order_by(numbered.c.k)
                ).scalars()
            )
    partitions = []
    for i, lo in enumerate(starts):
        last = i == len(starts) - 1
        partitions.append(
            SqlPartition(
                index=i,
                path=source.label,
                start=first_row + i * per_part,
                end=first_row + (rows if last else (i + 1) * per_part),
                source=source,
                lo=None if i == 0 else lo,
                hi=None if last else starts[i + 1],
                last=max_key,
            )
        )
    return KeyRanges(partitions, rows, min_key, max_key)


def _key_problem(exc: BaseException, source: SqlSource) -> UserError:
    message = _one_line(exc, source)
    if "ordering operator" in message or "could not identify" in message:
        return UserError(
            f"--key {source.key!r} of {source.label} cannot be ordered ({message}); name a "
            "column of numbers, text or dates"
        )
    return UserError(f"cannot read {source.label} ({message})")


def _row_text(row: Any) -> bytes:
    return orjson.dumps([v for v in row if v is not None], default=str)


# -- reading -------------------------------------------------------------------------------
def iter_key_range(part: SqlPartition, limit: int | None = None) -> Iterator[PartitionData]:
    """The records of one key range, in key order, in batches of :data:`FETCH_ROWS` rows
    (``limit``: only the first rows)."""
    import sqlalchemy as sa

    source = part.source
    with _connect(source) as conn:
        try:
            sel = _selectable(conn, source)
            query = sa.select(*sel.columns).select_from(sel.source)
            if part.lo is not None:
                query = query.where(sel.key >= part.lo)
            query = query.where(sel.key < part.hi if part.hi is not None else sel.key <= part.last)
            query = query.order_by(sel.key)
            if limit is not None:
                query = query.limit(limit)
            result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(
                query
            )
            names = [str(n) for n in result.keys()]  # plain str: orjson refuses subclasses
            row_no = part.start
            for rows in result.partitions(FETCH_ROWS):
                out = PartitionData()
                for row in rows:
                    _add_row(out, names, row, row_no, part, sel.parse_json)
                    row_no += 1
                yield out
        except sa.exc.DBAPIError as exc:
            raise TemporaryFailure(
                f"reading {part.path} rows {part.start}..{part.end - 1} failed "
                f"({_one_line(exc, source)}); retry"
            ) from None


def _add_row(
    out: PartitionData,
    names: list[str],
    row: Any,
    row_no: int,
    part: SqlPartition,
    parse_json: frozenset[str],
) -> None:
    record: dict[str, Any] = {}
    problem = None
    key = None
    for name, value in zip(names, row, strict=True):
        if name == part.source.key:
            key = value
        if value is None:
            continue  # NULL: no value, as a field a JSON line leaves out
        if name in parse_json:
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                problem = problem or ("invalid_json", f"column {name!r}: {exc}")
                continue
        try:
            record[name] = json_value(value)
        except ValueError as exc:
            problem = problem or ("unsupported_value", f"column {name!r}: {exc}")
    where = f"{part.path}, {part.source.key}={key!r}"
    if problem is not None:
        raw = orjson.dumps(record, default=str).decode()
        out.rejects.append(make_reject(where, row_no + 1, row_no, problem[0], problem[1], raw))
    else:
        out.records.append(SourcedRecord(record, where, row_no + 1, row_no))


def json_value(value: Any) -> Any:
    """A database value as the JSON value a JSON line would hold (ValueError: none fits)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        exponent = value.as_tuple().exponent
        return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        raise ValueError("binary data (BLOB/bytea) has no JSON form; leave the column out")
    raise ValueError(f"a {type(value).__name__} has no JSON form; cast it to text in --query")
