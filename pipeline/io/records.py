"""Reading corpus files (JSONL, gzip/zstd JSONL, Parquet; local or S3) in bounded partitions.

``plan_partitions`` lists the input files once, on the driver, and cuts them into units of
reading work of about ``target_bytes`` each, in one global order that depends only on the
inputs (never on the number of workers):

- uncompressed JSONL: byte ranges ``[start, end)``. A range owns the lines that *start* inside
  it (the split-by-bytes rule of Hadoop and Dask): a reader skips the partial line at its start
  and finishes the line that crosses its end, so every line is read exactly once.
- compressed JSONL (``.gz``, ``.zst``): streams cannot be entered in the middle, so one file is
  one partition (``start=0``, ``end`` = compressed size). Keep compressed files to a size a
  worker can hold.
- Parquet: runs of whole row groups ``[start, end)`` (row-group indices).

``read_partition`` parses one partition. A line that is not a JSON object never stops a run: it
becomes a reject ``{"file", "line", "offset", "reason", "detail", "raw"}``. Records are
:class:`SourcedRecord` dicts that also carry ``file``, ``line`` and ``offset`` attributes, so a
later stage can reject them with their position. Positions:

- ``offset``: byte offset of the line start in the (uncompressed) file, or the 0-based row index
  in a Parquet file. Always known; unique within a file and independent of the partitioning.
- ``line``: 1-based line (or Parquet row) number. It is ``None`` for a byte range that starts
  inside a large uncompressed file: the worker does not read the bytes before its range, so it
  cannot count the lines there. ``offset`` still identifies the line.

Blank (whitespace-only) lines are not records; they are counted (``blank_lines``) so the
accounting ``lines = records + rejects + blank_lines`` holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import UserError
from pipeline.io.compression import compression_from_name, open_decompressed
from pipeline.io.storage import is_local, resolve

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
GLOB_CHARS = "*?["
EXTEND_STEP = 1 << 16  # bytes read at a time to finish the line crossing a range end


@dataclass(frozen=True)
class InputPartition:
    """One unit of reading work; ``index`` is its place in the global, deterministic order."""

    index: int
    path: str  # local absolute path or URL (s3://bucket/key)
    format: str  # "jsonl" | "parquet"
    compression: str | None  # "gzip" | "zstd" | None
    start: int  # byte (uncompressed jsonl), row group (parquet), 0 (compressed jsonl)
    end: int  # exclusive; compressed jsonl: the compressed file size


class SourcedRecord(dict):
    """A parsed record (a plain ``dict`` for every purpose) that knows where it came from."""

    __slots__ = ("file", "line", "offset")

    def __init__(self, data: dict, file: str, line: int | None, offset: int) -> None:
        super().__init__(data)
        self.file = file
        self.line = line
        self.offset = offset

    def __reduce__(self) -> tuple:
        return (SourcedRecord, (dict(self), self.file, self.line, self.offset))


@dataclass
class PartitionData:
    """Everything read from one partition: records, rejects and the line accounting."""

    records: list[SourcedRecord] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    blank_lines: int = 0

    @property
    def lines(self) -> int:
        """Lines (or rows) this partition owns: records + rejects + blank lines."""
        return len(self.records) + len(self.rejects) + self.blank_lines


def file_format(name: str) -> tuple[str, str | None] | None:
    """``(format, compression)`` of a data file name, or None when it is not one."""
    compression = compression_from_name(name)
    base = name.removesuffix(".gz").removesuffix(".zst").lower()
    if base.endswith(JSONL_SUFFIXES):
        return "jsonl", compression
    if base.endswith(PARQUET_SUFFIXES) and compression is None:
        return "parquet", None
    return None


# -- planning ------------------------------------------------------------------------------
def list_input_files(
    inputs: list[str], storage_options: dict | None = None
) -> list[tuple[Any, str, str]]:
    """``(fs, fs_path, url)`` of every data file named by ``inputs``, sorted by URL, unique.

    Inputs are files, directories (searched recursively, skipping names that start with ``.``
    or ``_``, and a corpus export's ``rejects/``) or glob patterns. Raises one UserError
    naming every input that matches nothing or names a file of unknown type.
    """
    found: dict[str, tuple[Any, str]] = {}
    problems: list[str] = []
    for item in inputs:
        fs, path = resolve(item, storage_options)
        try:
            if any(ch in item for ch in GLOB_CHARS):
                matches = sorted(fs.glob(path))
                files = [f for m in matches for f in _files_under(fs, m)]
                if not files:
                    problems.append(
                        f"input {item!r} matches no .jsonl/.jsonl.gz/.jsonl.zst/.parquet file"
                    )
            elif fs.isdir(path):
                files = _files_under(fs, path)
                if not files:
                    problems.append(
                        f"input directory {item!r} holds no .jsonl/.jsonl.gz/.jsonl.zst/.parquet "
                        "file"
                    )
            elif fs.isfile(path):
                if file_format(path) is None:
                    problems.append(
                        f"input {item!r} is not a known file type; name it .jsonl, .jsonl.gz, "
                        ".jsonl.zst or .parquet"
                    )
                files = [path]
            else:
                problems.append(f"input {item!r} does not exist")
                files = []
        except PermissionError as exc:
            problems.append(
                f"no permission to read {item!r} ({exc}); check credentials or --storage-options"
            )
            files = []
        for f in files:
            found[_url(fs, f)] = (fs, f)
    if problems:
        raise UserError("; ".join(problems))
    return [(fs, p, url) for url, (fs, p) in sorted(found.items())]


def _url(fs: Any, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)


def _files_under(fs: Any, path: str) -> list[str]:
    if not fs.isdir(path):
        return [path] if file_format(path) else []
    export = fs.exists(f"{path.rstrip('/')}/dataset_stats.json")
    out = []
    for f in fs.find(path, withdirs=False):
        rel = f[len(path.rstrip("/")) + 1 :]
        parts = rel.split("/")
        if any(p.startswith((".", "_")) for p in parts):
            continue
        if export and parts[0] == "rejects":
            continue  # a corpus export's rejects are not part of its data
        if file_format(f):
            out.append(f)
    return sorted(out)


def plan_partitions(
    inputs: list[str], storage_options: dict | None = None, target_bytes: int = 64 << 20
) -> list[InputPartition]:
    """Cut the input files into partitions of about ``target_bytes`` (see the module notes)."""
    if target_bytes <= 0:
        raise UserError(f"the partition size must be positive (got {target_bytes})")
    parts: list[InputPartition] = []
    for fs, path, url in list_input_files(inputs, storage_options):
        fmt, compression = file_format(path)
        size = fs.size(path)
        if fmt == "parquet":
            ranges = _row_group_ranges(fs, path, target_bytes)
        elif compression is not None:
            ranges = [(0, size)]
        else:
            ranges = [(s, min(s + target_bytes, size)) for s in range(0, size, target_bytes)]
        for start, end in ranges:
            parts.append(InputPartition(len(parts), url, fmt, compression, start, end))
    return parts


def _row_group_ranges(fs: Any, path: str, target_bytes: int) -> list[tuple[int, int]]:
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends for a corrupt footer
        raise UserError(
            f"cannot read Parquet file {path!r} ({' '.join(str(exc).split())}); check that it is a "
            "complete Parquet file"
        ) from None
    ranges, start, size = [], 0, 0
    for i in range(meta.num_row_groups):
        size += meta.row_group(i).total_byte_size
        if size >= target_bytes:
            ranges.append((start, i + 1))
            start, size = i + 1, 0
    if start < meta.num_row_groups:
        ranges.append((start, meta.num_row_groups))
    return ranges


# -- reading -------------------------------------------------------------------------------
def read_partition(
    part: InputPartition, storage_options: dict | None = None
) -> tuple[list[dict], list[dict]]:
    """``(records, rejects)`` of one partition (see :func:`read_partition_data`)."""
    data = read_partition_data(part, storage_options)
    return data.records, data.rejects


def read_partition_data(part: InputPartition, storage_options: dict | None = None) -> PartitionData:
    """Parse one partition into records, rejects and a count of blank lines."""
    fs, path = resolve(part.path, storage_options)
    if part.format == "parquet":
        return _read_parquet(fs, path, part)
    if part.compression is not None:
        with fs.open(path, "rb") as raw, open_decompressed(raw, part.compression) as stream:
            data = stream.read()
        return parse_lines(data, part.path, base=0, first_line=1)
    data, base = _read_byte_range(fs, path, part.start, part.end)
    return parse_lines(data, part.path, base=base, first_line=1 if part.start == 0 else None)


def _read_byte_range(fs: Any, path: str, start: int, end: int) -> tuple[bytes, int]:
    """Bytes of the lines starting in ``[start, end)`` and the file offset of the first one."""
    if start >= end:
        return b"", start
    if start == 0:
        data, base = fs.cat_file(path, start=0, end=end), 0
    else:
        # The byte before ``start`` tells whether a line starts exactly at ``start``.
        head = fs.cat_file(path, start=start - 1, end=end)
        cut = head.find(b"\n")
        if cut < 0:
            return b"", start  # the whole range lies inside one line owned by an earlier range
        data, base = head[cut + 1 :], start + cut
    if not data or data.endswith(b"\n"):
        return data, base
    tail = [data]
    position = end
    while True:
        chunk = fs.cat_file(path, start=position, end=position + EXTEND_STEP)
        if not chunk:
            break
        cut = chunk.find(b"\n")
        if cut >= 0:
            tail.append(chunk[: cut + 1])
            break
        tail.append(chunk)
        position += len(chunk)
    return b"".join(tail), base


def parse_lines(data: bytes, file: str, *, base: int, first_line: int | None) -> PartitionData:
    """Parse JSON lines; ``base`` is the file offset of ``data[0]``."""
    out = PartitionData()
    records, rejects = out.records, out.rejects
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    offset = base
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, raw in enumerate(lines):
        line_no = None if first_line is None else first_line + i
        here, offset = offset, offset + len(raw) + 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw or raw.isspace():
            out.blank_lines += 1
            continue
        try:
            value = loads(raw)
        except decode_error as exc:
            reason, detail = _classify_bad_line(raw, exc)
            rejects.append(make_reject(file, line_no, here, reason, detail, _raw_text(raw)))
            continue
        if type(value) is not dict:
            rejects.append(
                make_reject(
                    file,
                    line_no,
                    here,
                    "not_an_object",
                    f"a JSON {type(value).__name__} is not a record",
                    _raw_text(raw),
                )
            )
            continue
        records.append(SourcedRecord(value, file, line_no, here))
    return out


def _classify_bad_line(raw: bytes, exc: Exception) -> tuple[str, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return (
            "invalid_utf8",
            f"invalid UTF-8 at byte {err.start} of the line ({err.reason}): a truncated or corrupt "
            "character",
        )
    try:
        json.loads(text)
    except ValueError:
        return "invalid_json", " ".join(str(exc).split())
    # Python's parser accepts lone surrogate escapes (\ud800) that no UTF-8 file can hold.
    return (
        "invalid_unicode",
        f"a string holds an unpaired surrogate escape ({' '.join(str(exc).split())})",
    )


def _raw_text(raw: bytes) -> str:
    # backslashreplace keeps undecodable bytes visible (\xe2) instead of silently replacing them.
    return raw.decode("utf-8", errors="backslashreplace")


def make_reject(
    file: str, line: int | None, offset: int | None, reason: str, detail: str, raw: str
) -> dict[str, Any]:
    """A reject record (the layout of ``rejects/`` files)."""
    return {
        "file": file,
        "line": line,
        "offset": offset,
        "reason": reason,
        "detail": detail,
        "raw": raw,
    }


def record_text(record: dict) -> str:
    """Serialise an input record for a reject's ``raw`` (valid JSON even with lone surrogates)."""
    try:
        return orjson.dumps(record).decode()
    except TypeError:
        return json.dumps(record, ensure_ascii=True, default=str)


def _read_parquet(fs: Any, path: str, part: InputPartition) -> PartitionData:
    import pyarrow.parquet as pq

    out = PartitionData()
    with fs.open(path, "rb") as handle:
        reader = pq.ParquetFile(handle)
        meta = reader.metadata
        first_row = sum(meta.row_group(i).num_rows for i in range(part.start))
        table = reader.read_row_groups(list(range(part.start, part.end)))
    for i, row in enumerate(table.to_pylist()):
        offset = first_row + i
        out.records.append(SourcedRecord(row, part.path, offset + 1, offset))
    return out
