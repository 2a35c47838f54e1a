"""Encode job: input partitions -> tokenize -> one shard per task -> one Megatron dataset.

The driver checks the arguments, loads the tokenizer once and plans the input partitions
(deterministic order) before anything is written. Task ``i`` reads partition ``i``,
tokenizes it (:mod:`pipeline.encode.tokenize`) and publishes shard ``i`` with a progress record,
so ``--resume`` skips finished shards. The merge then concatenates the shard ``.bin`` files in
order (server-side on S3 when shards are large enough: no token is downloaded or re-encoded)
and writes one ``.idx`` from the shard indexes. Shard ``i`` holds partition ``i`` whatever
the number of workers, so the output is byte-identical for any cluster.

Layout (``--out data/ds``, format ``megatron``)::

    data/ds.bin  data/ds.idx          the dataset (megatron-core / GPT-NeoX format)
    data/ds.rejects.jsonl             invalid records with their reason (only when there are any)
    data/ds.manifest.json             written last: counts, dtype, tokenizer, parameters
    data/ds.shards/                   staging during the run (shards, progress); removed at the end

With ``--format npz``, ``--out`` is a directory of ``part-00000.npz`` shards (flat ``tokens`` +
``offsets``), ``rejects/part-00000.jsonl`` and ``_manifest.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.encode import tokenize as ts
from pipeline.encode.merge import EncodeTarget, ShardNames
from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import token_dtype_for_vocab
from pipeline.formats.tokenizer import TokenizerPayload, load_tokenizer, payload_from_tokenizer
from pipeline.runtime.executor import as_executor
from pipeline.runtime.output import PartRecord, check_disjoint, write_part
from pipeline.runtime.progress import Progress
from pipeline.runtime.runner import Task, run_tasks

FORMATS = ("megatron", "npz")


@dataclass
class EncodeJob:
    """Everything an encode run needs; :meth:`check` validates it before anything is written."""

    inputs: list[str]
    out: str
    tokenizer: Any  # local path, or a loaded Hugging Face fast tokenizer (Python API)
    field: str = "text"
    append_eod: bool = False
    add_bos: bool = False
    eod_id: int | None = None
    bos_id: int | None = None
    format: str = "megatron"
    partition_bytes: int = 64 << 20
    overwrite: bool = False
    resume: bool = False
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Filled in by check():
    payload: TokenizerPayload | None = None
    options: ts.EncodeOptions | None = None
    dtype: np.dtype | None = None
    partitions: list[Any] | None = None

    def check(self) -> None:
        """Validate arguments, load the tokenizer and plan the partitions (UserError on
        problems)."""
        if self.partitions is not None:
            return
        problems = []
        if not self.inputs:
            problems.append(
                "no input given; pass JSONL/Parquet files, folders, globs or a corpus export "
                "directory"
            )
        if self.format not in FORMATS:
            problems.append(f"unknown format {self.format!r}; use megatron or npz")
        if self.partition_bytes <= 0:
            problems.append("--partition-size must be positive")
        if self.overwrite and self.resume:
            problems.append("--overwrite and --resume exclude each other; pass one of them")
        name = self.out.rstrip("/").rsplit("/", 1)[-1]
        if self.format == "megatron" and (name.endswith((".bin", ".idx")) or not name):
            problems.append(
                f"--out {self.out!r} must be a dataset prefix (data/ds writes data/ds.bin and "
                "data/ds.idx), without .bin/.idx"
            )
        if self.tokenizer is None:
            problems.append(
                "--tokenizer PATH is required (a local Hugging Face tokenizer folder or "
                "tokenizer.json)"
            )
        if problems:
            raise UserError("; ".join(problems))
        if isinstance(self.tokenizer, TokenizerPayload):
            self.payload = self.tokenizer
        elif hasattr(self.tokenizer, "backend_tokenizer"):
            self.payload = payload_from_tokenizer(self.tokenizer)
        else:
            self.payload = load_tokenizer(self.tokenizer)
        self.options = ts.encode_options(
            self.payload,
            field=self.field,
            append_eod=self.append_eod,
            add_bos=self.add_bos,
            eod_id=self.eod_id,
            bos_id=self.bos_id,
        )
        self.dtype = token_dtype_for_vocab(self.payload.vocab_size)
        from pipeline.io.records import plan_partitions

        self.partitions = list(
            plan_partitions(
                list(self.inputs), self.storage_options, target_bytes=self.partition_bytes
            )
        )
        inputs = [i for i in self.inputs if not any(c in i for c in "*?[")] + (
            [self.tokenizer] if isinstance(self.tokenizer, str) else []
        )
        outs = (
            [f"{self.out}{s}" for s in (".bin", ".idx", ".shards")]
            if self.format == "megatron"
            else [self.out]
        )
        inputs += sorted({part.path for part in self.partitions})
        for out in outs:
            check_disjoint(out, inputs, self.storage_options)
        try:
            EncodeTarget(self.out, self.format, self.storage_options).check(
                self.params(), overwrite=self.overwrite, resume=self.resume
            )
        except BaseException:
            self.partitions = None  # not checked: a later check() must look again
            raise

    def params(self) -> dict[str, Any]:
        """Parameters recorded in the manifest (and compared on ``--resume``)."""
        assert self.payload is not None and self.options is not None and self.dtype is not None
        return {
            "inputs": list(self.inputs),
            "field": self.field,
            "tokenizer": self.tokenizer if isinstance(self.tokenizer, str) else self.payload.name,
            "tokenizer_sha256": self.payload.sha256,
            "append_eod": self.append_eod,
            "add_bos": self.add_bos,
            "eod_id": self.options.eod_id,
            "bos_id": self.options.bos_id,
            "format": self.format,
            "dtype": self.dtype.name,
            "partition_bytes": self.partition_bytes,
            "partitions": len(self.partitions or ()),
        }


# -- worker side ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardTask:
    """One input partition and where its shard goes."""

    index: int
    partition: Any
    format: str
    dtype: str
    storage_options: dict[str, Any]


def encode_shard(
    task: ShardTask, options: ts.EncodeOptions, fs: Any, base: str, payload: TokenizerPayload
) -> list[PartRecord]:
    """Read, tokenize and publish one shard (runs on a worker); the data file goes last."""
    from pipeline.io.records import read_partition

    records, read_rejects = read_partition(task.partition, task.storage_options)
    n_records = len(records) + len(read_rejects)
    dtype = np.dtype(task.dtype)
    part = ts.tokenize_records(records, payload, options, dtype)
    del records  # the parsed records are the largest object of a task; only tokens remain
    # A partition lies in one file, so the byte offset (Parquet: row) restores input order.
    rejects = sorted([*read_rejects, *part.rejects], key=lambda r: r.get("offset") or 0)
    rejected = Counter(str(r["reason"]) for r in rejects)
    names = ShardNames(task.index, task.format)
    counters = {
        "records": n_records,
        "documents": part.documents,
        "tokens": int(len(part.tokens)),
        "rejected": dict(sorted(rejected.items())),
    }
    written: list[PartRecord] = []
    if rejects:
        written.append(
            write_part(fs, base, names.rejects, lambda h: (_write_jsonl(h, rejects), None))
        )
    if task.format == "npz":
        metadata = {
            "tool": "dexport",
            "job": "encode",
            "shard": task.index,
            "tokenizer": payload.name,
            "vocab_size": payload.vocab_size,
            "dtype": dtype.name,
        }
        arrays = {
            "tokens": part.tokens,
            "offsets": part.offsets,
            "metadata": np.array(json.dumps(metadata, sort_keys=True)),
        }
        written.append(
            write_part(fs, base, names.data, lambda h: (_write_npz(h, arrays), counters))
        )
        return written
    sizes = np.diff(part.offsets).astype(np.int32)
    written.append(
        write_part(fs, base, names.index, lambda h: (_write_shard_index(h, dtype, sizes), None))
    )

    def write_tokens(handle: Any) -> tuple[int, dict[str, Any]]:
        handle.write(memoryview(part.tokens).cast("B"))  # no copy of the shard's tokens
        return part.documents, counters

    written.append(write_part(fs, base, names.data, write_tokens))
    return written


def _write_jsonl(handle: Any, rows: list[dict[str, Any]]) -> int:
    import orjson

    # Records come from JSON or Parquet: anything orjson cannot encode natively (bytes,
    # decimals) is written as its string form rather than failing the whole shard.
    handle.write(b"".join(orjson.dumps(r, default=str) + b"\n" for r in rows))
    return len(rows)


def _write_npz(handle: Any, arrays: dict[str, np.ndarray]) -> int:
    from pipeline.formats.token_records import write_npz_arrays

    write_npz_arrays(handle, arrays)
    return len(arrays["offsets"]) - 1


def _write_shard_index(handle: Any, dtype: np.dtype, sizes: np.ndarray) -> int:
    from pipeline.formats.indexed_dataset import write_index

    write_index(handle, dtype, sizes, np.arange(len(sizes) + 1, dtype=np.int64))
    return len(sizes)


# -- driver side ---------------------------------------------------------------------------
def run_encode(job: EncodeJob, executor: Any, *, progress: bool = True) -> dict[str, Any]:
    """Run an encode job on ``executor`` (or a Dask client); return the summary."""
    t0 = time.perf_counter()
    job.check()
    assert job.partitions is not None and job.payload is not None and job.dtype is not None
    executor = as_executor(executor)
    params = job.params()
    target = EncodeTarget(job.out, job.format, job.storage_options)
    done, finished = target.prepare(params, overwrite=job.overwrite, resume=job.resume)
    if finished is not None:  # --resume of a run that already completed: nothing to do
        return _summary(job, finished["totals"], target, time.perf_counter() - t0)
    try:
        shards = _run_shards(executor, job, target, done, progress)
        totals = _totals(job, shards)
        target.finish(params, shards, totals, job.dtype)
    except BaseException as exc:
        target.staging.abandon(exc)
        raise
    return _summary(job, totals, target, time.perf_counter() - t0)


def _run_shards(
    executor: Any, job: EncodeJob, target: EncodeTarget, done: dict[str, PartRecord], progress: bool
) -> list[list[PartRecord]]:
    """One task per partition (the tokenizer shipped once); results in partition order."""
    assert job.partitions is not None and job.dtype is not None
    staging = target.staging
    finished: dict[str, list[PartRecord]] = {}
    for i in range(len(job.partitions)):
        shard = _completed(ShardNames(i, job.format), done)
        if shard is not None:
            finished[f"shard-{i:05d}"] = shard
    tasks = (
        Task(
            f"shard-{i:05d}",
            (
                ShardTask(i, partition, job.format, job.dtype.name, job.storage_options),
                job.options,
                staging.fs,
                staging.path,
            ),
        )
        for i, partition in enumerate(job.partitions)
    )
    bar = Progress(len(job.partitions), "dexport encode", unit="shard", enabled=progress)
    # The tokenizer goes last: it is the shared payload, sent to each worker once.
    return run_tasks(
        executor, encode_shard, tasks, shared=(job.payload,), finished=finished, progress=bar
    )


def _completed(names: ShardNames, done: dict[str, PartRecord]) -> list[PartRecord] | None:
    """The records of a shard an interrupted run finished (data file last), or None."""
    data = done.get(names.data)
    if data is None:
        return None
    wanted = [names.rejects] if sum(data.extra["rejected"].values()) else []
    if names.format == "megatron":
        wanted.append(names.index)
    if any(w not in done for w in wanted):
        return None  # a file of the shard went missing since: encode the partition again
    return [*(done[w] for w in wanted), data]


def _totals(job: EncodeJob, shards: list[list[PartRecord]]) -> dict[str, Any]:
    assert job.payload is not None and job.options is not None and job.dtype is not None
    rejected: Counter[str] = Counter()
    for shard in shards:
        rejected.update(shard[-1].extra["rejected"])
    return {
        "records": sum(s[-1].extra["records"] for s in shards),
        "documents": sum(s[-1].extra["documents"] for s in shards),
        "tokens": sum(s[-1].extra["tokens"] for s in shards),
        "rejected": dict(sorted(rejected.items())),
        "dtype": job.dtype.name,
        "tokenizer": {
            "name": job.payload.name,
            "vocab_size": job.payload.vocab_size,
            "sha256": job.payload.sha256,
            "eod_id": job.options.eod_id,
            "bos_id": job.options.bos_id,
        },
        "shards": len(shards),
    }


def _summary(
    job: EncodeJob, totals: dict[str, Any], target: EncodeTarget, seconds: float
) -> dict[str, Any]:
    return {
        **totals,
        "rejected_total": sum(totals["rejected"].values()),
        "out": target.out,
        "format": job.format,
        "manifest": target.manifest_url,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(totals["tokens"] / seconds) if seconds > 0 else 0,
    }
