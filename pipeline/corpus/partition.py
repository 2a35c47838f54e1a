"""Worker side of the corpus export: one input partition → one part per split + its rejects.

``transform`` is the stage chain (a pure function of the partition): map to the schema →
validate (invalid records aside, with their reason) → key → split → statistics. The task
functions around it read the partition and write the parts; they return what they wrote, so
the driver builds the manifest and ``dataset_stats.json`` without reading anything again.
"""

from __future__ import annotations

import ctypes
import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from gpu.backend import CPU, Backend
from gpu.hashing import bucket
from pipeline.corpus import writers as corpus_writers
from pipeline.corpus.columns import TextColumns, confirm_suspects, split_stats, text_columns
from pipeline.corpus.splits import Boundary, SplitSpec, exact_mode_assign, key_bytes
from pipeline.formats.corpus_stats import SplitStats
from pipeline.formats.record_checks import check_text, validate_record
from pipeline.formats.schema import Schema, get_path
from pipeline.formats.tokenizer import TokenCounter, counter_backend
from pipeline.io.compression import suffix
from pipeline.io.records import (
    InputPartition,
    PartitionData,
    iter_partition,
    make_reject,
    record_text,
)
from pipeline.io.storage import storage_errors
from pipeline.runtime.output import PartRecord, write_part


@dataclass(frozen=True)
class CorpusTask:
    """What every partition task needs (shipped once per task; small)."""

    schema: Schema
    split: SplitSpec
    format: str
    compression: str | None
    tokenizer: TokenCounter | None
    input_options: dict[str, Any]
    out_fs: Any
    out_base: str
    backend: Backend = CPU  # what the partition computes with (resolved from --backend)

    @property
    def ext(self) -> str:
        return corpus_writers.extension(self.format, self.compression)

    def part_paths(self, index: int) -> list[str]:
        """Relative paths a partition writes: one per split, then its rejects."""
        return [f"{name}/part-{index:05d}{self.ext}" for name in self.split.names] + [
            rejects_path(index, self.compression)
        ]


def rejects_path(index: int, compression: str | None) -> str:
    """Relative path of a partition's rejects file (always JSONL)."""
    return f"rejects/part-{index:05d}.jsonl{suffix(compression)}"


@dataclass
class Transformed:
    """Output of the stage chain for one partition."""

    splits: list[list[dict]]
    stats: list[SplitStats]
    rejects: list[dict] = field(default_factory=list)


@dataclass
class _Valid:
    records: list[dict] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)  # UTF-8 of the texts
    keys: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sources: list[Any] = field(default_factory=list)  # the input records (for rejects)


def _validate(data: PartitionData, task: CorpusTask) -> tuple[_Valid, list[dict]]:
    """Host pass: map every record to the schema and check everything but the text's content
    (the columnar pass checks that). A record refused here gets the reason a full
    record-by-record check gives, so the text's own problems keep their precedence."""
    schema, key_path = task.schema, task.split.key
    key_parts = tuple(key_path.split(".")) if key_path else None
    text_path = schema.text.split(".")
    valid, rejects = _Valid(), list(data.rejects)
    for rec in data.records:
        mapped = schema.map_record(rec)
        problem = validate_record(schema, mapped, check_unicode=False, text_content=False)
        if problem is not None:
            problem = validate_record(schema, mapped, check_unicode=False)
        encoded = b""
        if problem is None:
            text = mapped
            for p in text_path:
                text = text[p]
            try:
                encoded = text.encode("utf-8")  # needed for hashing and words; fails on surrogates
            except UnicodeEncodeError as exc:
                problem = check_text(text, check_unicode=False) or (
                    "invalid_unicode",
                    f"text holds an unpaired surrogate at position {exc.start} (not valid UTF-8)",
                )
        if problem is None and key_parts is not None:
            kb = key_bytes(get_path(rec, key_parts))
            if kb is None:
                # A problem of the text's content comes first (the full check's order).
                problem = check_text(text, check_unicode=False) or (
                    "missing_split_key",
                    f"the split key field {key_path!r} is absent or null",
                )
            else:
                valid.keys.append(kb)
        if problem is not None:
            rejects.append(_reject(rec, problem))
            continue
        valid.records.append(mapped)
        valid.texts.append(text)
        valid.encoded.append(encoded)
        valid.offsets.append(rec.offset)
        valid.sources.append(rec)
    return valid, rejects


