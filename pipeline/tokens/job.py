"""Token export: selection → chunks → (gather windows → detokenize → encode) per task → parts.

The driver loads the sample index, checks the selection and turns each chunk into a small
window plan (token ranges); a worker task gathers the tokens with one vectorized read,
detokenizes them, writes its part file atomically and returns what it wrote. The driver keeps
a bounded number of tasks in flight, so memory is bounded by the chunk size on both sides, and
part ``k`` always holds chunk ``k`` whatever the number of workers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu.backend import BACKEND_NAMES, CPU, Backend, resolve_backend
from pipeline.errors import UserError
from pipeline.formats import token_records as tr
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.formats.token_formats import FORMATS, format_of_file
from pipeline.io.compression import (
    compressed,
    compression_from_name,
    suffix,
)
from pipeline.io.storage import (
    check_reachable,
    is_local,
    is_utf8_name,
    join,
    resolve,
    write_bytes_atomic,
)
from pipeline.runtime.executor import as_executor
from pipeline.runtime.output import (
    PROGRESS,
    OutputDir,
    PartRecord,
    RenderedPart,
    check_disjoint,
    render_part,
    write_part,
)
from pipeline.runtime.progress import Progress
from pipeline.runtime.runner import Task, run_tasks
from pipeline.tokens import card
from pipeline.tokens.blend_order import BlendOrder
from pipeline.tokens.decode_fallback import DecodeFallback
from pipeline.tokens.ownership import is_token_export
from pipeline.tokens.selection import Chunk, Selection, make_selection
from pipeline.tokens.source import TrainingRun, open_sample_order

if TYPE_CHECKING:
    from pipeline.runtime.join import InOrderJoin

STAGING_SUFFIX = ".dexport-parts"  # a single-file export stages its parts in OUT.dexport-parts/


@dataclass
class TokenExport:
    """Everything a token export needs; ``check`` validates it before anything is written."""

    prefix: str | None  # None for a blend (``run.blend`` names its datasets)
    out: str
    selection_kind: str
    selection_value: Any = None
    run: TrainingRun | None = None  # None for --documents (no training order needed)
    content: str = "tokens"  # "tokens" or "text"
    tokenizer: Any = None  # a local path (or a loaded Hugging Face tokenizer, API only)
    skip_special_tokens: bool = False
    doc_details: bool = False
    nested: bool = False
    format: str | None = None  # inferred from ``out`` when it names a file
    compression: str | None = None
    chunk_size: int = 1000
    overwrite: bool = False
    resume: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)
    backend: str | Backend = "cpu"  # cpu | gpu | auto (or a Backend): where detokenization runs
    # None: ``out`` is one file when its name has a known extension, else a folder (the CLI);
    # True: one file in ``format`` whatever the name (the API, as TokenSmith); False: a folder.
    single: bool | None = None
    # TokenSmith's column order (the API): ``batch_id`` after every other column, not after
    # ``content`` as DESIGN.md's header has it for the command line.
    batch_id_last: bool = False

    def single_file(self) -> str | None:
        """The format when ``out`` is one file (``x.jsonl``, ``x.csv.gz`` …), else None (a
        folder of parts; a name ending in ``/`` is one, whatever its extension)."""
        if self.single is False or (self.single is None and self.out.endswith("/")):
            return None
        fmt = format_of_file(self.out)
        if self.single:
            return self.format or (fmt.name if fmt else "jsonl")
        return fmt.name if fmt else None

    def check(self) -> None:
        """Validate the arguments together; one UserError lists every problem."""
        problems = []
        file_fmt = self.single_file()
        if file_fmt:
            if self.format and self.format != file_fmt:
                problems.append(
                    f"--format {self.format} disagrees with the output file name {self.out!r}"
                )
            self.format = file_fmt
            self.compression = self.compression or compression_from_name(self.out)
        self.format = self.format or "jsonl"
        if self.format not in FORMATS:
            problems.append(f"unknown format {self.format!r} (use {', '.join(FORMATS)})")
        fmt = FORMATS.get(self.format)
        if self.compression and fmt and not fmt.compressible:
            problems.append(
                "--compression applies to "
                f"{' and '.join(f.name for f in FORMATS.values() if f.compressible)}, "
                f"not {self.format}"
            )
        if self.compression not in (None, "gzip", "zstd"):
            problems.append(f"unknown compression {self.compression!r} (use gzip or zstd)")
        if self.content not in ("tokens", "text"):
            problems.append("content must be 'tokens' or 'text'")
        if self.content == "text" and self.tokenizer is None:
            problems.append("--text needs --tokenizer PATH (a local Hugging Face tokenizer folder)")
        if self.nested and fmt and not fmt.nestable:
            problems.append(
                f"--nested needs {' or '.join(f.name for f in FORMATS.values() if f.nestable)} "
                f"({self.format} rows are flat and carry batch_id)"
            )
        if self.chunk_size <= 0:
            problems.append("--chunk-size must be positive")
        problems.extend(_undecodable_paths(self))
        if self.selection_kind != "documents" and self.run is None:
            problems.append("a training-order selection needs --seq-len and --seed")
        blend = self.run.blend if self.run is not None else None
        if blend is not None and self.prefix is not None:
            problems.append("give PREFIX or a blend (data paths), not both")
        if blend is None and self.prefix is None:
            problems.append("give the dataset PREFIX (or a blend: data paths with weights)")
        if blend is not None and self.selection_kind == "documents":
            problems.append(
                "--documents exports one dataset's documents: pass that PREFIX, not a blend"
            )
        if not isinstance(self.backend, Backend) and self.backend not in BACKEND_NAMES:
            problems.append(f"unknown backend {self.backend!r} (use cpu, gpu or auto)")
        if problems:
            raise UserError("; ".join(problems))
        if self.run is not None and self.selection_kind != "documents":
            self.run.check()

    def params(self, selection: Selection) -> dict[str, Any]:
        """Parameters recorded in the manifest (and compared on --resume)."""
        return {
            "prefix": self.prefix,
            "selection": self.selection_kind,
            "selection_value": None
            if self.selection_value is None
            else np.asarray(self.selection_value).tolist(),
            "records": len(selection),
            "run": self.run.as_params() if self.run else None,
            "content": self.content,
            "tokenizer": self.tokenizer
            if isinstance(self.tokenizer, str) or self.tokenizer is None
            else getattr(self.tokenizer, "name_or_path", "object"),
            **_tokenizer_files(self),
            "skip_special_tokens": self.skip_special_tokens,
            "doc_details": self.doc_details,
            "nested": self.nested,
            "format": self.format,
            "compression": self.compression,
            "chunk_size": self.chunk_size,
            **({"batch_id_last": True} if self.batch_id_last else {}),
        }


def _tokenizer_files(spec: TokenExport) -> dict[str, str]:
    """``{"tokenizer_sha256": …}`` of a text export's tokenizer folder or file, so that a
    ``--resume`` after its files changed in place is refused rather than mixing two tokenizers'
    text in one output (an object given through the API has no files: nothing)."""
    path = spec.tokenizer
    if spec.content != "text" or not isinstance(path, str) or not os.path.exists(path):
        return {}
    from gpu.detok import tokenizer_fingerprint

    return {"tokenizer_sha256": tokenizer_fingerprint(path)}


def _undecodable_paths(spec: TokenExport) -> list[str]:
    """A problem per path that is not valid UTF-8 (a file name of other bytes, which Python
    carries as lone surrogates): manifests, progress records and outputs name their inputs in
    UTF-8 JSON, so such a name cannot be recorded."""
    run, blend = spec.run, spec.run.blend if spec.run is not None else None
    named = [("PREFIX", spec.prefix), ("--out", spec.out)]
    named.append(("--index", run.index_prefix if run is not None else None))
    named.append(("--tokenizer", spec.tokenizer if isinstance(spec.tokenizer, str) else None))
    if blend is not None:
        named += [("blend data path", p) for p in (*blend.train, *blend.valid, *blend.test)]
    return [
        f"{what} {path!r} is not valid UTF-8; rename it (or link it under a UTF-8 name) and pass "
        "that"
        for what, path in named
        if isinstance(path, str) and not is_utf8_name(path)
    ]


# -- worker side ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _dataset(prefix: str, options_json: str) -> IndexedDataset:
    return IndexedDataset(prefix, json.loads(options_json))


@functools.lru_cache(maxsize=4)
def _detokenizer(tokenizer: Any, skip_special_tokens: bool):
    """A path or a Hugging Face tokenizer: the byte-table Detokenizer; any other object with
    ``decode`` (API only): :class:`DecodeFallback`, its ``decode`` per window."""
    from pipeline.tokens.decode_fallback import DecodeFallback, is_hf_tokenizer

    if isinstance(tokenizer, DecodeFallback):
        return tokenizer.with_skip_special_tokens(skip_special_tokens)
    if not isinstance(tokenizer, str) and not is_hf_tokenizer(tokenizer):
        return DecodeFallback(tokenizer, skip_special_tokens=skip_special_tokens)
    from gpu.detok import Detokenizer

    if isinstance(tokenizer, str):
        return Detokenizer.from_pretrained(tokenizer, skip_special_tokens=skip_special_tokens)
    return Detokenizer.from_tokenizer(tokenizer, skip_special_tokens=skip_special_tokens)


def check_vocabulary(tokens: np.ndarray, detok: Any, prefix: str | None) -> None:
    """UserError when ``tokens`` (read from dataset ``prefix``; None: a blend's) hold an id
    beyond ``detok``'s vocabulary: the tokenizer would decode it to nothing, so it is the
    wrong tokenizer. Every text path (exports, ``inspect``, the API's samples) checks here."""
    top = int(np.max(tokens)) if len(tokens) else -1
    if top >= detok.vocab_size:
        where = f"{prefix}.bin" if prefix else "the blend's datasets"
        raise UserError(
            f"token id {top} in {where} is outside the tokenizer's vocabulary "
            f"({detok.vocab_size} ids); pass --tokenizer the one the dataset was made with"
        )


@dataclass(frozen=True)
class ChunkTask:
    """What a worker needs for one part: no sample index, only token ranges."""

    part: int
    relative: str
    prefix: str
    options_json: str
    ids: np.ndarray
    batch_ids: np.ndarray | None
    starts: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray | None  # segments per window (None: one segment per document)
    width: int | None
    pad_token: int
    details: dict[str, np.ndarray] | None
    header: bool
    # A blend's chunk: one (prefix, positions in ids, starts, lengths, counts) per dataset,
    # and each record's (dataset prefix, sample id in it).
    pieces: tuple[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...] | None = None
    sources: tuple[np.ndarray, np.ndarray] | None = None
    backend: Backend = CPU  # where detokenization runs (resolved from --backend)
    # The part goes to a one-file export's joiner in this process, from memory (no part file).
    in_memory: bool = False


def _gather_blend(task: ChunkTask) -> np.ndarray:
    """The windows of a blend's chunk, read dataset by dataset: flat ``[n * width]``."""
    from pipeline.tokens.sample_order import WindowPlan

    datasets = [_dataset(piece[0], task.options_json) for piece in task.pieces]
    # int32 holds every token type but int64 (and megatron's pad -1, which uint16 cannot).
    narrow = np.int32 if all(d.dtype.itemsize <= 4 for d in datasets) else np.int64
    out = np.empty((len(task.ids), task.width), narrow)
    for dataset, (_, positions, starts, lengths, counts) in zip(datasets, task.pieces, strict=True):
        plan = WindowPlan(starts, lengths, counts, task.width, task.pad_token)
        out[positions] = plan.gather(dataset, narrow)
    return out.reshape(-1)


def _gather(task: ChunkTask) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's tokens, flat, and each record's offsets into them."""
    n = len(task.ids)
    if task.pieces is not None:
        return _gather_blend(task), np.arange(n + 1, dtype=np.int64) * task.width
    dataset = _dataset(task.prefix, task.options_json)
    # int32 holds every token type but int64 (and megatron's pad -1, which uint16 cannot).
    narrow = np.int32 if dataset.dtype.itemsize <= 4 else np.int64
    if task.width is not None:
        from pipeline.tokens.sample_order import WindowPlan

        plan = WindowPlan(task.starts, task.lengths, task.counts, task.width, task.pad_token)
        return plan.gather(dataset, narrow).reshape(-1), np.arange(
            n + 1, dtype=np.int64
        ) * task.width
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(task.lengths, out=offsets[1:])
    return dataset.read(task.starts, task.lengths).astype(narrow, copy=False), offsets


def export_chunk(
    task: ChunkTask,
    spec: TokenExport,
    out_fs: Any,
    out_base: str,
    metadata: dict,
    detok: Any = None,
) -> PartRecord | RenderedPart:
    """Gather, convert and write one chunk (runs on a worker), or render it in memory when
    the driver joins it into a one-file export (``task.in_memory``).

    ``detok`` is the driver's verified Detokenizer, shipped once per worker (its pickle leaves
    the Hugging Face tokenizer out), so workers never load transformers or rebuild the table.
    """
    n = len(task.ids)
    flat, offsets = _gather(task)
    text = spec.content == "text"
    records = tr.TokenRecords(
        index=task.ids,
        batch_id=task.batch_ids,
        tokens=None if text else flat,
        token_offsets=None if text else offsets,
        width=task.width,
        text=None,
        text_offsets=None,
        details=task.details,
        nested=spec.nested,
        metadata=metadata,
        batch_id_last=spec.batch_id_last,
        dataset=task.sources[0] if task.sources is not None else None,
        dataset_sample_id=task.sources[1] if task.sources is not None else None,
    )
    if text:
        check_vocabulary(flat, detok, task.prefix)
        # The kernel runs on the task's backend (on a GPU: tokens copied to the device once);
        # writers take host bytes, so the result comes back once. A tokenizer without a byte
        # table decodes window by window in Python, on the host whatever the backend. JSONL
        # lines come whole from the kernel: each text escaped and framed as it is decoded.
        backend = CPU if isinstance(detok, DecodeFallback) else task.backend
        tokens, token_offsets = backend.from_numpy(flat), backend.from_numpy(offsets)
        frames = FORMATS[spec.format].line_frames(records)
        if frames is not None:
            data, _ = detok.decode_to_bytes(tokens, token_offsets, json=True, frames=frames)
            records.lines = backend.asnumpy(data)
        else:
            data, offs = detok.decode_to_bytes(tokens, token_offsets)
            records.text, records.text_offsets = backend.asnumpy(data), backend.asnumpy(offs)

    def write(handle) -> tuple[int, dict]:
        with compressed(handle, spec.compression) as stream:
            FORMATS[spec.format].write(stream, records, task.header)
        rows = len(tr._batch_groups(task.batch_ids)) if spec.nested and n else n
        return rows, {"tokens": int(len(flat)), "records": n}

    if task.in_memory:
        return render_part(task.relative, write)
    staged = spec.single_file() is not None  # joined into one (durable) file at the end
    return write_part(out_fs, out_base, task.relative, write, staged=staged)


# -- driver side ---------------------------------------------------------------------------
def part_name(part: int, ext: str) -> str:
    """The file name of part ``part`` (deterministic: ``part-00003.jsonl``)."""
    return f"part-{part:05d}{ext}"


class _Planner:
    """Turns chunks into worker tasks (window plans or document ranges)."""

    def __init__(
        self,
        spec: TokenExport,
        dataset: IndexedDataset,
        order,
        ext: str,
        single: bool,
        in_memory: bool = False,
    ) -> None:
        self.spec, self.dataset, self.order, self.ext = spec, dataset, order, ext
        self.single, self.in_memory = single, in_memory
        self.options_json = json.dumps(spec.storage_options, sort_keys=True)
        self.backend = resolve_backend(spec.backend)

    def relative(self, part: int) -> str:
        return part_name(part, self.ext)

    def tasks(
        self, chunks: Iterable[Chunk], done: Mapping[str, PartRecord], args: tuple
    ) -> Iterator[Task]:
        """Runner tasks, planned lazily (finished parts of a resumed run are not planned)."""
        for chunk in chunks:
            relative = self.relative(chunk.part)
            yield Task(relative, () if relative in done else (self.task(chunk), *args))

    def task(self, chunk: Chunk) -> ChunkTask:
        details = pieces = sources = None
        if isinstance(self.order, BlendOrder):
            planned = self.order.plan(chunk.ids)
            pieces = tuple(
                (self.order.prefixes[k], positions, p.starts, p.lengths, p.counts)
                for k, positions, p in planned
            )
            starts = lengths = counts = None
            width, pad = self.order.window_len, self.order.components[0].order.pad_token
            sources = self.order.provenance(chunk.ids)
            if self.spec.doc_details:
                details = self.order.doc_details(chunk.ids)
        elif self.order is not None:
            plan = self.order.plan_windows(self.dataset.token_starts, self.dataset.sizes, chunk.ids)
            starts, lengths, counts, width, pad = (
                plan.starts,
                plan.lengths,
                plan.counts,
                plan.width,
                plan.pad_token,
            )
            if self.spec.doc_details:
                details = self.order.doc_details(chunk.ids)
        else:
            starts = self.dataset.token_starts[chunk.ids]
            lengths = self.dataset.sizes[chunk.ids].astype(np.int64)
            counts, width, pad = None, None, 0
        header = not self.single or chunk.part == 0
        return ChunkTask(
            chunk.part,
            self.relative(chunk.part),
            self.spec.prefix,
            self.options_json,
            chunk.ids,
            chunk.batch_ids,
            starts,
            lengths,
            counts,
            width,
            pad,
            details,
            header,
            pieces,
            sources,
            self.backend,
            self.in_memory,
        )


@dataclass
class PreparedExport:
    """A checked export: data opened, selection within bounds, output ready to write."""

    spec: TokenExport
    dataset: IndexedDataset
    order: Any
    selection: Selection
    params: dict[str, Any]
    single: bool
    ext: str

    @property
    def n_parts(self) -> int:
        """Number of part files (= tasks) the export writes."""
        n, step = len(self.selection), self.selection.chunk_step(self.spec.chunk_size)
        return -(-n // step) if n else 0


def prepare_token_export(
    spec: TokenExport, *, dataset: IndexedDataset | None = None, order: Any = None
) -> PreparedExport:
    """Check everything that can be checked before a cluster starts or a byte is written."""
    spec.check()
    blend = spec.run.blend if spec.run is not None else None
    prefixes = blend.all_prefixes() if blend is not None else [spec.prefix]
    inputs = [f"{p}.{ext}" for p in prefixes for ext in ("bin", "idx")]
    inputs += [spec.tokenizer] if isinstance(spec.tokenizer, str) else []
    inputs += [spec.run.index_prefix] if spec.run is not None and spec.run.index_prefix else []
    check_reachable([spec.out, *inputs], spec.storage_options)  # a dead endpoint: exit 3 now
    check_disjoint(spec.out, inputs, spec.storage_options)
    if isinstance(spec.backend, str) and spec.backend != "cpu":
        spec.backend = resolve_backend(spec.backend).name  # "auto" resolved; "gpu" checked
    if spec.content == "text":
        _detokenizer(spec.tokenizer, spec.skip_special_tokens)  # fail early on a bad tokenizer
    if blend is None:
        dataset = dataset or IndexedDataset(spec.prefix, spec.storage_options)
    if spec.selection_kind != "documents" and order is None:
        order = open_sample_order(dataset, spec.run)
    if spec.selection_kind == "documents":
        order = None
    selection = make_selection(
        spec.selection_kind,
        spec.selection_value,
        num_samples=len(order) if order is not None else 0,
        num_documents=len(dataset) if dataset is not None else 0,
        batch_size=spec.run.batch_size if spec.run else None,
    )
    if spec.nested and not selection.has_batches:
        raise UserError("--nested applies to batch selections (--batches, --batch-range)")
    single = spec.single_file() is not None
    staging = f"{spec.out.rstrip('/')}{STAGING_SUFFIX if single else ''}"
    OutputDir(staging, spec.storage_options).lock.ensure_free()  # a run in progress: exit 3
    if single:
        _check_single_target(spec, spec.out.rstrip("/"))
    ext = f".{spec.format}{suffix(spec.compression)}"
    return PreparedExport(spec, dataset, order, selection, spec.params(selection), single, ext)


def run_token_export(
    spec: TokenExport | PreparedExport, executor: Any, *, progress: bool = True
) -> dict[str, Any]:
    """Run a token export on ``executor`` (or a Dask client); returns the summary."""
    t0 = time.perf_counter()
    prepared = spec if isinstance(spec, PreparedExport) else prepare_token_export(spec)
    spec, single, params = prepared.spec, prepared.single, prepared.params
    executor = as_executor(executor)
    out_url = spec.out.rstrip("/")
    staging = f"{out_url}{STAGING_SUFFIX if single else ''}"
    output = OutputDir(
        staging,
        spec.storage_options,
        owned=() if single else card.OWNED,
        staging_for=out_url if single else None,
    )
    done = output.prepare(params, overwrite=spec.overwrite, resume=spec.resume)
    joiner = _in_order_join(prepared, output, out_url) if single else None
    # Tasks of this process hand a one-file export's parts to the joiner in memory.
    in_memory = joiner is not None and executor.shares_memory
    planner = _Planner(spec, prepared.dataset, prepared.order, prepared.ext, single, in_memory)
    metadata = {
        "tool": "dexport",
        **{k: params[k] for k in ("prefix", "selection", "content", "tokenizer")},
        "run": params["run"],
    }
    try:
        if joiner is not None and spec.resume:
            joined = joiner.resume()
            output.fresh = output.fresh and not joined
            done = {**done, **joined}
        tasks = planner.tasks(
            prepared.selection.chunks(spec.chunk_size),
            done,
            (spec, output.fs, output.path, metadata),
        )
        shared = (
            (_detokenizer(spec.tokenizer, spec.skip_special_tokens),)
            if spec.content == "text"
            else ()
        )
        bar = Progress(prepared.n_parts, "dexport tokens", initial=0, enabled=progress)
        records = run_tasks(
            executor,
            export_chunk,
            tasks,
            shared=shared,
            finished=done,
            progress=bar,
            on_result=joiner.add if joiner is not None else None,
        )
        totals = {
            "records": sum(r.extra["records"] for r in records),
            "rows": sum(r.rows for r in records),
            "tokens": sum(r.extra["tokens"] for r in records),
            "bytes": sum(r.bytes for r in records),
        }
        if single:
            _assemble_single(spec, output, records, out_url, joiner)
            files = [out_url]
        else:
            readme = _publish_card(output, params, totals, prepared.ext)
            output.finalize(params, "tokens", records, totals, [readme])
            files = [join(out_url, r.path) for r in records]
    except BaseException as exc:
        if joiner is not None:
            joiner.close()  # what it joined stays for --resume (or goes with the staging folder)
        output.abandon(exc)
        raise
    seconds = time.perf_counter() - t0
    # The rate of this run's work: parts an earlier run finished (--resume) took no time here.
    exported = sum(r.extra["tokens"] for r in records if r.path not in done)
    return {
        **totals,
        "files": len(files),
        "out": out_url,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(exported / seconds) if seconds else 0,
    }


def _publish_card(
    output: OutputDir, params: dict[str, Any], totals: dict[str, Any], ext: str
) -> PartRecord:
    """Write the folder's dataset card (``datasets.load_dataset(OUT)`` reads the parts)."""
    data = card.render_card(params, totals, ext).encode()
    write_bytes_atomic(output.fs, output.file(card.CARD), data)
    return PartRecord(card.CARD, 0, len(data), hashlib.sha256(data).hexdigest(), None)


def _check_single_target(spec: TokenExport, out_url: str) -> None:
    """Refuse a single-file ``--out`` that is a folder, or a file dexport may not replace.

    dexport replaces only what it wrote: ``--overwrite`` (and the end of ``--resume``) replaces
    an existing file only when it is recognisably a dexport token export of its format.
    """
    fs, path = resolve(out_url, spec.storage_options)
    if fs.isdir(path):
        raise UserError(
            f"output {out_url} is a folder; name a new file, "
            "or a folder without an extension for part files"
        )
    if not fs.exists(path):
        return
    flag = "--overwrite" if spec.overwrite else "--resume" if spec.resume else None
    if not is_token_export(fs, path, spec.format, spec.compression):
        raise UserError(
            f"{flag + ' refused: ' if flag else 'output '}{out_url} "
            f"{'was not written by dexport' if flag else 'already exists (not a dexport export)'}"
            "; remove it yourself or pick another --out"
        )
    staging = OutputDir(f"{out_url}{STAGING_SUFFIX}", spec.storage_options)
    if flag is None:
        # An interrupted run: killed after the rename, or midway while an earlier export
        # (kept until the rename) is still at the target; --resume finishes either.
        if f"{PROGRESS}/params.json" in staging.listing():
            raise UserError(
                f"output {out_url} exists and an interrupted export to it left "
                f"{out_url}{STAGING_SUFFIX}; pass --resume to finish that export, "
                "or --overwrite to start again"
            )
        raise UserError(f"output {out_url} already exists; pass --overwrite to replace it")
    if spec.resume and f"{PROGRESS}/params.json" not in staging.listing():
        raise UserError(
            f"output {out_url} is a finished dexport export (no interrupted run to finish); "
            "pass --overwrite to export it again"
        )


def _in_order_join(prepared: PreparedExport, output: OutputDir, out_url: str) -> InOrderJoin | None:
    """A join of the parts into the one local file as they finish (JSONL and CSV parts are
    concatenated), else None: joined at the end by the format."""
    if not is_local(output.fs) or not FORMATS[prepared.spec.format].concatenated:
        return None
    from pipeline.runtime.join import InOrderJoin

    names = [part_name(k, prepared.ext) for k in range(prepared.n_parts)]
    _, target = resolve(out_url, prepared.spec.storage_options)
    return InOrderJoin(names, output.path, target)


def _assemble_single(
    spec: TokenExport,
    output: OutputDir,
    records: list[PartRecord],
    out_url: str,
    joiner: InOrderJoin | None,
) -> None:
    if not records:
        raise UserError("the selection is empty; nothing to write")
    if joiner is not None:
        joiner.publish()
    else:
        fs, target = resolve(out_url, spec.storage_options)
        FORMATS[spec.format].join(fs, [output.file(r.path) for r in records], target)
    output.discard()


__all__ = ["TokenExport", "PreparedExport", "prepare_token_export", "run_token_export", "PROGRESS"]
