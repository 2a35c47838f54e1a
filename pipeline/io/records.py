"""Reading corpus files (JSONL, gzip/zstd JSONL, Parquet; local or S3) in bounded partitions.

``plan_partitions`` lists the input files once, on the driver, and cuts them into units of
reading work of about ``target_bytes`` each, in one global order that depends only on the
inputs (never on the number of workers):

- uncompressed JSONL: byte ranges ``[start, end)``. A range owns the lines that *start* inside
  it (the split-by-bytes rule of Hadoop and Dask): a reader skips the partial line at its start
  and finishes the line that crosses its end, so every line is read exactly once.
- compressed JSONL (``.gz``, ``.zst``): a gzip stream cannot be entered in the middle, so a gzip
  file is one partition (``start=0``, ``end`` = compressed size), read by one sequential reader.
  A zstd file whose frames can be found cheaply (a seek table, or frame headers that record
  their sizes, see :mod:`pipeline.io.frames`) is cut at frame starts into partitions of about
  ``target_bytes`` of *decompressed* text (``start``/``end`` compressed offsets of the first
  frame and of the next partition's, ``ustart``/``uend`` their decompressed offsets); a
  partition owns the lines that start in ``(ustart, uend]`` (the first one ``[0, uend]``), so
  it never needs the byte before its first frame. Any other zstd file is one partition.
  Compressed data is read in blocks and decompressed in bounded pieces, and records are
  handed on in batches of about :data:`STREAM_BATCH` bytes of text, so memory does not grow
  with the file; a stream that is truncated or corrupt raises
  :class:`~pipeline.errors.CorruptInput` naming the file and the byte offset.
- Parquet: runs of whole row groups ``[start, end)`` (row-group indices).
- A database table or query (:mod:`pipeline.io.sql`): key ranges, read in key order.

``iter_partition`` parses one partition in batches (``read_partition`` returns it whole). A
line that is not a JSON object never stops a run: it becomes a reject ``{"file", "line",
"offset", "reason", "detail", "raw"}`` (a record nested deeper than orjson can write back,
:data:`MAX_DEPTH` levels, too: ``nested_too_deep``). Records are :class:`SourcedRecord`
dicts that also carry ``file``, ``line`` and ``offset`` attributes, so a later stage can
reject them with their position. Positions:

- ``offset``: byte offset of the line start in the (uncompressed) file, or the 0-based row index
  in a Parquet file. Always known; unique within a file and independent of the partitioning.
- ``line``: 1-based line (or Parquet row) number. It is ``None`` for a byte range that starts
  inside a large uncompressed file, or a zstd partition that starts after the first frame: the
  worker does not read the bytes before its range, so it cannot count the lines there.
  ``offset`` still identifies the line.

Blank (whitespace-only) lines are not records; they are counted (``blank_lines``) so the
accounting ``lines = records + rejects + blank_lines`` holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import CorruptInput, UserError
from pipeline.io.compression import compression_from_name, iter_decompressed, read_blocks
from pipeline.io.frames import frame_starts
from pipeline.io.storage import is_local, is_utf8_name, resolve

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
GLOB_CHARS = "*?["
EXTEND_STEP = 1 << 16  # bytes read at a time to finish the line crossing a range end
STREAM_BATCH = 16 << 20  # text bytes of a compressed stream parsed (and handed on) at a time
STREAM_BLOCK = 8 << 20  # block size of remote files read as a stream
SAMPLE_BYTES = 4 << 20  # text read from the first partition to check field names
PARQUET_SAMPLE_ROWS = 1000  # rows read from the first row group to check field names
MAX_DEPTH = 254  # deepest nesting orjson can write back (it refuses 255 levels)


@dataclass(frozen=True)
class InputPartition:
    """One unit of reading work; ``index`` is its place in the global, deterministic order."""

    index: int
    path: str  # local absolute path or URL (s3://bucket/key)
    format: str  # "jsonl" | "parquet"
    compression: str | None  # "gzip" | "zstd" | None
    start: int  # byte (uncompressed jsonl), row group (parquet), compressed byte (zstd frame)
    end: int  # exclusive; compressed jsonl: the compressed offset where the next partition starts
    ustart: int = 0  # compressed jsonl: decompressed offset of ``start``
    uend: int = -1  # compressed jsonl: last decompressed line start owned (-1: to the end)


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
            if is_utf8_name(f):
                found[_url(fs, f)] = (fs, f)
            else:  # manifests and statistics name their inputs in UTF-8 JSON
                problems.append(
                    f"input file {f!r} has a name that is not valid UTF-8; rename it (or link it "
                    "under a UTF-8 name)"
                )
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
    inputs: list[str],
    storage_options: dict | None = None,
    target_bytes: int = 64 << 20,
    *,
    database: Any = None,
) -> list[Any]:
    """Cut the input files into partitions of about ``target_bytes`` (see the module notes);
    with ``database`` (a :class:`pipeline.io.sql.SqlSource`) its rows into key ranges
    (:class:`pipeline.io.sql.SqlPartition`, read by the same functions)."""
    if target_bytes <= 0:
        raise UserError(f"the partition size must be positive (got {target_bytes})")
    if database is not None:
        from pipeline.io.sql import plan_key_ranges

        return list(plan_key_ranges(database, target_bytes).partitions)
    parts: list[InputPartition] = []
    for fs, path, url in list_input_files(inputs, storage_options):
        fmt, compression = file_format(path)
        size = fs.size(path)
        if fmt == "parquet":
            ranges = _row_group_ranges(fs, path, target_bytes)
        elif compression == "zstd":
            ranges = _frame_ranges(fs, path, size, target_bytes)
        elif compression is not None:
            ranges = [(0, size)]
        else:
            ranges = [(s, min(s + target_bytes, size)) for s in range(0, size, target_bytes)]
        for start, end, *offsets in ranges:
            parts.append(InputPartition(len(parts), url, fmt, compression, start, end, *offsets))
    return parts


def _frame_ranges(fs: Any, path: str, size: int, target_bytes: int) -> list[tuple[int, ...]]:
    """Groups of whole zstd frames of about ``target_bytes`` decompressed bytes each.

    Only files of more than ``target_bytes / 8`` compressed bytes are looked at (a smaller one
    rarely holds more than one partition of text), so small inputs stay one partition; on an
    object store, where looking costs a request, only files larger than ``target_bytes``.
    """
    whole = [(0, size)]
    local = is_local(fs)
    if size * 8 <= target_bytes or (not local and size <= target_bytes):
        return whole
    frames = frame_starts(fs, path, size, local=local)
    if frames is None:
        return whole
    cuts = [0]
    for i, (_, uoff) in enumerate(frames[1:-1], start=1):
        if uoff - frames[cuts[-1]][1] >= target_bytes:
            cuts.append(i)
    if len(cuts) < 2:
        return whole
    ranges: list[tuple[int, ...]] = []
    for k, i in enumerate(cuts):
        last = k == len(cuts) - 1
        start, ustart = (0, 0) if k == 0 else frames[i]
        end, uend = (size, -1) if last else frames[cuts[k + 1]]
        ranges.append((start, end, ustart, uend))
    return ranges


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
    """Parse one partition into records, rejects and a count of blank lines (all at once)."""
    out = PartitionData()
    for batch in iter_partition(part, storage_options):
        out.records += batch.records
        out.rejects += batch.rejects
        out.blank_lines += batch.blank_lines
    return out


def iter_partition(
    part: InputPartition, storage_options: dict | None = None, batch_bytes: int | None = None
) -> Iterator[PartitionData]:
    """Parse one partition in batches, in file order.

    Uncompressed byte ranges and Parquet row groups are one batch (they are bounded by the
    partition size); compressed streams are batches of about ``batch_bytes`` (default
    :data:`STREAM_BATCH`) bytes of text.
    """
    batch_bytes = batch_bytes or STREAM_BATCH
    if part.format == "sql":
        from pipeline.io.sql import iter_key_range

        yield from iter_key_range(part)
        return
    fs, path = resolve(part.path, storage_options)
    if part.format == "parquet":
        yield _read_parquet(fs, path, part)
    elif part.compression is not None:
        yield from _read_stream(fs, path, part, batch_bytes)
    else:
        data, base = _read_byte_range(fs, path, part.start, part.end)
        yield parse_lines(data, part.path, base=base, first_line=1 if part.start == 0 else None)


def sample_partition(
    part: InputPartition, storage_options: dict | None = None, max_bytes: int = SAMPLE_BYTES
) -> tuple[PartitionData, bool]:
    """The records of about the first ``max_bytes`` of a partition (a cheap look at its
    fields), and whether that was the whole partition."""
    if part.format == "sql":
        from pipeline.io.sql import iter_key_range

        data = PartitionData()
        for batch in iter_key_range(part, limit=PARQUET_SAMPLE_ROWS):
            data.records += batch.records
            data.rejects += batch.rejects
        return data, data.lines < PARQUET_SAMPLE_ROWS
    fs, path = resolve(part.path, storage_options)
    if part.format == "parquet":
        data = _read_parquet(fs, path, part, first_only=True)
        return data, part.end - part.start <= 1 and len(data.records) < PARQUET_SAMPLE_ROWS
    if part.compression is not None:
        batches = _read_stream(fs, path, part, max_bytes)
        try:
            first = next(batches, PartitionData())
            return first, next(batches, None) is None
        finally:
            batches.close()
    stop = min(part.end, part.start + max_bytes)
    data, base = _read_byte_range(fs, path, part.start, stop)
    first_line = 1 if part.start == 0 else None
    return parse_lines(data, part.path, base=base, first_line=first_line), stop == part.end


@dataclass
class Sample:
    """The first records of the input (see :func:`first_records`)."""

    data: PartitionData  # records of the first partition that has any (its first part)
    file: str | None  # where they come from
    empty: bool  # every partition was read whole and holds no line but blank ones


def first_records(
    partitions: list[InputPartition],
    storage_options: dict | None = None,
    *,
    max_partitions: int = 16,
    max_bytes: int = SAMPLE_BYTES,
) -> Sample:
    """The records at the start of the first partition that has any, read on the driver.

    Looks at up to ``max_partitions`` partitions (``max_bytes`` of text each): enough to check
    field names and to notice an input of blank lines, for the cost of one small read.
    """
    empty = True
    for i, part in enumerate(partitions):
        if i == max_partitions:
            return Sample(PartitionData(), None, False)
        data, whole = sample_partition(part, storage_options, max_bytes)
        if data.records:
            return Sample(data, part.path, False)
        empty = empty and whole and not data.rejects
    return Sample(PartitionData(), None, empty)


def _read_stream(
    fs: Any, path: str, part: InputPartition, batch_bytes: int
) -> Iterator[PartitionData]:
    options = {} if is_local(fs) else {"block_size": STREAM_BLOCK}
    with fs.open(path, "rb", **options) as raw:
        if part.start:
            raw.seek(part.start)
        pieces = iter_decompressed(read_blocks(raw), part.compression, part.path, offset=part.start)
        try:
            yield from _batches_of_lines(pieces, part, batch_bytes)
        finally:
            pieces.close()


def _batches_of_lines(
    pieces: Iterable[bytes], part: InputPartition, batch_bytes: int
) -> Iterator[PartitionData]:
    """Batches of the whole lines a stream partition owns (see the module notes)."""
    limit = None if part.uend < 0 else part.uend
    skip = part.ustart > 0  # the line crossing ``ustart`` (or starting there) is not ours
    base = part.ustart  # decompressed offset of ready[0]
    first_line = None if skip else 1
    ready: list[bytes] = []  # whole lines not parsed yet
    carry: list[bytes] = []  # the start of the line not finished yet
    ready_bytes = carry_bytes = 0

    def batch(data: bytes) -> PartitionData:
        nonlocal base, first_line
        out = parse_lines(data, part.path, base=base, first_line=first_line)
        base += len(data)
        if first_line is not None:
            first_line += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        return out

    for piece in pieces:
        if skip:
            cut = piece.find(b"\n")
            base += len(piece) if cut < 0 else cut + 1
            if cut < 0:
                continue
            piece, skip = piece[cut + 1 :], False
            if limit is not None and base > limit:
                return  # one long line covers the whole partition: it belongs to an earlier one
        cut = piece.rfind(b"\n")
        if cut < 0:
            carry.append(piece)
            carry_bytes += len(piece)
            continue
        ready += carry
        ready.append(piece[: cut + 1])
        ready_bytes += carry_bytes + cut + 1
        carry, carry_bytes = [piece[cut + 1 :]], len(piece) - cut - 1
        if limit is not None and base + ready_bytes > limit:
            data = b"".join(ready)
            yield batch(data[: data.index(b"\n", max(limit - base, 0)) + 1])
            return
        if ready_bytes >= batch_bytes:
            data = b"".join(ready)
            start = 0
            while len(data) - start >= batch_bytes:  # batches of whole lines, about batch_bytes
                cut = data.index(b"\n", start + batch_bytes - 1) + 1
                yield batch(data[start:cut])
                start = cut
            ready = [data[start:]] if start < len(data) else []
            ready_bytes = len(data) - start
    if not skip and (ready_bytes or carry_bytes):
        yield batch(b"".join(ready + carry))


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
        if type(value) is dict and raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
            try:
                orjson.dumps(value)  # fails on nesting deeper than MAX_DEPTH
            except orjson.JSONEncodeError:
                detail = f"the record is nested more than {MAX_DEPTH} levels deep"
                rejects.append(
                    make_reject(file, line_no, here, "nested_too_deep", detail, _raw_text(raw))
                )
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
    message = " ".join(str(exc).split())
    if "depth limit exceeded" in message or "recursion" in message.lower():
        return "nested_too_deep", f"the record is nested more than {MAX_DEPTH} levels deep"
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
    except RecursionError:
        return "nested_too_deep", f"the record is nested more than {MAX_DEPTH} levels deep"
    except ValueError:
        return "invalid_json", message
    if "surrogate" not in message:  # NaN, 1e400: Python's parser takes them, JSON does not
        return "invalid_json", message
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
        try:
            return json.dumps(record, ensure_ascii=True, default=str)
        except (RecursionError, ValueError):
            return repr(record)[:1_000_000]


def _read_parquet(
    fs: Any, path: str, part: InputPartition, *, first_only: bool = False
) -> PartitionData:
    """The rows of the partition's row groups (``first_only``: the first few rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = PartitionData()
    stop = part.start + 1 if first_only else part.end
    try:
        with fs.open(path, "rb") as handle:
            reader = pq.ParquetFile(handle)
            meta = reader.metadata
            first_row = sum(meta.row_group(i).num_rows for i in range(part.start))
            if first_only:
                rows = reader.iter_batches(PARQUET_SAMPLE_ROWS, row_groups=[part.start])
                first = next(rows, None)
                table = pa.Table.from_batches([] if first is None else [first], reader.schema_arrow)
            else:
                table = reader.read_row_groups(list(range(part.start, stop)))
    except pa.ArrowException as exc:
        raise CorruptInput(
            f"{part.path}: cannot read row groups {part.start}..{stop - 1} "
            f"({' '.join(str(exc).split())}); the Parquet file is damaged; write it again"
        ) from None
    for i, row in enumerate(table.to_pylist()):
        offset = first_row + i
        out.records.append(SourcedRecord(row, part.path, offset + 1, offset))
    return out


