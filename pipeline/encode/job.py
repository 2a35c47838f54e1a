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
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu.array_ops import astype
from gpu.backend import BACKEND_NAMES, CPU, Backend, resolve_backend
from pipeline.encode import tokenize as ts
from pipeline.encode.incremental import merge_totals
from pipeline.encode.merge import EncodeTarget, ShardNames
from pipeline.errors import DataCheckFailed, UserError
from pipeline.formats.indexed_dataset import token_dtype_for_vocab
from pipeline.formats.record_checks import reject_problem
from pipeline.formats.tokenizer import TokenizerPayload, load_tokenizer, payload_from_tokenizer
from pipeline.io.storage import check_reachable, storage_errors
from pipeline.runtime import log
from pipeline.runtime.executor import as_executor
from pipeline.runtime.output import PartRecord, check_disjoint, write_part
from pipeline.runtime.progress import Progress
from pipeline.runtime.runner import Task, run_tasks

FORMATS = ("megatron", "npz")
COPY_BLOCK = 8 << 20


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
    max_reject_fraction: float | None = 0.5  # above it (or all rejected) the run fails (exit 1)
    # A database table or query (pipeline.io.sql.SqlSource); ``inputs`` then holds its masked URL.
    database: Any = None
    # cpu | gpu | auto (or a gpu.backend.Backend): what packs the shards; the same bytes
    backend: str | Backend = "cpu"
    incremental: bool = False  # append only new inputs, as a new generation
    rebuild: bool = False  # incremental: encode every input again (changed or gone inputs)
    # Filled in by check():
    payload: TokenizerPayload | None = None
    options: ts.EncodeOptions | None = None
    dtype: np.dtype | None = None
    partitions: list[Any] | None = None
    compute: Backend | None = None  # ``backend`` resolved
    history: Any = None  # incremental runs: a runtime.generations.History

    def check(self) -> None:
        """Validate arguments, inputs and output, then load the tokenizer (UserError on problems).

        The tokenizer is loaded last: it is the slow step, so a wrong input, field name or
        output is reported before it.
        """
        if self.partitions is not None:
            return
        with storage_errors():
            self._check()

    def _check(self) -> None:
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
        if self.max_reject_fraction is not None and not 0 <= self.max_reject_fraction <= 1:
            problems.append(
                f"--max-reject-fraction must be between 0 and 1 (got {self.max_reject_fraction})"
            )
        if not isinstance(self.backend, Backend) and self.backend not in BACKEND_NAMES:
            problems.append(f"unknown backend {self.backend!r} (use cpu, gpu or auto)")
        name = self.out.rstrip("/").rsplit("/", 1)[-1]
        if self.out.strip() == "-":
            problems.append("--out - is not supported: encode writes files; name a prefix")
        elif self.format == "megatron" and (
            name.endswith((".bin", ".idx")) or name in ("", ".", "..") or self.out.endswith("/")
        ):
            problems.append(
                f"--out {self.out!r} must be a dataset prefix (data/ds writes data/ds.bin and "
                "data/ds.idx), without .bin/.idx and not a folder"
            )
        if self.tokenizer is None:
            problems.append(
                "--tokenizer PATH is required (a local Hugging Face tokenizer folder or "
                "tokenizer.json)"
            )
        if self.rebuild and not self.incremental:
            problems.append("--rebuild goes with --incremental (use --overwrite otherwise)")
        if self.incremental and self.overwrite:
            problems.append("--incremental with --overwrite: pass --rebuild to encode everything")
        if problems:
            raise UserError("; ".join(problems))
        self.compute = resolve_backend(self.backend)  # --backend gpu without a device: exit 2
        if self.incremental:
            return self._check_incremental()
        from pipeline.io.records import check_fields, first_records, plan_partitions

        files = [] if self.database is not None else list(self.inputs)  # a database is no file
        check_reachable([*files, self.out], self.storage_options)
        options, size = self.storage_options, self.partition_bytes
        partitions = list(plan_partitions(files, options, size, database=self.database))
        if not partitions:
            raise UserError(
                f"the inputs {', '.join(self.inputs)} hold no data (every file is empty)"
            )
        inputs = [i for i in files if not any(c in i for c in "*?[")] + (
            [self.tokenizer] if isinstance(self.tokenizer, str) else []
        )
        inputs += sorted({part.path for part in partitions}) if files else []
        for out in self._outputs():
            check_disjoint(out, inputs, self.storage_options)
        target = EncodeTarget(self.out, self.format, self.storage_options)
        target.check(None, overwrite=self.overwrite, resume=self.resume)
        sample = first_records(partitions, self.storage_options)
        if sample.empty:
            raise UserError(
                f"the inputs {', '.join(self.inputs)} hold no records (only blank lines); "
                "pass the files that hold the data"
            )
        if self.field:  # a top-level key, dots included (as records.get(field) reads it)
            check_fields(sample, [((self.field,), f"--field {self.field}")])
        self._load_tokenizer()  # only now the slow part
        self.partitions = partitions
        try:
            target.check(self.params(), overwrite=self.overwrite, resume=self.resume)
        except BaseException:
            self.partitions = None  # not checked: a later check() must look again
            raise

    def _outputs(self) -> list[str]:
        if self.format == "megatron":
            return [f"{self.out}{s}" for s in (".bin", ".idx", ".shards")]
        return [self.out]

    def _check_incremental(self) -> None:
        """Incremental: compare the inputs with what the dataset consumed; plan the new ones."""
        from pipeline.encode.incremental import plan_generation
        from pipeline.io.records import check_fields, first_records

        files = [] if self.database is not None else list(self.inputs)  # a database is no file
        check_reachable([*files, self.out], self.storage_options)
        inputs = [i for i in files if not any(c in i for c in "*?[")] + (
            [self.tokenizer] if isinstance(self.tokenizer, str) else []
        )
        for out in self._outputs():
            check_disjoint(out, inputs, self.storage_options)
        target = EncodeTarget(self.out, self.format, self.storage_options)
        target.staging.lock.ensure_free()  # a running encode: exit 3 before reading anything
        self._load_tokenizer()
        history, partitions = plan_generation(self, target, self.params())
        log.detail(history.describe("encode"))
        for out in self._outputs():
            paths = sorted({p.path for p in partitions}) if files else []
            check_disjoint(out, paths, self.storage_options)
        if partitions and self.field:
            sample = first_records(partitions, self.storage_options)
            if not sample.empty:
                check_fields(sample, [((self.field,), f"--field {self.field}")])
        if not history.up_to_date and not partitions and history.generation == 0:
            raise UserError(
                f"the inputs {', '.join(self.inputs)} hold no data (every file is empty)"
            )
        self.history, self.partitions = history, partitions

    def _load_tokenizer(self) -> None:
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

    def params(self) -> dict[str, Any]:
        """Parameters recorded in the manifest (and compared on ``--resume``)."""
        assert self.payload is not None and self.options is not None and self.dtype is not None
        # An incremental dataset records its inputs per generation (the manifest's
        # ``incremental``): its parameters are what must stay the same between runs.
        inputs = (
            {"incremental": True}
            if self.incremental
            else {
                "inputs": list(self.inputs),
                "partition_bytes": self.partition_bytes,
                "partitions": len(self.partitions or ()),
            }
        )
        return {
            **inputs,
            "field": self.field,
            "tokenizer": self.tokenizer if isinstance(self.tokenizer, str) else self.payload.name,
            "tokenizer_sha256": self.payload.sha256,
            "append_eod": self.append_eod,
            "add_bos": self.add_bos,
            "eod_id": self.options.eod_id,
            "bos_id": self.options.bos_id,
            "format": self.format,
            "dtype": self.dtype.name,
            **({"database": self.database.as_params()} if self.database is not None else {}),
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
    backend: Backend = CPU  # what packs the tokens (resolved from --backend)


def encode_shard(
    task: ShardTask, options: ts.EncodeOptions, fs: Any, base: str, payload: TokenizerPayload
) -> list[PartRecord]:
    """Read, tokenize and publish one shard (runs on a worker); the data file goes last.

    The partition is read and tokenized in batches (a compressed file is streamed): tokens go
    straight into the shard's temporary ``.bin`` and rejects into a local spool file, so memory
    is bounded by a batch. The rejects and the index are published before the data file.
    """
    with storage_errors(task.partition.path):
        return _encode_shard(task, options, fs, base, payload)


def _encode_shard(
    task: ShardTask, options: ts.EncodeOptions, fs: Any, base: str, payload: TokenizerPayload
) -> list[PartRecord]:
    from pipeline.io.records import iter_partition

    dtype = np.dtype(task.dtype)
    names = ShardNames(task.index, task.format)
    written: list[PartRecord] = []
    rejected: Counter[str] = Counter()
    counts = {"records": 0, "documents": 0, "tokens": 0}
    sizes: list[np.ndarray] = []

    def encode_into(sink: Any, spool: Any) -> None:
        for data in iter_partition(task.partition, task.storage_options):
            counts["records"] += len(data.records) + len(data.rejects)
            part = ts.tokenize_records(data.records, payload, options, dtype, task.backend)
            read_rejects = data.rejects
            del data  # the parsed records are the largest object of a batch
            # A partition lies in one file, so the byte offset (Parquet: row) is input order.
            rejects = sorted([*read_rejects, *part.rejects], key=lambda r: r.get("offset") or 0)
            rejected.update(str(r["reason"]) for r in rejects)
            if rejects:
                _write_jsonl(spool, rejects)
            counts["documents"] += part.documents
            counts["tokens"] += int(part.tokens.shape[0])
            xp = task.backend.xp
            lengths = part.offsets[1:] - part.offsets[:-1]
            sizes.append(task.backend.asnumpy(astype(xp, lengths, xp.int32)))
            # On the CPU backend no copy of the batch's tokens; on a GPU one copy to the host.
            sink.write(memoryview(task.backend.asnumpy(part.tokens)).cast("B"))

    def counters() -> dict[str, Any]:
        return {**counts, "rejected": dict(sorted(rejected.items()))}

    def publish_rejects(spool: Any) -> None:
        if not sum(rejected.values()):
            return

        def copy(handle: Any) -> tuple[int, None]:
            spool.seek(0)
            while block := spool.read(COPY_BLOCK):
                handle.write(block)
            return sum(rejected.values()), None

        written.append(write_part(fs, base, names.rejects, copy))

    with tempfile.TemporaryFile() as spool, tempfile.TemporaryFile() as token_spool:
        if task.format == "npz":
            encode_into(token_spool, spool)
            publish_rejects(spool)
            token_spool.flush()
            total = counts["tokens"]
            tokens = (
                np.memmap(token_spool, dtype=dtype, mode="r", shape=(total,))
                if total
                else np.zeros(0, dtype)
            )
            offsets = np.zeros(counts["documents"] + 1, np.int64)
            if sizes:
                np.cumsum(np.concatenate(sizes), out=offsets[1:])
            metadata = {
                "tool": "dexport",
                "job": "encode",
                "shard": task.index,
                "tokenizer": payload.name,
                "vocab_size": payload.vocab_size,
                "dtype": dtype.name,
            }
            arrays = {
                "tokens": tokens,
                "offsets": offsets,
                "metadata": np.array(json.dumps(metadata, sort_keys=True)),
            }
            written.append(
                write_part(fs, base, names.data, lambda h: (_write_npz(h, arrays), counters()))
            )
            del tokens, arrays
            return written

        def write_tokens(handle: Any) -> tuple[int, dict[str, Any]]:
            encode_into(handle, spool)
            publish_rejects(spool)
            lengths = np.concatenate(sizes) if sizes else np.zeros(0, np.int32)
            written.append(
                write_part(
                    fs,
                    base,
                    names.index,
                    lambda h: (_write_shard_index(h, dtype, lengths), None),
                )
            )
            return counts["documents"], counters()

        # The data file is published last: its progress record marks the shard complete.
        data_record = write_part(fs, base, names.data, write_tokens)
    return [*written, data_record]


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
    """Run an encode job on ``executor`` (or a Dask client); return the summary.

    Raises DataCheckFailed (with the summary as ``.summary``) after writing the dataset when
    every record, or more than ``job.max_reject_fraction`` of them, was rejected.
    """
    with storage_errors():
        summary = _run_encode(job, executor, progress)
    where = (
        f"{summary['out']}.rejects.jsonl"
        if job.format == "megatron"
        else f"{summary['out']}/rejects/"
    )
    problem = reject_problem(
        summary["records"], summary["rejected"], job.max_reject_fraction, where
    )
    if problem:
        error = DataCheckFailed(problem)
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    return summary


def _run_encode(job: EncodeJob, executor: Any, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    job.check()
    assert job.partitions is not None and job.payload is not None and job.dtype is not None
    executor = as_executor(executor)
    params = job.params()
    target = EncodeTarget(job.out, job.format, job.storage_options)
    history = job.history
    if history is not None and history.up_to_date:
        summary = _summary(job, history.manifest["totals"], target, time.perf_counter() - t0)
        return {
            **summary,
            "up_to_date": True,
            "generation": history.generation - 1,
            "inputs": history.unchanged,
        }
    if history is None:
        done, finished = target.prepare(params, overwrite=job.overwrite, resume=job.resume)
    else:
        done, finished = (
            target.prepare_generation(
                history.progress_params(params, job.partitions), history, rebuild=job.rebuild
            ),
            None,
        )
    if finished is not None:  # --resume of a run that already completed: nothing to do
        return _summary(job, finished["totals"], target, time.perf_counter() - t0)
    try:
        shards = _run_shards(executor, job, target, done, progress)
        added = _totals(job, shards)
        if not added["records"] and (history is None or history.generation == 0):
            raise UserError(
                f"the inputs {', '.join(job.inputs)} hold no records (only blank lines); pass "
                "the files that hold the data"
            )
        totals = merge_totals((history.manifest or {}).get("totals") if history else None, added)
        target.finish(params, shards, totals, job.dtype, history, job.partitions)
    except BaseException as exc:
        target.staging.abandon(exc)
        raise
    summary = _summary(job, totals, target, time.perf_counter() - t0)
    if history is not None:
        summary["generation"] = history.generation
        summary["added"] = {
            "inputs": len(history.inputs),
            "records": added["records"],
            "documents": added["documents"],
            "tokens": added["tokens"],
            "rejected": sum(added["rejected"].values()),
        }
    return summary


def _run_shards(
    executor: Any, job: EncodeJob, target: EncodeTarget, done: dict[str, PartRecord], progress: bool
) -> list[list[PartRecord]]:
    """One task per partition (the tokenizer shipped once); results in partition order."""
    assert job.partitions is not None and job.dtype is not None
    staging = target.staging
    finished: dict[str, list[PartRecord]] = {}
    # A partition's index names its shard: 0, 1, … and, in a later generation of an
    # incremental dataset, numbered on after the earlier generations' shards.
    for partition in job.partitions:
        shard = _completed(ShardNames(partition.index, job.format), done)
        if shard is not None:
            finished[f"shard-{partition.index:05d}"] = shard
    tasks = (
        Task(
            f"shard-{partition.index:05d}",
            (
                ShardTask(
                    partition.index,
                    partition,
                    job.format,
                    job.dtype.name,
                    job.storage_options,
                    job.compute or CPU,
                ),
                job.options,
                staging.fs,
                staging.path,
            ),
        )
        for partition in job.partitions
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
