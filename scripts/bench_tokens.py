#!/usr/bin/env python3
"""Benchmark token export: dexport against the loops users would otherwise run.

One process run measures, on the same selection (``--windows`` samples of ``--seq-len + 1``
tokens in GPT-NeoX training order over a generated dataset tokenized with a real byte-level
BPE):

* (a) a TokenSmith-style loop: one window at a time (``SampleOrder.windows([i])``, like
  TokenSmith's ``__getitem__``), ``tokenizer.decode``, ``json.dump(record, f,
  ensure_ascii=False)`` and a newline, as TokenSmith's ``_write_chunk_to_jsonl`` does — as text
  and as raw token lists;
* (b) a batched baseline: one vectorized gather per chunk, ``tokenizer.batch_decode`` and
  ``orjson`` (token lists: ``orjson`` with ``OPT_SERIALIZE_NUMPY``);
* (c) dexport (``run_token_export``) on an embedded local cluster started beforehand (its
  start-up time is reported separately): text JSONL (first run on fresh workers, which load
  the tokenizer, then again on warm workers), raw tokens JSONL and raw tokens Parquet, and raw
  tokens JSONL of a GPT-NeoX blend (0.6/0.4) of the dataset and a second one of the same size,
  the same number of windows (``dataset``/``dataset_sample_id`` in every record).

Peak memory is read from the kernel: the peak resident set (``VmHWM``) of each process, reset
before every measurement (``/proc/PID/clear_refs``), plus a sampler thread that records the
peak of the summed RSS (and of its anonymous part) over the process tree (this process, the
scheduler living in it, and the worker processes). Memory flatness: the whole of a dataset of
``--flat-tokens`` tokens and of one ``--flat-factor`` times larger is exported as tokens with
the same ``--chunk-size``, and the peak worker RSS of both runs is reported.

Linux only (``/proc``). Defaults: 10,000 windows, flatness over 5 M and 50 M tokens, Mistral's
tekken tokenizer (from ``mistral-common``; a small trained byte-level BPE without it); about
2 minutes on 2 idle cores, under 6 when the machine is shared. ``--windows``,
``--flat-tokens`` and ``--skip-*`` change the size. Examples::

    .venv/bin/python scripts/bench_tokens.py
    .venv/bin/python scripts/bench_tokens.py --windows 20000 --flat-tokens 10000000 --write-docs
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pipeline.formats.indexed_dataset import (  # noqa: E402
    IndexedDataset,
    IndexedDatasetBuilder,
    token_dtype_for_vocab,
)
from pipeline.tokens.sample_order import SampleOrder  # noqa: E402
from pipeline.tokens.source import TrainingRun, open_sample_order  # noqa: E402

MIB = 1024 * 1024
DOCS_SECTION = "## Token export"


# -- memory ---------------------------------------------------------------------------------
def _status(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` of a process in bytes (empty if gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return out


@dataclass
class MemoryReport:
    """Peaks of one measurement, in bytes."""

    own_peak: int = 0  # this process (client + scheduler, or the baseline loop)
    worker_peaks: dict[int, int] = field(default_factory=dict)  # VmHWM per worker pid
    worker_anon_peaks: dict[int, int] = field(default_factory=dict)  # sampled RssAnon per worker
    worker_idle: dict[int, int] = field(default_factory=dict)  # RSS per worker when the run starts
    tree_peak: int = 0  # sampled peak of the summed RSS over the process tree
    tree_anon_peak: int = 0  # sampled peak of the summed anonymous RSS

    @property
    def sum_of_peaks(self) -> int:
        """Sum of per-process peaks (an upper bound of the simultaneous total)."""
        return self.own_peak + sum(self.worker_peaks.values())


class TreeMemory:
    """Resets and reads the kernel's per-process RSS peaks; samples the tree's total."""

    def __init__(self, worker_pids: list[int] | None = None, interval: float = 0.02) -> None:
        self.worker_pids = list(worker_pids or [])
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.report = MemoryReport()

    def _pids(self) -> list[int]:
        me = psutil.Process()
        return [me.pid, *(c.pid for c in me.children(recursive=True))]

    def __enter__(self) -> TreeMemory:
        for pid in self._pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
                    fh.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            except OSError:
                pass
        self.report.worker_idle = {pid: _status(pid).get("VmRSS", 0) for pid in self.worker_pids}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        pids = self._pids()
        next_refresh = time.monotonic() + 1.0
        while not self._stop.is_set():
            if time.monotonic() > next_refresh:
                pids, next_refresh = self._pids(), time.monotonic() + 1.0
            stats = {pid: _status(pid) for pid in pids}
            total = sum(s.get("VmRSS", 0) for s in stats.values())
            anon = sum(s.get("RssAnon", 0) for s in stats.values())
            rep = self.report
            rep.tree_peak, rep.tree_anon_peak = (
                max(rep.tree_peak, total),
                max(rep.tree_anon_peak, anon),
            )
            for pid in self.worker_pids:
                a = stats.get(pid, {}).get("RssAnon", 0)
                rep.worker_anon_peaks[pid] = max(rep.worker_anon_peaks.get(pid, 0), a)
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.report.own_peak = _status(os.getpid()).get("VmHWM", 0)
        for pid in self.worker_pids:
            self.report.worker_peaks[pid] = _status(pid).get("VmHWM", 0)


# -- data -----------------------------------------------------------------------------------
def build_tokenizer(workdir: Path, name: str) -> tuple[str, str]:
    """A real byte-level BPE folder: Mistral's tekken (131k) or, without mistral-common, a small
    one."""
    import tokenizers_fixtures as tf

    if name == "tekken":
        done = workdir / "tokenizer" / "tekken_240718"
        path = (
            done
            if (done / "tokenizer.json").exists()
            else tf.tekken_tokenizer_dir(workdir / "tokenizer")
        )
        if path is not None:
            return (
                str(path),
                "Mistral tekken_240718 byte-level BPE (131,072 ids, from mistral-common)",
            )
        print("mistral-common is not installed; using the small byte-level BPE", file=sys.stderr)
    path = tf.byte_bpe_tokenizer_dir(workdir / "tokenizer")
    return str(path), "byte-level BPE trained on the generated text (1,500 ids)"


def token_pool(tokenizer_path: str, pool_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated multilingual documents tokenized once (+ EOD): ``(flat tokens, offsets)``."""
    import tokenizers_fixtures as tf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    eod = tok.eos_token_id if tok.eos_token_id is not None else 0
    rng = np.random.default_rng(seed)
    pieces, lengths, total, batch = [], [], 0, 0
    while total < pool_tokens:
        lines = tf.multilingual_text(4000, seed=seed + batch)
        batch += 1
        cuts = np.cumsum(rng.integers(1, 40, size=len(lines)))
        cuts = cuts[cuts < len(lines)]
        docs = [
            "\n".join(part) for part in np.split(np.array(lines, dtype=object), cuts) if len(part)
        ]
        for ids in tok(docs, add_special_tokens=False)["input_ids"]:
            pieces.append(np.asarray([*ids, eod], np.int64))
            lengths.append(len(ids) + 1)
            total += len(ids) + 1
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.concatenate(pieces), offsets