def present_fields(records: list[dict], limit: int = 12) -> list[str]:
    """The top-level fields of ``records``, most common first (for "the fields that exist")."""
    counts: dict[str, int] = {}
    for record in records:
        for key in record:
            counts[key] = counts.get(key, 0) + 1
    return sorted(counts, key=lambda k: (-counts[k], k))[:limit]


def check_fields(sample: Sample, wanted: list[tuple[str | tuple[str, ...], str]]) -> None:
    """Raise one UserError naming every ``(field, flag)`` no sampled record has.

    A field is a dotted path (``meta.id``) or a tuple of keys. A typo in ``--field`` or
    ``--split-key`` would otherwise reject every record of the run. Nothing is checked when
    the sample holds no record.
    """
    records = sample.data.records
    if not records:
        return
    missing = []
    for path, flag in wanted:
        keys = path.split(".") if isinstance(path, str) else list(path)
        if not any(_has(record, keys) for record in records):
            missing.append((".".join(keys), flag))
    if not missing:
        return
    what = "; ".join(f"{flag}: no record has a field {path!r}" for path, flag in missing)
    fields = ", ".join(present_fields(records)) or "none"
    raise UserError(
        f"{what} (looked at the first {len(records):,} records of {sample.file}, whose fields "
        f"are: {fields}); correct the field name"
    )


def _has(record: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return False
        record = record[key]
    return True