def _reject(rec: Any, problem: tuple[str, str]) -> dict:
    return make_reject(rec.file, rec.line, rec.offset, problem[0], problem[1], record_text(rec))


def _valid_columns(data: PartitionData, task: CorpusTask) -> tuple[_Valid, TextColumns, list[dict]]:
    """Both passes: the valid records, their columns on the backend, and the rejects in file
    order (whichever pass refused them)."""
    valid, rejects = _validate(data, task)
    backend = task.backend
    columns = text_columns(
        valid.texts,
        valid.encoded,
        valid.keys,
        task.split.seed,
        task.split.key is None,
        backend,
    )
    problems = confirm_suspects(valid.texts, columns, backend)
    if problems:
        rejects.extend(_reject(valid.sources[i], p) for i, p in problems.items())
        keep = [i for i in range(len(valid.texts)) if i not in problems]
        valid = _Valid(
            *([items[i] for i in keep] if items else [] for items in valid.__dict__.values())
        )
        columns = columns.take(backend.xp, backend.from_numpy(np.asarray(keep, dtype=np.int64)))
    rejects.sort(key=lambda r: r["offset"])  # file order, whichever pass refused it
    return valid, columns, rejects


def assign(
    task: CorpusTask,
    hashes: Any,
    file_rank: int,
    offsets: list[int],
    bounds: list[Boundary] | None,
) -> Any:
    """Split index per valid record (hash mode, or exact mode with the global boundaries), as
    an int64 array of the task's backend."""
    xp = task.backend.xp
    if bounds is None:
        return bucket(xp, hashes, task.split.thresholds())
    files = xp.full(hashes.shape, file_rank, dtype=xp.int64)
    where = task.backend.from_numpy(np.asarray(offsets, dtype=np.int64))
    return exact_mode_assign(hashes, files, where, bounds, xp)


def transform(
    data: PartitionData, task: CorpusTask, bounds: list[Boundary] | None = None, file_rank: int = 0
) -> Transformed:
    """The stage chain for one partition: map → validate → key → split → statistics.

    Records are parsed, mapped and checked on the host (they are Python objects); checking the
    texts, hashing, splitting and the statistics run on ``task.backend``
    (:mod:`pipeline.corpus.columns`: NumPy and pandas on CPU, CuPy and cuDF on a GPU), and the
    outputs are the same bytes on both. ``file_rank`` (the file's place in the sorted input)
    only matters in exact mode, where ``(hash, file_rank, offset)`` orders records globally.
    """
    valid, columns, rejects = _valid_columns(data, task)
    split_of = assign(task, columns.hashes, file_rank, valid.offsets, bounds)
    k = len(task.split.names)
    schema = task.schema
    domains = (
        [_field(r, schema.domain_field) for r in valid.records] if schema.domain_field else None
    )
    scores = (
        [_field(r, schema.quality_field) for r in valid.records] if schema.quality_field else None
    )
    members, stats = split_stats(task.backend, split_of, k, columns, domains, scores)
    out = Transformed([[] for _ in range(k)], stats, rejects)
    tokenizer = counter_backend(task.tokenizer) if task.tokenizer is not None else None
    for s, positions in enumerate(members):
        out.splits[s] = [valid.records[i] for i in positions]
        if tokenizer is not None:
            texts = [valid.texts[i] for i in positions]
            encoded = tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
            stats[s].tokens = sum(len(e.ids) for e in encoded)
    return out