def write_dataset(
    prefix: str, pool: tuple[np.ndarray, np.ndarray], n_tokens: int, dtype: np.dtype, seed: int
) -> None:
    """Write at least ``n_tokens`` tokens: the pool's documents repeated in shuffled orders."""
    flat, offsets = pool
    sizes = np.diff(offsets)
    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(prefix, dtype)
    written = 0
    while written < n_tokens:
        perm = rng.permutation(len(sizes))
        keep = np.cumsum(sizes[perm]) <= n_tokens - written
        keep[0] = True
        perm = perm[keep]
        starts = offsets[:-1][perm]
        lens = sizes[perm]
        idx = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        new_off = np.zeros(len(perm) + 1, np.int64)
        np.cumsum(lens, out=new_off[1:])
        builder.add_documents(flat[idx], new_off)
        written += int(lens.sum())
    builder.finalize()


# -- baselines ------------------------------------------------------------------------------
def loop_export(
    ds: IndexedDataset, order: SampleOrder, ids: np.ndarray, out: Path, tokenizer: Any
) -> None:
    """TokenSmith-style: one window read per sample, ``decode``, ``json.dump``, newline."""
    with open(out, "w", encoding="utf-8") as f:
        for i in ids.tolist():
            window = order.windows(ds, np.array([i]))[0]
            content = (
                tokenizer.decode(window.tolist()) if tokenizer is not None else window.tolist()
            )
            json.dump({"index": i, "content": content}, f, ensure_ascii=False)
            f.write("\n")


