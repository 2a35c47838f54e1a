"""Writers of corpus records (JSONL, Parquet) onto an open binary handle.

Sinks know nothing of sources: a writer gets output records (plain dicts in schema order) and
a handle, and produces bytes that depend only on those records (orjson keeps key order and
prints floats the shortest way that round-trips; gzip/zstd streams carry no timestamps;
Parquet files carry no write time).
"""

from __future__ import annotations

from typing import IO, Any

import orjson

from pipeline.io.compression import compressed, suffix

FORMATS = ("jsonl", "parquet")
PARQUET_CODEC = "zstd"  # the codec of part files; assemble.join_parquet joins with zstd too
WRITE_BATCH = 512  # records per write call


def extension(fmt: str, compression: str | None) -> str:
    """File-name extension of data files: ``.jsonl``, ``.jsonl.gz``, ``.parquet`` …"""
    return ".parquet" if fmt == "parquet" else f".jsonl{suffix(compression)}"


def write_jsonl(handle: IO[bytes], records: list[dict], compression: str | None = None) -> None:
    """One JSON object per line, UTF-8 (not \\u-escaped), ``\\n`` after every record."""
    with compressed(handle, compression) as out:
        _write_lines(out, records)


def _write_lines(out: IO[bytes], records: list[dict]) -> None:
    dumps = orjson.dumps
    # Batches of lines: one write per batch, without building the whole part in memory.
    for start in range(0, len(records), WRITE_BATCH):
        out.write(
            b"".join(
                [
                    dumps(r, option=orjson.OPT_APPEND_NEWLINE)
                    for r in records[start : start + WRITE_BATCH]
                ]
            )
        )


class JsonlSink:
    """A JSONL part written batch by batch (same bytes as :func:`write_jsonl` of all records)."""

    def __init__(self, handle: IO[bytes], compression: str | None = None) -> None:
        self._context = compressed(handle, compression)
        self._out = self._context.__enter__()

    def write(self, records: list[dict]) -> None:
        _write_lines(self._out, records)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


class ParquetSink:
    """A Parquet part written batch by batch: one row group per non-empty batch, so a part of
    one batch has the bytes of :func:`write_parquet` of its records."""

    def __init__(self, handle: IO[bytes], arrow_schema: Any, json_paths: list[str] = ()) -> None:
        self._handle, self._schema, self._json_paths = handle, arrow_schema, list(json_paths)
        self._writer: Any = None

    def write(self, records: list[dict]) -> None:
        if records:
            self._write(records)

    def _write(self, records: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._json_paths and records:
            paths = [p.split(".") for p in self._json_paths]
            records = [_json_encode(rec, paths) for rec in records]
        table = pa.Table.from_pylist(records, schema=self._schema)
        if self._writer is None:
            sink = pa.PythonFile(_WriteOnly(self._handle), mode="w")
            self._writer = pq.ParquetWriter(sink, self._schema, compression=PARQUET_CODEC)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is None:
            self._write([])  # an empty part is still a valid Parquet file (one empty row group)
        self._writer.close()


class _WriteOnly:
    """The file object pyarrow wants (``tell``, ``closed``) over a write-only handle."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle, self._position, self.closed = handle, 0, False

    def write(self, data: Any) -> int:
        self._handle.write(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def write_parquet(
    handle: IO[bytes], records: list[dict], arrow_schema: Any, json_paths: list[str] = ()
) -> None:
    """One Parquet file with the schema's column types (nested paths are structs).

    ``json_paths`` name fields of type ``any``: their values are written as JSON text, since a
    Parquet column has one type.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if json_paths and records:
        records = [_json_encode(rec, [p.split(".") for p in json_paths]) for rec in records]
    table = pa.Table.from_pylist(records, schema=arrow_schema)
    # Written to memory first: pyarrow wants a seekable file object with ``closed``, and the
    # handle may be a hashing wrapper or an S3 stream. A part is bounded by the chunk size.
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression=PARQUET_CODEC)
    handle.write(memoryview(buffer.getvalue()))


def _json_encode(rec: dict, paths: list[list[str]]) -> dict:
    rec = dict(rec)  # copies along the paths only: the caller's records stay untouched
    for path in paths:
        node = rec
        for key in path[:-1]:
            node[key] = dict(node[key])
            node = node[key]
        value = node.get(path[-1])
        if value is not None and not isinstance(value, str):
            node[path[-1]] = orjson.dumps(value).decode()
    return rec