def _field(record: dict, path: str) -> Any:
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# -- tasks ---------------------------------------------------------------------------------
@functools.cache
def keep_freed_memory() -> bool:
    """Let this process re-use the memory a partition frees instead of faulting in fresh pages.

    A partition allocates and frees hundreds of MB (line buffers, parsed records, output);
    glibc returns large blocks to the OS at once (and Dask's nanny sets
    ``MALLOC_TRIM_THRESHOLD_=65536``), so every partition pays page faults for all of it again
    — measured as a third of the worker CPU time. Serving allocations below 256 MiB from the
    heap and keeping up to 512 MiB free there makes the next partition re-use warm pages;
    memory stays bounded by one partition's peak. Linux/glibc only; elsewhere a no-op.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, 256 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 512 << 20)
        )
    except (OSError, AttributeError):
        return False


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)


def export_partition(
    part: InputPartition, file_rank: int, task: CorpusTask, bounds: list[Boundary] | None = None
) -> list[PartRecord]:
    """Read, transform and write one partition; returns its part records (splits, rejects).

    The partition is read in batches (a compressed file is streamed, see
    :func:`pipeline.io.records.iter_partition`) and every batch goes straight to the open part
    files, so memory is bounded by a batch, not by the file. The parts are published together
    at the end, splits in order and the rejects last; a failure publishes none of them.
    """
    keep_freed_memory()
    with storage_errors(part.path):
        return _export_partition(part, file_rank, task, bounds)


def _export_partition(
    part: InputPartition, file_rank: int, task: CorpusTask, bounds: list[Boundary] | None
) -> list[PartRecord]:
    names = task.split.names
    rels = task.part_paths(part.index)  # one per split, then the rejects
    arrow = task.schema.arrow_schema() if task.format == "parquet" else None
    json_paths = [f.out for f in task.schema.fields if f.type == "any"]

    def produce(handles: list[Any]) -> list[tuple[int, dict]]:
        if arrow is not None:
            sinks: list[Any] = [
                corpus_writers.ParquetSink(h, arrow, json_paths) for h in handles[:-1]
            ]
        else:
            sinks = [corpus_writers.JsonlSink(h, task.compression) for h in handles[:-1]]
        rejects_sink = corpus_writers.JsonlSink(handles[-1], task.compression)
        stats = [SplitStats() for _ in names]
        rows = [0] * len(names)
        examples: list[str | None] = [None] * len(names)
        reasons: Counter = Counter()
        lines = blank = rejected = 0
        for data in iter_partition(part, task.input_options):
            result = transform(data, task, bounds, file_rank)
            for s, recs in enumerate(result.splits):
                sinks[s].write(recs)
                stats[s].merge(result.stats[s])
                rows[s] += len(recs)
                if examples[s] is None and recs:
                    # As JSON text: progress records are stored with sorted keys, the example
                    # keeps its order.
                    examples[s] = orjson.dumps(_shorten(recs[0])).decode()
            rejects_sink.write(result.rejects)
            reasons.update(r["reason"] for r in result.rejects)
            rejected += len(result.rejects)
            lines += data.lines
            blank += data.blank_lines
            del data, result
        for sink in [*sinks, rejects_sink]:
            sink.close()
        out = [
            # Statistics as JSON text too: the part record is deep-copied and stored, one
            # string is cheap.
            (
                rows[s],
                {
                    "partition": part.index,
                    "split": name,
                    "stats": orjson.dumps(stats[s].to_json()).decode(),
                    "example": examples[s],
                },
            )
            for s, name in enumerate(names)
        ]
        extra = {
            "partition": part.index,
            "lines": lines,
            "blank_lines": blank,
            "rejected": dict(sorted(reasons.items())),
        }
        return [*out, (rejected, extra)]

    return write_parts_together(task.out_fs, task.out_base, rels, produce)


def write_parts_together(fs: Any, base: str, rels: list[str], produce: Any) -> list[PartRecord]:
    """Publish several files written at the same time (``produce(handles) -> [(rows, extra)]``).

    Each file goes through :func:`~pipeline.runtime.output.write_part` (temporary name, atomic
    publish, progress record); they are nested so that all are open while ``produce`` runs and
    are published in the order of ``rels`` once it returns. If it fails, none is published.
    """
    handles: list[Any] = [None] * len(rels)
    results: list[tuple[int, dict]] = []
    records: list[PartRecord] = []

    def level(i: int) -> Any:
        def write(handle: Any) -> tuple[int, dict]:
            handles[i] = handle
            if i == 0:
                results.extend(produce(handles))
            else:
                records.append(write_part(fs, base, rels[i - 1], level(i - 1)))
            return results[i]

        return write

    records.append(write_part(fs, base, rels[-1], level(len(rels) - 1)))
    return records


def _shorten(value: Any) -> Any:
    """A record with long strings cut (an example for the dataset card, kept in part records)."""
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


def rank_partition(part: InputPartition, task: CorpusTask) -> tuple[np.ndarray, np.ndarray]:
    """Exact mode, first pass: ``(hashes, offsets)`` of the partition's valid records (host
    arrays: the driver ranks them all together)."""
    keep_freed_memory()
    hashes, offsets = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
    with storage_errors(part.path):
        for data in iter_partition(part, task.input_options):
            valid, columns, _ = _valid_columns(data, task)
            hashes.append(task.backend.asnumpy(columns.hashes))
            offsets.append(np.asarray(valid.offsets, dtype=np.int64))
    return np.concatenate(hashes), np.concatenate(offsets)