def batch_export(
    ds: IndexedDataset, order: SampleOrder, ids: np.ndarray, out: Path, tokenizer: Any, chunk: int
) -> None:
    """Batched: one gather per chunk, ``batch_decode`` (text) and ``orjson`` per record."""
    with open(out, "wb") as f:
        for lo in range(0, len(ids), chunk):
            part = ids[lo : lo + chunk]
            windows = order.windows(ds, part)
            if tokenizer is not None:
                texts = tokenizer.batch_decode(windows.tolist())
                lines = [
                    orjson.dumps({"index": i, "content": t})
                    for i, t in zip(part.tolist(), texts, strict=True)
                ]
            else:
                lines = [
                    orjson.dumps({"index": i, "content": w}, option=orjson.OPT_SERIALIZE_NUMPY)
                    for i, w in zip(part.tolist(), windows, strict=True)
                ]
            f.write(b"\n".join(lines) + b"\n")


def _import_worker_modules(text: bool) -> None:
    """What a worker imports on its first export task (numba kernels, pandas via Parquet)."""
    import importlib

    names = ["pipeline.tokens.job", "pandas"] + (
        ["gpu.text_escape", "gpu.detok", "transformers"] if text else []
    )
    for name in names:
        importlib.import_module(name)


def _load_detokenizer(tokenizer_path: str) -> None:
    """Fill a worker's detokenizer cache as its first text task would (untimed)."""
    from pipeline.tokens.job import _detokenizer

    _detokenizer(tokenizer_path, False)


# -- results --------------------------------------------------------------------------------
@dataclass
class Result:
    """One measured export."""

    name: str
    content: str
    fmt: str
    records: int
    tokens: int
    seconds: float
    memory: MemoryReport
    out_bytes: int
    dexport: bool = False
    note: str = ""

    @property
    def tokens_per_s(self) -> float:
        """Throughput of the measured run."""
        return self.tokens / self.seconds if self.seconds else 0.0


