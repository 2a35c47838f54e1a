"""Corpus export: input files → partitions → (map → validate → split) per task → split files.

The driver plans partitions (byte ranges, row groups) and keeps a bounded number of tasks in
flight; each task reads one partition, runs the stage chain and writes one part per split plus
its rejects (``pipeline.corpus.partition``). Parts return their statistics, so finalize
merges them in partition order (no second read) and writes the split files (parts joined
into ``train.jsonl`` … unless ``parts``), ``dataset_stats.json``, the dataset card and, last,
``_manifest.json``. Exact-count splits add a first pass that only ranks record hashes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpu.backend import BACKEND_NAMES, CPU, Backend, resolve_backend
from pipeline.corpus import finalize as corpus_finalize
from pipeline.corpus import writers as corpus_writers
from pipeline.corpus.incremental import GENERATION_FILE, plan_generation
from pipeline.corpus.partition import (
    CorpusTask,
    export_partition,
    rank_partition,
)
from pipeline.corpus.splits import SplitSpec, exact_boundaries, exact_counts, parse_split
from pipeline.errors import DataCheckFailed, UserError
from pipeline.formats.record_checks import reject_problem
from pipeline.formats.schema import Schema
from pipeline.formats.tokenizer import load_token_counter
from pipeline.io.records import InputPartition, check_fields, first_records, plan_partitions
from pipeline.io.storage import check_reachable, storage_errors
from pipeline.runtime import log
from pipeline.runtime.executor import as_executor
from pipeline.runtime.output import MANIFEST, PROGRESS, OutputDir, PartRecord, check_disjoint
from pipeline.runtime.progress import Progress
from pipeline.runtime.runner import Task, run_tasks

# Files a corpus run writes besides parts (an interrupted finalize may have left them).
OWNED_NAMES = (
    r"^[A-Za-z0-9_.-]+\.(jsonl|parquet)(\.gz|\.zst)?$",
    r"^dataset_stats\.json$",
    r"^README\.md$",
    r"^card/[^/]+\.(svg|png)$",  # histograms (PNG in earlier exports)
    GENERATION_FILE,
)


@dataclass
class CorpusExport:
    """Everything a corpus export needs; ``check`` validates it before anything is written."""

    inputs: list[str]
    out: str
    schema: Schema = field(default_factory=Schema)
    split: SplitSpec = field(default_factory=lambda: parse_split("0.95,0.03,0.02"))
    format: str = "jsonl"
    compression: str | None = None
    parts: bool = False
    tokenizer: str | None = None
    chunk_size: int = 64 << 20  # input bytes per partition
    overwrite: bool = False
    resume: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)
    card: bool = True
    command: str | None = None  # the command line, for the card's "Reproduce" section
    max_reject_fraction: float | None = 0.5  # above it (or all rejected) the run fails (exit 1)
    # A database table or query (pipeline.io.sql.SqlSource); ``inputs`` then holds its masked URL.
    database: Any = None
    # cpu | gpu | auto (or a gpu.backend.Backend): what the partitions compute with; same bytes
    backend: str | Backend = "cpu"
    incremental: bool = False  # add only new inputs, as a new generation
    rebuild: bool = False  # incremental: export every input again (changed or gone inputs)

    def check(self) -> None:
        """All argument problems in one UserError."""
        problems = []
        if not self.inputs:
            problems.append("no input given; pass JSONL/Parquet files, directories or globs")
        if not self.out:
            problems.append("--out is required")
        if self.format not in corpus_writers.FORMATS:
            problems.append(
                f"unknown format {self.format!r} (use {' or '.join(corpus_writers.FORMATS)})"
            )
        if self.compression not in (None, "gzip", "zstd"):
            problems.append(f"unknown compression {self.compression!r} (use gzip or zstd)")
        if self.compression and self.format == "parquet":
            problems.append(
                "--compression applies to jsonl; Parquet columns are always zstd-compressed"
            )
        if self.format == "parquet" and self.schema.unmapped == "metadata":
            problems.append(
                "schema 'unmapped: metadata' needs --format jsonl (Parquet columns are fixed)"
            )
        if self.chunk_size <= 0:
            problems.append(
                f"--chunk-size must be a positive number of bytes (got {self.chunk_size})"
            )
        if self.overwrite and self.resume:
            problems.append("--overwrite and --resume exclude each other; pass one of them")
        if self.max_reject_fraction is not None and not 0 <= self.max_reject_fraction <= 1:
            problems.append(
                f"--max-reject-fraction must be between 0 and 1 (got {self.max_reject_fraction})"
            )
        if self.out and self.out.strip() == "-":
            problems.append("--out - is not supported: corpus writes a folder; name one")
        if not isinstance(self.backend, Backend) and self.backend not in BACKEND_NAMES:
            problems.append(f"unknown backend {self.backend!r} (use cpu, gpu or auto)")
        if self.rebuild and not self.incremental:
            problems.append("--rebuild goes with --incremental (use --overwrite otherwise)")
        if self.incremental and self.split.exact:
            problems.append(
                "--incremental needs hash splits: --exact-counts ranks every record of every "
                "generation at once; drop --exact-counts"
            )
        if self.incremental and self.overwrite:
            problems.append("--incremental with --overwrite: pass --rebuild to export everything")
        if problems:
            raise UserError("; ".join(problems))

    def params(self, partitions: list[InputPartition], tokenizer: Any) -> dict[str, Any]:
        """Parameters recorded in the manifest (and compared on --resume)."""
        digest = hashlib.sha256()
        for p in partitions:
            digest.update(f"{p.path}\0{p.start}\0{p.end}\n".encode())
        # An incremental output records its inputs per generation (the manifest's
        # ``incremental``), so its parameters are only what must stay the same between runs.
        inputs = (
            {"incremental": True}
            if self.incremental
            else {
                "inputs": list(self.inputs),
                "input_digest": digest.hexdigest(),
                "partitions": len(partitions),
            }
        )
        return {
            **inputs,
            "schema": self.schema.as_dict(),
            "split": self.split.as_dict(),
            "format": self.format,
            "compression": self.compression,
            "parts": self.parts,
            "tokenizer": None
            if tokenizer is None
            else {"name": tokenizer.name, "sha256": tokenizer.sha256},
            **({} if self.incremental else {"chunk_size": self.chunk_size}),
            "card": self.card,
            **({"database": self.database.as_params()} if self.database is not None else {}),
        }


@dataclass
class CorpusPlan:
    """A checked export, ready to run: partitions, output, parameters, tokenizer."""

    spec: CorpusExport
    partitions: list[InputPartition]
    output: OutputDir
    params: dict[str, Any]
    tokenizer: Any
    t0: float
    backend: Backend = CPU  # --backend resolved once; every task computes with it
    history: Any = None  # incremental runs: a runtime.generations.History


def plan_corpus_export(spec: CorpusExport) -> CorpusPlan:
    """Everything that can fail on the user's input, before any cluster starts or file is
    written."""
    with storage_errors():
        return _plan(spec)


def _plan(spec: CorpusExport) -> CorpusPlan:
    t0 = time.perf_counter()
    spec.check()
    backend = resolve_backend(spec.backend)  # --backend gpu without a device: exit 2 here
    files = [] if spec.database is not None else spec.inputs  # a database is no file
    check_reachable([*files, spec.out], spec.storage_options)
    if spec.incremental:
        return _plan_incremental(spec, t0, backend)
    partitions = plan_partitions(
        files, spec.storage_options, spec.chunk_size, database=spec.database
    )
    if not partitions:
        raise UserError(f"the inputs {', '.join(spec.inputs)} hold no data (every file is empty)")
    inputs = [i for i in files if not any(c in i for c in "*?[")] + (
        [spec.tokenizer] if spec.tokenizer else []
    )
    check_disjoint(spec.out, inputs, spec.storage_options)
    output = OutputDir(spec.out, spec.storage_options, owned=OWNED_NAMES)
    _check_output(spec, output, partitions)
    _check_fields(spec, partitions)
    payload = load_token_counter(spec.tokenizer) if spec.tokenizer else None
    params = spec.params(partitions, payload)
    return CorpusPlan(spec, partitions, output, params, payload, t0, backend)


def _plan_incremental(spec: CorpusExport, t0: float, backend: Backend) -> CorpusPlan:
    """The new inputs of an incremental export, or an up-to-date plan with no partition."""
    files = [] if spec.database is not None else spec.inputs  # a database is no file
    inputs = [i for i in files if not any(c in i for c in "*?[")] + (
        [spec.tokenizer] if spec.tokenizer else []
    )
    check_disjoint(spec.out, inputs, spec.storage_options)
    output = OutputDir(spec.out, spec.storage_options, owned=OWNED_NAMES)
    output.lock.ensure_free()  # a running export: exit 3 before reading anything
    payload = load_token_counter(spec.tokenizer) if spec.tokenizer else None
    params = spec.params([], payload)
    history, partitions = plan_generation(spec, output, params)
    log.detail(history.describe("corpus"))
    if partitions:
        _check_inside(spec, output, partitions)
        _check_fields(spec, partitions)
    elif not history.up_to_date and history.generation == 0:
        raise UserError(
            f"the inputs {', '.join(spec.inputs)} hold no data (every file is empty); pass the "
            "files that hold the data"
        )
    return CorpusPlan(spec, partitions, output, params, payload, t0, backend, history)


def _check_fields(spec: CorpusExport, partitions: list[InputPartition]) -> None:
    """Fields every record needs (text, split key, required ones) must exist in the first
    records; an input of blank lines only is refused."""
    sample = first_records(partitions, spec.storage_options)
    if sample.empty:
        raise UserError(
            f"the inputs {', '.join(spec.inputs)} hold no records (only blank lines); "
            "pass the files that hold the data"
        )
    schema = spec.schema
    wanted = []
    for f in schema.fields:
        if f.source is None or not (f.out == schema.text or f.required):
            continue
        flag = "the text field" if f.out == schema.text else f"required schema field {f.out!r}"
        wanted.append((f.source, flag))
    if spec.split.key:
        wanted.append((spec.split.key, f"--split-key {spec.split.key}"))
    check_fields(sample, wanted)


def run_corpus_export(
    spec: CorpusExport | CorpusPlan, executor: Any, *, progress: bool = True
) -> dict[str, Any]:
    """Run a corpus export on ``executor`` (or a Dask client); returns the summary.

    Raises DataCheckFailed (with the summary as ``.summary``) after writing everything when
    every record, or more than ``max_reject_fraction`` of them, was rejected.
    """
    with storage_errors():
        summary = _run(spec, executor, progress)
    records = summary["documents"] + summary["rejected"]
    fraction = (spec.spec if isinstance(spec, CorpusPlan) else spec).max_reject_fraction
    problem = reject_problem(
        records, summary.get("rejected_by_reason") or {}, fraction, f"{summary['out']}/rejects/"
    )
    if problem:
        error = DataCheckFailed(problem)
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    return summary


def _run(spec: CorpusExport | CorpusPlan, executor: Any, progress: bool) -> dict[str, Any]:
    plan = spec if isinstance(spec, CorpusPlan) else plan_corpus_export(spec)
    spec, partitions, output, params = plan.spec, plan.partitions, plan.output, plan.params
    executor = as_executor(executor)
    history = plan.history
    if history is not None and history.up_to_date:
        return corpus_finalize.up_to_date_summary(output, history, plan.t0)
    if spec.resume and history is None and _finished(output):
        output.prepare(params, resume=True)  # refuses a finished run with other parameters
        output.abandon(None)
        return corpus_finalize.existing_summary(output, plan.t0)
    ranks = {path: i for i, path in enumerate(sorted({p.path for p in partitions}))}
    task = CorpusTask(
        spec.schema,
        spec.split,
        spec.format,
        spec.compression,
        plan.tokenizer,
        spec.storage_options,
        output.fs,
        output.path,
        plan.backend,
    )
    bounds = _rank(executor, partitions, ranks, task, progress) if spec.split.exact else None
    if history is None:
        done = output.prepare(params, overwrite=spec.overwrite, resume=spec.resume)
    else:
        done = output.prepare_generation(
            history.progress_params(params, partitions),
            kept=history.kept_paths(),
            rebuild=spec.rebuild,
            guard=history.guard,
        )
    try:
        results = _export(executor, partitions, ranks, task, bounds, done, progress)
        if history is None or history.generation == 0:
            _check_not_empty(spec, results)  # later generations may add only blank files
        return corpus_finalize.finalize(
            spec, output, task, params, results, plan.t0, executor, history, partitions
        )
    except BaseException as exc:
        output.abandon(exc)
        raise


def _check_not_empty(spec: CorpusExport, results: list[list[PartRecord]]) -> None:
    lines = sum(records[-1].extra["lines"] for records in results)
    blank = sum(records[-1].extra["blank_lines"] for records in results)
    if lines == blank:
        what = f"{lines:,} blank lines" if lines else "no lines"
        raise UserError(
            f"the inputs {', '.join(spec.inputs)} hold no records ({what}); pass the files that "
            "hold the data"
        )


def _finished(output: OutputDir) -> bool:
    return output.fs.exists(output.file(MANIFEST)) and not output.fs.exists(
        output.file(f"{PROGRESS}/params.json")
    )


def _check_output(spec: CorpusExport, output: OutputDir, partitions: list[InputPartition]) -> None:
    _check_inside(spec, output, partitions)
    # Refuse early (before an exact-count pass reads everything) when the output is taken:
    # by a running export (exit 3, retry later), or by an earlier one (exit 2).
    output.lock.ensure_free()
    if not (spec.overwrite or spec.resume):
        try:
            taken = output.fs.isdir(output.path) and bool(output.fs.ls(output.path))
        except FileNotFoundError:
            taken = False
        if taken:
            raise UserError(
                f"output {output.url} already exists and is not empty; " + output.takeover_hint()
            )


def _check_inside(spec: CorpusExport, output: OutputDir, partitions: list[InputPartition]) -> None:
    base = output.url.rstrip("/")
    inside = [
        p.path
        for p in partitions
        if p.path.startswith(base + "/") or p.path.startswith(output.path.rstrip("/") + "/")
    ]
    if inside:
        raise UserError(
            f"input {inside[0]} lies inside the output {spec.out}; write the export to another "
            "folder"
        )


def _rank(
    executor: Any,
    partitions: list[InputPartition],
    ranks: dict[str, int],
    task: CorpusTask,
    progress: bool,
) -> list:
    """Exact mode, first pass: global ranking of record hashes → split boundaries."""
    bar = Progress(len(partitions), "dexport corpus (ranking)", enabled=progress)
    ranked = run_tasks(
        executor,
        rank_partition,
        (Task(f"rank-{p.index:05d}", (p, task)) for p in partitions),
        progress=bar,
    )
    got = {p.index: r for p, r in zip(partitions, ranked, strict=True)}
    hashes = (
        np.concatenate([got[p.index][0] for p in partitions])
        if partitions
        else np.zeros(0, np.uint64)
    )
    offsets = (
        np.concatenate([got[p.index][1] for p in partitions])
        if partitions
        else np.zeros(0, np.int64)
    )
    files = (
        np.concatenate([np.full(len(got[p.index][0]), ranks[p.path], np.int64) for p in partitions])
        if partitions
        else np.zeros(0, np.int64)
    )
    sizes = exact_counts(task.split, len(hashes))
    return exact_boundaries(hashes, files, offsets, sizes)


def _export(
    executor: Any,
    partitions: list[InputPartition],
    ranks: dict[str, int],
    task: CorpusTask,
    bounds: list | None,
    done: dict[str, PartRecord],
    progress: bool,
) -> list[list[PartRecord]]:
    """Second (or only) pass: one task per partition not completed before; records in order."""
    finished = {}
    for p in partitions:
        paths = task.part_paths(p.index)
        if all(x in done for x in paths):
            finished[f"partition-{p.index:05d}"] = [done[x] for x in paths]
    tasks = (Task(f"partition-{p.index:05d}", (p, ranks[p.path], task, bounds)) for p in partitions)
    bar = Progress(len(partitions), "dexport corpus", enabled=progress)
    return run_tasks(executor, export_partition, tasks, finished=finished, progress=bar)