def _size(path: Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(
    name: str,
    content: str,
    fmt: str,
    records: int,
    tokens: int,
    out: Path,
    fn: Any,
    worker_pids: list[int],
    **kw: Any,
) -> Result:
    """Run ``fn()`` under the memory probes; time it; return the result (output removed)."""
    gc.collect()
    with TreeMemory(worker_pids) as mem:
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
    res = Result(name, content, fmt, records, tokens, seconds, mem.report, _size(out), **kw)
    print(
        f"  {name:<44} {content:<6} {fmt:<7} {seconds:8.2f} s  {res.tokens_per_s / 1e6:8.2f} M "
        "tokens/s",
        file=sys.stderr,
    )
    return res


def same_records(a: Path, b: Path) -> bool:
    """True when two JSONL exports (a file, or a directory of parts) hold equal records."""

    def lines(path: Path) -> Any:
        """Lines of the file, or of the directory's JSONL parts in order."""
        files = [path] if path.is_file() else sorted(path.glob("part-*.jsonl"))
        for p in files:
            with open(p, "rb") as fh:
                yield from fh

    sentinel = object()
    from itertools import zip_longest

    for x, y in zip_longest(lines(a), lines(b), fillvalue=sentinel):
        if x is sentinel or y is sentinel or orjson.loads(x) != orjson.loads(y):
            return False
    return True


def _mib(n: int) -> str:
    """Bytes as whole MiB with thousands separators."""
    return f"{n / MIB:,.0f}"


def main_table(results: list[Result]) -> str:
    """Markdown table: tokens/s, ratios against both baselines of the same content, memory."""
    base = {(r.name.split(" ")[0], r.content): r for r in results if not r.dexport}
    head = (
        "| exporter | content | format | seconds | M tokens/s | vs (a) loop | vs (b) batched |"
        " peak RSS MiB (this process / workers, sum) | output MiB |"
    )
    rows = [head, "|" + "---|" * 9]
    for r in results:
        ratios = []
        for key in ("(a)", "(b)"):
            ref = base.get((key, r.content))
            ratios.append(
                f"{r.tokens_per_s / ref.tokens_per_s:.1f}×" if ref and ref.tokens_per_s else "–"
            )
        workers = " + ".join(_mib(v) for v in r.memory.worker_peaks.values())
        mem = (
            f"{_mib(r.memory.own_peak)} / {workers}, {_mib(r.memory.sum_of_peaks)}"
            if r.dexport
            else f"{_mib(r.memory.own_peak)}"
        )
        name = f"{r.name} {r.note}".strip()
        rows.append(
            f"| {name} | {r.content} | {r.fmt} | {r.seconds:.2f} | {r.tokens_per_s / 1e6:.2f} | "
            f"{ratios[0]} | {ratios[1]} | {mem} | {_mib(r.out_bytes)} |"
        )
    return "\n".join(rows)


def flat_table(results: list[tuple[int, Result]]) -> str:
    """Markdown table of the memory-flatness runs."""
    head = (
        "| dataset tokens | records | seconds | M tokens/s | RSS per worker at start MiB |"
        " peak RSS per worker MiB | peak anonymous RSS per worker MiB |"
        " peak RSS this process MiB | peak summed RSS of the tree MiB |"
    )
    rows = [head, "|" + "---|" * 9]
    for n_tokens, r in results:
        idle = " / ".join(_mib(v) for v in r.memory.worker_idle.values())
        workers = " / ".join(_mib(v) for v in r.memory.worker_peaks.values())
        anon = " / ".join(_mib(v) for v in r.memory.worker_anon_peaks.values())
        rows.append(
            f"| {n_tokens:,} | {r.records:,} | {r.seconds:.2f} | {r.tokens_per_s / 1e6:.2f} | "
            f"{idle} | {workers} | {anon} | {_mib(r.memory.own_peak)} | {_mib(r.memory.tree_peak)} "
            "|"
        )
    return "\n".join(rows)


def write_docs(section: str, path: Path, heading: str = DOCS_SECTION) -> None:
    """Replace (or append) the section under ``heading`` (default ``## Token export``) of
    ``path``, re-read just before; the other benchmark scripts write theirs with it too."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next(
            (j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + section.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


# -- the run --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--windows",
        type=int,
        default=10_000,
        help="samples exported by every exporter (default 10000)",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=2048,
        help="training sequence length; windows hold seq_len + 1 tokens",
    )
    p.add_argument(
        "--seed", type=int, default=1234, help="training data seed of the GPT-NeoX order"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=1000,
        help="records per task / part (dexport) and per batch (b)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes of the embedded cluster (default 2)",
    )
    p.add_argument(
        "--tokenizer",
        choices=("tekken", "byte-bpe"),
        default="tekken",
        help="tekken: Mistral's real 131k byte-level BPE (default)",
    )
    p.add_argument(
        "--pool-tokens",
        type=int,
        default=1_000_000,
        help="tokens of generated text tokenized, then repeated to size",
    )
    p.add_argument(
        "--flat-tokens",
        type=int,
        default=5_000_000,
        help="size S of the memory-flatness dataset (S and factor*S)",
    )
    p.add_argument("--flat-factor", type=int, default=10)
    p.add_argument("--skip-text", action="store_true", help="skip the text exports")
    p.add_argument(
        "--skip-loops", action="store_true", help="skip the (a) per-window loops (the slowest part)"
    )
    p.add_argument("--skip-flat", action="store_true", help="skip the memory-flatness runs")
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep data here (reused by later runs); default: a temporary folder",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="replace the '## Token export' section of docs/benchmarks.md",
    )
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the Markdown tables (and update the docs if asked)."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="bench-tokens-")
    work = args.workdir or Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, work, t_start)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Bench:
    """What the measurements share: the data, its order, the selection and the output folder."""

    args: argparse.Namespace
    work: Path
    tok_path: str
    dtype: np.dtype
    ds: IndexedDataset
    run: TrainingRun
    order: SampleOrder
    outs: Path

    @property
    def ids(self) -> np.ndarray:
        """The selected sample ids (``0 .. windows-1``)."""
        return np.arange(self.args.windows, dtype=np.int64)

    @property
    def tokens(self) -> int:
        """Tokens in the selection."""
        return self.args.windows * (self.args.seq_len + 1)


def _log(msg: str) -> None:
    """Progress on stderr (stdout carries the Markdown report)."""
    print(msg, file=sys.stderr)


def prepare_bench(args: argparse.Namespace, work: Path) -> tuple[Bench, str]:
    """Tokenizer, dataset (enough tokens for the windows in one epoch of the train split), order."""
    from transformers import AutoTokenizer

    tok_path, tok_desc = build_tokenizer(work, args.tokenizer)
    dtype = token_dtype_for_vocab(len(AutoTokenizer.from_pretrained(tok_path)))
    n_tokens = int(args.windows * args.seq_len / 0.969 * 1.01) + args.seq_len + 1
    prefix = str(work / "data" / f"bench_{args.tokenizer}_{n_tokens}")
    (work / "data").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    if not Path(prefix + ".idx").exists():
        write_dataset(
            prefix, token_pool(tok_path, args.pool_tokens, args.seed), n_tokens, dtype, args.seed
        )
    ds = IndexedDataset(prefix)
    run = TrainingRun(seq_len=args.seq_len, seed=args.seed, num_samples=args.windows)
    order = open_sample_order(ds, run)
    _log(
        f"data: {ds.num_tokens:,} tokens ({ds.dtype}), {len(ds):,} documents, {len(order):,} "
        f"samples; {time.perf_counter() - t0:.1f} s"
    )
    outs = work / "out"
    shutil.rmtree(outs, ignore_errors=True)
    outs.mkdir()
    gc.collect()
    return Bench(args, work, tok_path, dtype, ds, run, order, outs), tok_desc


def run_baselines(b: Bench) -> list[Result]:
    """(a) and (b), tokens then text, in this process (their outputs are kept for the checks)."""
    from transformers import AutoTokenizer

    args, results = b.args, []
    tokenizer = AutoTokenizer.from_pretrained(b.tok_path)
    _log("baselines (this process):")
    for content in ["tokens"] + ([] if args.skip_text else ["text"]):
        tk = tokenizer if content == "text" else None
        if not args.skip_loops:
            out = b.outs / f"loop-{content}.jsonl"
            results.append(
                measure(
                    "(a) TokenSmith-style loop",
                    content,
                    "jsonl",
                    args.windows,
                    b.tokens,
                    out,
                    lambda o=out, t=tk: loop_export(b.ds, b.order, b.ids, o, t),
                    [],
                )
            )
            if content == "tokens":
                out.unlink()
        out = b.outs / f"batch-{content}.jsonl"
        name = "(b) batch_decode + orjson" if tk else "(b) batched gather + orjson"
        results.append(
            measure(
                name,
                content,
                "jsonl",
                args.windows,
                b.tokens,
                out,
                lambda o=out, t=tk: batch_export(b.ds, b.order, b.ids, o, t, args.chunk_size),
                [],
            )
        )
    del tokenizer
    gc.collect()
    return results


def _prepare(
    b: Bench, content: str, fmt: str, name: str, chunk: int | None = None, stop: int | None = None
) -> tuple[Any, float]:
    """A prepared dexport run over samples ``[0, stop)`` and the seconds ``prepare`` took."""
    from pipeline.tokens.job import TokenExport, prepare_token_export

    spec = TokenExport(
        prefix=b.ds.prefix,
        out=str(b.outs / name),
        selection_kind="sequence_range",
        selection_value=(0, stop or b.args.windows),
        run=b.run,
        content=content,
        tokenizer=b.tok_path if content == "text" else None,
        format=fmt,
        chunk_size=chunk or b.args.chunk_size,
        overwrite=True,
    )
    t0 = time.perf_counter()
    prepared = prepare_token_export(spec, dataset=b.ds, order=b.order)
    return prepared, time.perf_counter() - t0


def warm_up(b: Bench, client: Any) -> float:
    """First-use imports on every worker, then one small untimed export (not in the timings)."""
    from pipeline.tokens.job import run_token_export

    t0 = time.perf_counter()
    client.run(_import_worker_modules, not b.args.skip_text)
    stop = min(b.args.windows, 200 * b.args.workers)
    prepared, _ = _prepare(
        b, "tokens", "jsonl", "warm-up", chunk=max(1, stop // (2 * b.args.workers)), stop=stop
    )
    run_token_export(prepared, client, progress=False)
    shutil.rmtree(b.outs / "warm-up")
    return time.perf_counter() - t0


def run_dexport(
    b: Bench, client: Any, worker_pids: list[int]
) -> tuple[list[Result], dict[str, bool]]:
    """(c): tokens JSONL and Parquet, text JSONL on fresh then warm workers; outputs checked."""
    from pipeline.tokens.job import run_token_export

    def one(content: str, fmt: str, name: str, note: str = "") -> Result:
        """Prepare (untimed, reported when slow), then measure one export."""
        prepared, prep_s = _prepare(b, content, fmt, name)
        res = measure(
            "(c) dexport",
            content,
            fmt,
            b.args.windows,
            b.tokens,
            b.outs / name,
            lambda: run_token_export(prepared, client, progress=False),
            worker_pids,
            dexport=True,
            note=note,
        )
        if prep_s >= 0.5:
            res.note = f"{res.note} (prepare {prep_s:.1f} s)".strip()
        return res

    _log("dexport:")
    results, checks = [one("tokens", "jsonl", "dx-tokens")], {}
    checks["tokens: dexport == (b)"] = same_records(
        b.outs / "dx-tokens", b.outs / "batch-tokens.jsonl"
    )
    results.append(one("tokens", "parquet", "dx-tokens-pq"))
    blended, check_blend = run_blend(b, client, worker_pids)
    results.append(blended)
    checks["blend: dexport == the blend's windows"] = check_blend
    if not b.args.skip_text:
        results.append(
            one(
                "text",
                "jsonl",
                "dx-text-cold",
                note="first text run: workers receive the detokenizer",
            )
        )
        shutil.rmtree(b.outs / "dx-text-cold")
        client.run(_load_detokenizer, b.tok_path)  # a worker the first run left idle loads it now
        results.append(one("text", "jsonl", "dx-text", note="again, warm workers"))
        checks["text: dexport == (b)"] = same_records(
            b.outs / "dx-text", b.outs / "batch-text.jsonl"
        )
        if not b.args.skip_loops:
            checks["text: (a) == (b)"] = same_records(
                b.outs / "loop-text.jsonl", b.outs / "batch-text.jsonl"
            )
    return results, checks


def run_blend(b: Bench, client: Any, worker_pids: list[int]) -> tuple[Result, bool]:
    """(c) on a GPT-NeoX blend (weights 0.6/0.4) of the bench dataset and a second one of the
    same size: the same number of windows as tokens JSONL, next to the single-dataset run."""
    from pipeline.tokens.blend import neox_blend
    from pipeline.tokens.job import TokenExport, prepare_token_export, run_token_export

    first = b.ds.prefix
    second = f"{first}_second"
    if not Path(second + ".idx").exists():
        pool = token_pool(b.tok_path, b.args.pool_tokens, b.args.seed + 7)
        write_dataset(second, pool, b.ds.num_tokens, b.dtype, b.args.seed + 7)
    blend = neox_blend(
        {"train": [first, second], "valid": [first], "test": [first]},
        {"train": [0.6, 0.4]},
    )
    run = TrainingRun(
        seq_len=b.args.seq_len, seed=b.args.seed, num_samples=b.args.windows, blend=blend
    )
    out = b.outs / "dx-blend"
    spec = TokenExport(
        prefix=None,
        out=str(out),
        selection_kind="sequence_range",
        selection_value=(0, b.args.windows),
        run=run,
        format="jsonl",
        chunk_size=b.args.chunk_size,
        overwrite=True,
    )
    prepared = prepare_token_export(spec)  # opens both orders and builds the blending index
    res = measure(
        "(c) dexport, blend of 2",
        "tokens",
        "jsonl",
        b.args.windows,
        b.tokens,
        out,
        lambda: run_token_export(prepared, client, progress=False),
        worker_pids,
        dexport=True,
        note="GPT-NeoX blend 0.6/0.4; records also carry dataset, dataset_sample_id",
    )
    order = prepared.order
    with open(out / "part-00000.jsonl", "rb") as handle:
        rows = [orjson.loads(line) for line in handle]
    ids = np.array([r["index"] for r in rows])
    same = np.array_equal(np.array([r["content"] for r in rows]), order.windows(None, ids))
    same = same and [r["dataset"] for r in rows] == order.provenance(ids)[0].tolist()
    return res, bool(same)


def run_flatness(b: Bench, client: Any, worker_pids: list[int]) -> list[tuple[int, Result]]:
    """``--all`` as tokens JSONL over datasets of S and factor × S tokens, same chunk size."""
    from pipeline.tokens.job import TokenExport, prepare_token_export, run_token_export

    args, flat = b.args, []
    _log("memory flatness (whole dataset as tokens, jsonl):")
    pool = token_pool(b.tok_path, min(args.pool_tokens, args.flat_tokens), args.seed + 1)
    for factor in (1, args.flat_factor):
        size = args.flat_tokens * factor
        prefix = str(b.work / "data" / f"flat_{args.tokenizer}_{size}")
        if not Path(prefix + ".idx").exists():
            write_dataset(prefix, pool, size, b.dtype, args.seed + factor)
        ds = IndexedDataset(prefix)
        run = TrainingRun(
            seq_len=args.seq_len,
            seed=args.seed,
            num_samples=(ds.num_tokens - 1) // args.seq_len,
            splits="100,0,0",
        )
        out = b.outs / f"flat-{factor}"
        spec = TokenExport(
            prefix=prefix,
            out=str(out),
            selection_kind="all",
            run=run,
            format="jsonl",
            chunk_size=args.chunk_size,
            overwrite=True,
        )
        prepared = prepare_token_export(spec, dataset=ds, order=open_sample_order(ds, run))
        n = len(prepared.selection)
        label = f"dexport --all, {ds.num_tokens:,} tokens"
        res = measure(
            label,
            "tokens",
            "jsonl",
            n,
            n * (args.seq_len + 1),
            out,
            lambda p=prepared: run_token_export(p, client, progress=False),
            worker_pids,
            dexport=True,
        )
        flat.append((ds.num_tokens, res))
        shutil.rmtree(out)
    return flat


def _run(args: argparse.Namespace, work: Path, t_start: float) -> int:
    from cluster.client import get_client

    load_start = os.getloadavg()[0]
    bench, tok_desc = prepare_bench(args, work)
    results = run_baselines(bench)
    t0 = time.perf_counter()
    with get_client(workers=args.workers) as client:
        startup = time.perf_counter() - t0
        worker_pids = sorted(client.run(os.getpid).values())
        warm = warm_up(bench, client)
        _log(f"cluster: {args.workers} workers up in {startup:.1f} s, warm-up {warm:.1f} s")
        dx_results, checks = run_dexport(bench, client, worker_pids)
        results += dx_results
        shutil.rmtree(bench.outs, ignore_errors=True)
        bench.outs.mkdir()
        flat = [] if args.skip_flat else run_flatness(bench, client, worker_pids)
    total = time.perf_counter() - t_start
    load = (load_start, os.getloadavg()[0])
    report = _report(
        args,
        tok_desc,
        bench.ds,
        bench.dtype,
        (startup, warm),
        results,
        flat,
        checks,
        (total, *load),
    )
    print(report)
    if args.write_docs:
        write_docs(report, args.docs)
        _log(f"updated {args.docs} ({DOCS_SECTION})")
    return 0 if all(checks.values()) else 1


def _report(
    args: argparse.Namespace,
    tok_desc: str,
    ds: IndexedDataset,
    dtype: np.dtype,
    startup: tuple[float, float],
    results: list[Result],
    flat: list[tuple[int, Result]],
    checks: dict[str, bool],
    timing: tuple[float, float, float],
) -> str:
    """The ``## Token export`` section: set-up, tables, checks and observations."""
    cpu = platform.processor() or platform.machine()
    mem_gib = psutil.virtual_memory().total / 1024**3
    lines = [
        DOCS_SECTION,
        "",
        f"Measured {dt.date.today().isoformat()} with `scripts/bench_tokens.py{_flags(args)}` on "
        f"{os.cpu_count()} cores "
        f"({cpu}), {mem_gib:.0f} GiB RAM, no GPU; Python {platform.python_version()}. Whole run: "
        f"{timing[0]:.0f} s; "
        f"1-minute load average {timing[1]:.1f} at the start, {timing[2]:.1f} at the end (other "
        "jobs share the machine).",
        "",
        f"- Selection: samples 0..{args.windows - 1} (`--sequence-range 0:{args.windows}`) of a "
        "GPT-NeoX order "
        f"(seq_len {args.seq_len}, seed {args.seed}, splits 969,30,1, packed): {args.windows:,} "
        "windows of "
        f"{args.seq_len + 1} tokens = {args.windows * (args.seq_len + 1):,} tokens, spread over "
        "the file by the shuffle.",
        f"- Data: {ds.num_tokens:,} tokens ({dtype}), {len(ds):,} documents of generated "
        "multilingual text "
        f"(ASCII, accents, CJK, emoji) tokenized with {tok_desc}, plus EOD.",
        f"- dexport: `run_token_export` on an embedded LocalCluster of {args.workers} worker "
        "processes × 1 thread, "
        f"`--chunk-size {args.chunk_size}`. Not in the timings: cluster start-up ({startup[0]:.1f} "
        "s) and the "
        f"worker warm-up ({startup[1]:.1f} s: importing numba kernels, pandas for Parquet and "
        f"transformers{_pyc_note()}, "
        f"then one small untimed export). "
        "Baselines run in the benchmark process, one core.",
        "- (a) reads one window at a time (`SampleOrder.windows([i])`, as TokenSmith's "
        "`__getitem__`), "
        "`tokenizer.decode`, then `json.dump(record, f, ensure_ascii=False)` + newline as "
        "TokenSmith's "
        "`_write_chunk_to_jsonl`; (b) gathers a chunk at once, `tokenizer.batch_decode`, "
        "`orjson.dumps` per record.",
        "- Peak RSS: kernel high-water mark (`VmHWM`, reset before each run) of this process "
        "(client and "
        "scheduler for dexport) and of each worker. Tokens are read with `pread` into each chunk's "
        "arrays, so no dataset pages stay mapped.",
        "",
        main_table(results),
        "",
        "Checks: "
        + ", ".join(f"{k}: {'identical' if v else 'DIFFERENT'}" for k, v in checks.items())
        + ".",
    ]
    if flat:
        lines += [
            "",
            f"Memory with dataset size (`--all` as tokens JSONL, `--chunk-size {args.chunk_size}`, "
            f"{args.workers} workers; dataset ×{args.flat_factor}):",
            "",
            flat_table(flat),
        ]
    notes = observations(results, flat)
    if notes:
        lines += ["", "Reading the tables (computed from this run):", "", *notes]
    return "\n".join(lines) + "\n"


def observations(results: list[Result], flat: list[tuple[int, Result]]) -> list[str]:
    """Factual bullets derived from the measured numbers (no judgement the numbers do not carry)."""
    by = {(r.name.split(" ")[0], r.content, r.fmt, r.note.split(" (")[0]): r for r in results}
    out = []

    def ratio(a: Result | None, b: Result | None) -> str:
        """``a``'s throughput over ``b``'s."""
        return f"{a.tokens_per_s / b.tokens_per_s:.1f}×" if a and b and b.tokens_per_s else "–"

    warm = next(
        (r for r in results if r.dexport and r.content == "text" and "warm" in r.note), None
    )
    cold = next(
        (r for r in results if r.dexport and r.content == "text" and "first" in r.note), None
    )
    loop_t, batch_t = by.get(("(a)", "text", "jsonl", "")), by.get(("(b)", "text", "jsonl", ""))
    if warm:
        out.append(
            f"- Text: dexport on warm workers is {ratio(warm, loop_t)} the TokenSmith-style loop "
            f"and {ratio(warm, batch_t)} "
            "`batch_decode` + orjson, with the same records (checked)."
        )
    if warm and cold:
        out.append(
            f"- The first text export on fresh workers took {cold.seconds - warm.seconds:.1f} s "
            "longer: the driver's "
            "verified detokenizer is shipped to each worker once, and each process compiles its "
            "kernels on first use."
        )
    dx_t = next(
        (r for r in results if r.dexport and r.content == "tokens" and r.fmt == "jsonl"), None
    )
    loop_k, batch_k = by.get(("(a)", "tokens", "jsonl", "")), by.get(("(b)", "tokens", "jsonl", ""))
    if dx_t:
        out.append(
            f"- Raw tokens as JSONL: dexport is {ratio(dx_t, loop_k)} the TokenSmith-style loop "
            f"and {ratio(dx_t, batch_k)} the "
            "single-process batched loop (b), which does the least work possible (one gather and "
            "one `orjson.dumps` per "
            "record, no hashing, no atomic publish)."
        )
    if len(flat) == 2:
        (n1, r1), (n2, r2) = flat
        anon1, anon2 = (
            max(r1.memory.worker_anon_peaks.values(), default=0),
            max(r2.memory.worker_anon_peaks.values(), default=0),
        )
        rss1, rss2 = (
            max(r1.memory.worker_peaks.values(), default=0),
            max(r2.memory.worker_peaks.values(), default=0),
        )
        out.append(
            f"- Memory: with {n2 / n1:.0f}× the data at the same chunk size, the peak anonymous "
            "memory of a worker went from "
            f"{_mib(anon1)} to {_mib(anon2)} MiB and its peak RSS from {_mib(rss1)} to "
            f"{_mib(rss2)} MiB. Memory per worker depends on "
            "the chunk size, not on the dataset size."
        )
    return out


def _pyc_note() -> str:
    """Why imports are slow here, when they are."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return (
            "; slow here because Python runs without .pyc caching, `PYTHONDONTWRITEBYTECODE` is set"
        )
    return ""


def _flags(args: argparse.Namespace) -> str:
    """The command-line flags that differ from the defaults (for the report)."""
    defaults = vars(parse_args([]))
    keep = [
        k
        for k in (
            "windows",
            "seq_len",
            "chunk_size",
            "workers",
            "tokenizer",
            "flat_tokens",
            "flat_factor",
            "skip_text",
            "skip_loops",
            "skip_flat",
        )
        if getattr(args, k) != defaults[k]
    ]
    return "".join(
        f" --{k.replace('_', '-')}"
        + ("" if isinstance(getattr(args, k), bool) else f" {getattr(args, k)}")
        for k in keep
    )


if __name__ == "__main__":
    sys.exit(main())
