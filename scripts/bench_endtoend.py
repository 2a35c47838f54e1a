#!/usr/bin/env python3
"""Whole-process benchmarks: dexport against the scripts users would otherwise run, end to end.

Every side is its own process, timed from outside (``time.perf_counter()`` around
``subprocess.run``): interpreter start to exit, imports, tokenizer load, index load, cluster
start and stop included. The baselines run in the same benchmark run, alternating with dexport;
the best of ``--repeats`` runs is reported and every run is listed.

1. Token export as JSONL text (byte-level BPE: Mistral tekken from mistral-common, or the small
   GPT-2-style BPE ``bench_tokens.py`` trains), windows of 2049 tokens in GPT-NeoX order
   (seq_len 2048): a tiny job (2 windows) and a big one (``--windows``). Sides: (a) a
   TokenSmith-style script (numpy + json + transformers: ``AutoTokenizer``, GPT-NeoX's
   ``__getitem__`` per sample, ``decode``, ``json.dump``), (b) a batched script (one vectorized
   gather per chunk, ``batch_decode``, ``orjson``), (c) ``dexport tokens … --text`` with its
   default settings and, for the big job, ``--workers 2``. Records are checked equal across
   sides. dexport's first runs are reported apart: of the tiny job with empty caches
   (``DEXPORT_CACHE_DIR``: checked byte tables, ``NUMBA_CACHE_DIR``: compiled kernels), as on
   a fresh install, and of each job with an empty byte-table cache only. Also ``dexport
   --help``, best of 5.
2. Corpus export (``make_sample_corpus.py`` corpus of ``--corpus-mb`` MB, and 200 documents):
   a Hugging Face ``datasets`` script (load, map to the training schema, filter, split 95/3/2,
   write JSONL per split) against ``dexport corpus … --split 0.95,0.03,0.02 --seed 42``; rows
   per split checked.

Prints a Markdown section; ``--write-docs`` replaces "## End to end (whole processes)" in
docs/benchmarks.md. Data is generated once under ``--work`` and reused. Examples::

    .venv/bin/python scripts/bench_endtoend.py
    .venv/bin/python scripts/bench_endtoend.py --windows 2000 --corpus-mb 30 --repeats 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from itertools import zip_longest
from pathlib import Path

import orjson

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

import bench_corpus  # noqa: E402  (also puts ROOT/scripts on sys.path)
import bench_tokens  # noqa: E402  (puts ROOT and ROOT/tests on sys.path)

SECTION = "## End to end (whole processes)"
SEQ_LEN = 2048
SEED = 1234
BATCH_SIZE = 1024
TINY_WINDOWS = 2
TINY_DOCS = 200
STEADY_REPEATS = 8  # pairs of (c) and its quarter-size run, for the steady state
HELP_REPEATS = 5
LABELS = {"a": "(a)", "b": "(b)", "c": "(c)", "c2": "(c) `--workers 2`", "d": "(d)"}
SPLITS = (("train", 0.95), ("validation", 0.03), ("test", 0.02))
PACKAGES = (
    "numpy",
    "tokenizers",
    "transformers",
    "torch",
    "datasets",
    "orjson",
    "dask",
    "distributed",
    "numba",
    "mistral-common",
    "dexport",
)

# -- the baseline scripts (written to the work folder, run as they are) ----------------------
_HEAD = '''"""{doc} Written by scripts/bench_endtoend.py."""
import sys
import time

T0 = time.perf_counter()
{imports}

T_IMPORT = time.perf_counter()
DTYPES = {{1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64,
          7: np.float32, 8: np.uint16}}


class IndexedDataset:
    """A Megatron .bin/.idx pair, read as GPT-NeoX's MMapIndexedDataset does."""

    def __init__(self, prefix):
        idx = np.memmap(prefix + ".idx", mode="r", dtype=np.uint8)
        if bytes(idx[:9]) != b"MMIDIDX\\x00\\x00":
            raise ValueError(prefix + ".idx is not a Megatron index file")
        self.dtype = np.dtype(DTYPES[int(idx[17])])
        n = int(np.frombuffer(idx, "<u8", 1, 18)[0])
        self.sizes = np.frombuffer(idx, "<i4", n, 34)
        self.pointers = np.frombuffer(idx, "<i8", n, 34 + 4 * n)
        self.bin = np.memmap(prefix + ".bin", mode="r", dtype=np.uint8)

    def get(self, i, offset=0, length=None):
        if length is None:
            length = int(self.sizes[i]) - offset
        ptr = int(self.pointers[i]) + offset * self.dtype.itemsize
        return np.frombuffer(self.bin, self.dtype, length, ptr)


def load_index(stem):
    """GPT-NeoX's doc_idx, sample_idx and shuffle_idx, loaded as GPT-NeoX loads them."""
    return [
        np.load(f"{{stem}}_{{kind}}_idx.npy", allow_pickle=True, mmap_mode="r")
        for kind in ("doc", "sample", "shuffle")
    ]


def main():
    prefix, stem, tokenizer_dir, start, stop, out, seq_len = sys.argv[1:8]
    start, stop, width = int(start), int(stop), int(seq_len) + 1
    t1 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    t2 = time.perf_counter()
    ds = IndexedDataset(prefix)
    doc_idx, sample_idx, shuffle_idx = load_index(stem)
    t3 = time.perf_counter()
    tokens = export(ds, doc_idx, sample_idx, shuffle_idx, tokenizer, start, stop, width, out)
    t4 = time.perf_counter()
    timings = {{"import_s": T_IMPORT - T0, "tokenizer_s": t2 - t1, "index_s": t3 - t2,
               "loop_s": t4 - t3, "tokens": tokens}}
    print("BENCH " + json.dumps(timings))

'''

TOKENSMITH_SCRIPT = (
    _HEAD.format(
        doc="TokenSmith-style export: one sample at a time, decode, json.dump.",
        imports="import json\n\nimport numpy as np\nfrom transformers import AutoTokenizer",
    )
    + '''
def get_sample(ds, doc_idx, sample_idx, shuffle_idx, idx):
    """GPT-NeoX's GPT2Dataset.__getitem__ (packed): the window of training sample ``idx``."""
    idx = int(shuffle_idx[idx])
    doc_index_f, offset_f = (int(v) for v in sample_idx[idx])
    doc_index_l, offset_l = (int(v) for v in sample_idx[idx + 1])
    if doc_index_f == doc_index_l:
        sample = ds.get(int(doc_idx[doc_index_f]), offset_f, offset_l - offset_f + 1)
    else:
        parts = [ds.get(int(doc_idx[doc_index_f]), offset_f)]
        for i in range(doc_index_f + 1, doc_index_l):
            parts.append(ds.get(int(doc_idx[i])))
        parts.append(ds.get(int(doc_idx[doc_index_l]), 0, offset_l + 1))
        sample = np.concatenate(parts)
    return np.array(sample, dtype=np.int64)


def export(ds, doc_idx, sample_idx, shuffle_idx, tokenizer, start, stop, width, out):
    """TokenSmith's export loop: decode each window, json.dump the record, newline."""
    tokens = 0
    with open(out, "w", encoding="utf-8") as f:
        for i in range(start, stop):
            window = get_sample(ds, doc_idx, sample_idx, shuffle_idx, i)
            text = tokenizer.decode(window.tolist())
            json.dump({"index": i, "content": text}, f, ensure_ascii=False)
            f.write("\\n")
            tokens += len(window)
    return tokens


if __name__ == "__main__":
    main()
'''
)

BATCHED_SCRIPT = (
    _HEAD.format(
        doc="Batched export: one vectorized gather per chunk, batch_decode, orjson.",
        imports=(
            "import json\n\nimport numpy as np\nimport orjson\nfrom transformers import "
            "AutoTokenizer"
        ),
    )
    + '''
CHUNK = 1000


def gather(ds, tokens, doc_idx, sample_idx, shuffle_idx, ids, width):
    """Windows of samples ``ids`` as one ``[len(ids), width]`` array: a single fancy index."""
    j = shuffle_idx[ids].astype(np.int64)
    f, off_f = sample_idx[j, 0].astype(np.int64), sample_idx[j, 1].astype(np.int64)
    last, off_l = sample_idx[j + 1, 0].astype(np.int64), sample_idx[j + 1, 1].astype(np.int64)
    counts = last - f + 1
    seg_end = np.cumsum(counts)
    seg_start = seg_end - counts
    n_seg = int(seg_end[-1])
    rows = doc_idx[np.repeat(f - seg_start, counts) + np.arange(n_seg)].astype(np.int64)
    is_first = np.zeros(n_seg, bool)
    is_first[seg_start] = True
    is_last = np.zeros(n_seg, bool)
    is_last[seg_end - 1] = True
    begin = np.where(is_first, np.repeat(off_f, counts), 0)
    end = np.where(is_last, np.repeat(off_l + 1, counts), ds.sizes[rows])
    lengths = end - begin
    starts = ds.pointers[rows] // ds.dtype.itemsize + begin
    total = int(lengths.sum())
    if total != len(ids) * width:
        raise ValueError("windows of unexpected length (not a packed GPT-NeoX index?)")
    flat = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
    return tokens[flat].astype(np.int64).reshape(len(ids), width)


def export(ds, doc_idx, sample_idx, shuffle_idx, tokenizer, start, stop, width, out):
    """Gather a chunk, batch_decode it, one orjson.dumps per record."""
    tokens = np.memmap(ds.bin.filename, mode="r", dtype=ds.dtype)
    written = 0
    with open(out, "wb") as f:
        for lo in range(start, stop, CHUNK):
            ids = np.arange(lo, min(lo + CHUNK, stop))
            windows = gather(ds, tokens, doc_idx, sample_idx, shuffle_idx, ids, width)
            texts = tokenizer.batch_decode(windows.tolist())
            f.write(b"".join(
                orjson.dumps({"index": i, "content": t}) + b"\\n"
                for i, t in zip(ids.tolist(), texts)
            ))
            written += windows.size
    return written


if __name__ == "__main__":
    main()
'''
)

DATASETS_SCRIPT = '''"""Hugging Face datasets corpus export (from scripts/bench_endtoend.py)."""
import sys
import time

T0 = time.perf_counter()
import json
import os

import datasets

T_IMPORT = time.perf_counter()


def to_schema(r):
    return {
        "text": r["text"],
        "metadata": {
            "title": r["title"],
            "source_url": r["url"],
            "domain": r["domain"],
            "quality_score": float(r["quality_prob"]),
            "word_count": int(r["word_count"]),
        },
    }


def main():
    data_dir, out, cache = sys.argv[1:4]
    datasets.disable_progress_bars()
    files = sorted(os.path.join(data_dir, f) for f in os.listdir(data_dir) if f.endswith(".jsonl"))
    t1 = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache)
    t2 = time.perf_counter()
    ds = ds.map(to_schema, remove_columns=ds.column_names)
    ds = ds.filter(lambda r: bool(r["text"].strip()))
    t3 = time.perf_counter()
    first = ds.train_test_split(test_size=0.05, seed=42)
    second = first["test"].train_test_split(test_size=0.4, seed=42)
    os.makedirs(out, exist_ok=True)
    for name, part in (("train", first["train"]), ("validation", second["train"]),
                       ("test", second["test"])):
        part.to_json(os.path.join(out, f"{name}.jsonl"), force_ascii=False)
    t4 = time.perf_counter()
    print("BENCH " + json.dumps({"import_s": T_IMPORT - T0, "load_s": t2 - t1,
                                 "map_filter_s": t3 - t2, "split_write_s": t4 - t3}))


if __name__ == "__main__":
    main()
'''


API_SCRIPT = '''"""dexport's Python API in a fresh process, as a TokenSmith user calls it (one
setup, one export). Written by scripts/bench_endtoend.py."""
import sys
import time

T0 = time.perf_counter()
import json

from pipeline import DatasetManager

T_IMPORT = time.perf_counter()


def main():
    prefix, index_dir, tokenizer_dir, start, stop, out, seq_len, iters, batch, seed = sys.argv[1:11]
    t1 = time.perf_counter()
    manager = DatasetManager()
    manager.setup_edit_inspect_sample_export(
        prefix, index_dir, int(iters), int(batch), int(seq_len), int(seed)
    )
    t2 = time.perf_counter()
    manager.export.export_sequence_range(int(start), int(stop), out, "jsonl", True, tokenizer_dir)
    t3 = time.perf_counter()
    tokens = (int(stop) - int(start)) * (int(seq_len) + 1)
    print("BENCH " + json.dumps({"import_s": T_IMPORT - T0, "setup_s": t2 - t1,
                                 "export_s": t3 - t2, "tokens": tokens}))


if __name__ == "__main__":
    main()
'''


# -- running and timing processes --------------------------------------------------------------
@dataclass
class Run:
    """One whole process, timed from outside."""

    seconds: float
    stdout: str
    stderr: str

    def bench(self) -> dict:
        """The ``BENCH {...}`` line a baseline script prints (empty for dexport)."""
        for line in self.stdout.splitlines():
            if line.startswith("BENCH "):
                return json.loads(line[6:])
        return {}

    def summary_value(self, key: str) -> float | None:
        """A value of dexport's summary table (``tokens/s``, ``seconds``) from stderr."""
        m = re.search(rf"^{re.escape(key)}\s+([\d,.]+)\s*$", self.stderr + "\n" + self.stdout, re.M)
        return float(m.group(1).replace(",", "")) if m else None


@dataclass
class Side:
    """One contender of one job: its label, the command's timed runs, untimed cold-cache runs."""

    key: str
    label: str
    runs: list[Run] = field(default_factory=list)
    colds: list[tuple[str, Run]] = field(default_factory=list)  # (what was cold, run)
    dexport: bool = False

    @property
    def best(self) -> Run:
        """The fastest timed run."""
        return min(self.runs, key=lambda r: r.seconds)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_timed(cmd: list[str], env: dict[str, str], what: str) -> Run:
    """Run ``cmd`` to completion; wall seconds from before the start to after the exit."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace")
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    _log(f"  {what}: {seconds:.2f} s")
    return Run(seconds, proc.stdout, proc.stderr)


def dexport_cmd() -> list[str]:
    """The installed console script next to this interpreter (else ``python -m pipeline``)."""
    exe = Path(sys.executable).parent / "dexport"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]


def base_env(work: Path) -> dict[str, str]:
    """The environment of every timed process: bytecode cache on (in the work folder), offline."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        PYTHONPYCACHEPREFIX=str(work / "pycache"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        DEXPORT_CACHE_DIR=str(work / "cache" / "other"),
        NUMBA_CACHE_DIR=str(work / "cache" / "other" / "numba"),
    )
    return env


def cache_env(
    env: dict[str, str], tables: Path, numba: Path, fresh: tuple[Path, ...] = ()
) -> dict[str, str]:
    """``env`` with dexport's byte-table cache in ``tables`` and numba's in ``numba``; the
    folders in ``fresh`` are emptied first."""
    for path in fresh:
        shutil.rmtree(path, ignore_errors=True)
    for path in (tables, numba):
        path.mkdir(parents=True, exist_ok=True)
    return {**env, "DEXPORT_CACHE_DIR": str(tables), "NUMBA_CACHE_DIR": str(numba)}


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# -- token export ----------------------------------------------------------------------------------
@dataclass
class TokenJob:
    """One job size: its sides and the record checks."""

    name: str
    windows: int
    sides: list[Side]
    checks: dict[str, str] = field(default_factory=dict)


@dataclass
class TokenBench:
    """Everything the token report needs."""

    tok_desc: str
    data_desc: str
    train_iters: int
    num_samples: int
    jobs: list[TokenJob]
    help: Side


def _token_data(args: argparse.Namespace, work: Path) -> tuple[str, str, str, int, int, str]:
    """Tokenizer folder and description, dataset prefix (generated once), train_iters,
    num_samples, and a description of the data."""
    from transformers import AutoTokenizer

    from pipeline.formats.indexed_dataset import IndexedDataset, token_dtype_for_vocab

    tok_path, tok_desc = bench_tokens.build_tokenizer(work, args.tokenizer)
    dtype = token_dtype_for_vocab(len(AutoTokenizer.from_pretrained(tok_path)))
    train_iters = math.ceil(args.windows / BATCH_SIZE)
    num_samples = train_iters * BATCH_SIZE
    n_tokens = int(num_samples * SEQ_LEN / 0.969 * 1.01) + SEQ_LEN + 1
    (work / "data").mkdir(parents=True, exist_ok=True)
    prefix = str(work / "data" / f"bench_{args.tokenizer}_{n_tokens}")
    if not Path(prefix + ".idx").exists():
        _log(f"generating {n_tokens:,} tokens of data ({args.tokenizer}) …")
        pool = bench_tokens.token_pool(tok_path, 1_000_000, SEED)
        bench_tokens.write_dataset(prefix, pool, n_tokens, dtype, SEED)
        del pool
    ds = IndexedDataset(prefix)
    data_desc = (
        f"{ds.num_tokens:,} tokens ({ds.dtype}), {len(ds):,} documents of generated multilingual "
        "text (ASCII, accents, CJK, emoji) plus EOD"
    )
    return tok_path, tok_desc, prefix, train_iters, num_samples, data_desc


def run_token_bench(args: argparse.Namespace, work: Path, env: dict[str, str]) -> TokenBench:
    """Warm-up (builds the index), then the tiny and the big job, then the record checks."""
    from pipeline.tokens.neox_index import neox_index_filenames

    tok_path, tok_desc, prefix, train_iters, num_samples, data_desc = _token_data(args, work)
    index_dir = work / "index"
    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.mkdir()
    doc_name = neox_index_filenames(Path(prefix).name, "train", num_samples, SEQ_LEN, SEED)
    stem = str(index_dir / doc_name["doc_idx"].removesuffix("_doc_idx.npy"))
    scripts = work / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "tokensmith_export.py").write_text(TOKENSMITH_SCRIPT, encoding="utf-8")
    (scripts / "batched_export.py").write_text(BATCHED_SCRIPT, encoding="utf-8")
    (scripts / "api_export.py").write_text(API_SCRIPT, encoding="utf-8")
    outs = work / "out-tokens"
    shutil.rmtree(outs, ignore_errors=True)
    outs.mkdir()
    dx = dexport_cmd()

    def command(key: str, stop: int, out: Path) -> list[str]:
        if key in ("a", "b"):
            script = scripts / ("tokensmith_export.py" if key == "a" else "batched_export.py")
            args = [prefix, stem, tok_path, "0", str(stop), str(out), str(SEQ_LEN)]
            return [sys.executable, str(script), *args]
        if key == "d":
            args = [prefix, str(index_dir), tok_path, "0", str(stop), str(out), str(SEQ_LEN)]
            args += [str(train_iters), str(BATCH_SIZE), str(SEED)]
            return [sys.executable, str(scripts / "api_export.py"), *args]
        cmd = [*dx, "tokens", prefix, "--seq-len", str(SEQ_LEN), "--seed", str(SEED)]
        cmd += ["--train-iters", str(train_iters), "--batch-size", str(BATCH_SIZE)]
        cmd += ["--index", str(index_dir), "--sequence-range", f"0:{stop}", "--text"]
        cmd += ["--tokenizer", tok_path, "--out", str(out)]
        return cmd + (["--workers", "2"] if key == "c2" else [])

    def once(key: str, stop: int, out: Path, run_env: dict[str, str], what: str) -> Run:
        _remove(out)
        return run_timed(command(key, stop, out), run_env, what)

    _log("warm-up (untimed): dexport builds the GPT-NeoX index; bytecode caches of every side")
    caches = work / "cache"
    warm = caches / "warm-up"
    warm_env = cache_env(env, warm / "tables", warm / "numba", fresh=(warm,))
    once("c", TINY_WINDOWS, outs / "warm-up.jsonl", warm_env, "dexport warm-up")
    missing = [k for k in ("doc", "sample", "shuffle") if not Path(f"{stem}_{k}_idx.npy").exists()]
    if missing:
        raise SystemExit(f"dexport's warm-up did not write the index files {stem}_*_idx.npy")
    for key in ("a", "b"):
        once(key, TINY_WINDOWS, outs / "warm-up.jsonl", env, f"({key}) warm-up")
    shutil.rmtree(warm)
    _remove(outs / "warm-up.jsonl")
    help_side = Side("help", "`dexport --help`", dexport=True)
    run_timed([*dx, "--help"], env, "dexport --help warm-up")
    help_side.runs = [
        run_timed([*dx, "--help"], env, "dexport --help") for _ in range(HELP_REPEATS)
    ]

    jobs = []
    for name, windows in (("tiny", TINY_WINDOWS), ("big", args.windows)):
        sides = [
            Side("a", "(a) TokenSmith-style script"),
            Side("b", "(b) batched script: `batch_decode` + orjson"),
            Side("c", "(c) `dexport tokens` (default settings)", dexport=True),
            Side("d", "(d) dexport's Python API, fresh process", dexport=True),
        ]
        if name == "big":
            sides.append(Side("c2", "(c) `dexport tokens --workers 2`", dexport=True))
        _log(f"{name} job: {windows:,} windows")
        tables, numba = caches / name, caches / "numba"
        outs_of = {s.key: outs / f"{name}-{s.key}.jsonl" for s in [*sides, Side("ch", "")]}
        colds: list[tuple[str, tuple[Path, ...]]] = [("byte tables", (tables,))]
        if name == "tiny":  # the first run after installing: nothing cached
            colds.insert(0, ("byte tables and numba kernels", (tables, numba)))
        for what, fresh in colds:
            run_env = cache_env(env, tables, numba, fresh=fresh)
            sides[2].colds.append(
                (what, once("c", windows, outs_of["c"], run_env, f"(c) empty cache: {what}"))
            )
        for _ in range(args.repeats):
            for side in sides:
                run_env = cache_env(env, tables, numba) if side.dexport else env
                side.runs.append(once(side.key, windows, outs_of[side.key], run_env, side.label))
        if name == "big":
            # The same command on a quarter of the windows: the difference of the two whole-
            # process times is the steady state (start-up and one-time costs cancel out). A
            # difference is noisier than either time: several pairs, each pair back to back so
            # that both runs see the machine alike, kept apart from (c)'s row.
            quarter = Side("ch", f"(c) at {windows // 4:,} windows", dexport=True)
            full = Side("cs", f"(c) at {windows:,} windows again", dexport=True)
            for _ in range(STEADY_REPEATS):
                for side, stop in ((full, windows), (quarter, windows // 4)):
                    run_env = cache_env(env, tables, numba)
                    side.runs.append(once("c", stop, outs_of["ch"], run_env, side.label))
            sides += [quarter, full]
        job = TokenJob(name, windows, sides)
        _log(f"checking the {name} job's records …")
        compared = {s.key: outs_of[s.key] for s in sides if s.key not in ("ch", "cs")}
        job.checks = compare_records(compared, windows)
        for path in outs_of.values():
            _remove(path)
        jobs.append(job)
    return TokenBench(tok_desc, data_desc, train_iters, num_samples, jobs, help_side)


def compare_records(paths: dict[str, Path], expected: int) -> dict[str, str]:
    """Every file's ``index`` and ``content`` against the first's, line by line (streamed)."""
    keys = list(paths)
    handles = [open(paths[k], "rb") for k in keys]
    records, differ, shape = 0, dict.fromkeys(keys[1:], 0), dict.fromkeys(keys[1:], "")
    try:
        for lines in zip_longest(*handles):
            if lines[0] is None:
                for k, line in zip(keys[1:], lines[1:], strict=True):
                    shape[k] = shape[k] or ("extra records" if line is not None else "")
                continue
            ref = orjson.loads(lines[0])
            records += 1
            for k, line in zip(keys[1:], lines[1:], strict=True):
                if line is None:
                    shape[k] = "missing records"
                    continue
                rec = orjson.loads(line)
                if rec.get("index") != ref["index"] or rec.get("content") != ref["content"]:
                    differ[k] += 1
    finally:
        for h in handles:
            h.close()
    out = {}
    for k in keys[1:]:
        ok = not differ[k] and not shape[k] and records == expected
        extra = f", {shape[k]}" if shape[k] else ""
        out[f"{LABELS.get(k, k)} == {LABELS.get(keys[0], keys[0])}"] = (
            f"identical ({records:,} records)"
            if ok
            else f"DIFFERENT ({differ[k]:,} of {records:,} differ{extra})"
        )
    return out


# -- corpus export ---------------------------------------------------------------------------------
@dataclass
class CorpusJob:
    """One corpus size: its sides and the rows each wrote per split."""

    name: str
    corpus_bytes: int
    documents: int
    files: int
    sides: list[Side]
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)


def _ensure_docs(directory: Path, docs: int) -> dict:
    """A corpus of exactly ``docs`` documents (generated once)."""
    from make_sample_corpus import generate

    marker = directory / "_generated.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("requested_docs") == docs:
            return info
    shutil.rmtree(directory, ignore_errors=True)
    info = generate(str(directory), docs=docs, files=1, seed=0)
    info.update(requested_docs=docs, files_count=1)
    info.pop("files")
    marker.write_text(json.dumps(info))
    return info


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b""))


def check_rows(rows: dict[str, int], documents: int) -> str:
    """Every document in exactly one split; each split within 5 sigma (+2) of its share."""
    total = sum(rows.values())
    if total != documents:
        return f"WRONG: {total:,} rows for {documents:,} documents"
    bad = [
        f"{name} {rows.get(name, 0):,} (expected {share * documents:,.0f})"
        for name, share in SPLITS
        if abs(rows.get(name, 0) - share * documents)
        > 5 * math.sqrt(documents * share * (1 - share)) + 2
    ]
    return f"OUT OF TOLERANCE: {', '.join(bad)}" if bad else "ok"


def run_corpus_bench(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[CorpusJob]:
    """Warm-up on the tiny corpus, then the tiny and the big job (alternating sides)."""
    files = max(1, min(16, math.ceil(args.corpus_mb / 64)))
    _log(f"corpus data ({args.corpus_mb} MB in {files} files, {TINY_DOCS} documents) …")
    big = bench_corpus.ensure_corpus(
        work / f"corpus-{args.corpus_mb}MB", args.corpus_mb * 10**6, files
    )
    tiny = _ensure_docs(work / "corpus-tiny", TINY_DOCS)
    script = work / "scripts" / "datasets_corpus.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(DATASETS_SCRIPT, encoding="utf-8")
    outs = work / "out-corpus"
    dx = dexport_cmd()
    split = ",".join(str(share) for _, share in SPLITS)

    def once(key: str, corpus: Path, what: str) -> tuple[Run, Path]:
        out = outs / key
        shutil.rmtree(outs, ignore_errors=True)
        outs.mkdir()
        if key == "datasets":
            cmd = [sys.executable, str(script), str(corpus), str(out), str(outs / "hf-cache")]
        else:
            cmd = [*dx, "corpus", str(corpus), "--out", str(out), "--split", split, "--seed", "42"]
        return run_timed(cmd, env, what), out

    _log("corpus warm-up (untimed, bytecode caches)")
    for key in ("datasets", "dexport"):
        once(key, work / "corpus-tiny", f"{key} warm-up")
    jobs = []
    for name, info, corpus in (
        ("tiny", tiny, work / "corpus-tiny"),
        ("big", big, work / f"corpus-{args.corpus_mb}MB"),
    ):
        job = CorpusJob(
            name,
            info["bytes"],
            info["documents"],
            info["files_count"],
            [
                Side("datasets", "Hugging Face `datasets` script"),
                Side("dexport", "`dexport corpus`", dexport=True),
            ],
        )
        _log(f"corpus {name} job: {info['bytes'] / 1e6:,.0f} MB, {info['documents']:,} documents")
        for _ in range(args.repeats):
            for side in job.sides:
                run, out = once(side.key, corpus, f"{side.key} ({name})")
                side.runs.append(run)
                job.rows[side.key] = {
                    split_name: _count_lines(out / f"{split_name}.jsonl")
                    for split_name, _ in SPLITS
                }
        job.checks = {k: check_rows(v, job.documents) for k, v in job.rows.items()}
        jobs.append(job)
    shutil.rmtree(outs, ignore_errors=True)
    return jobs


# -- report ------------------------------------------------------------------------------------
def _versions() -> str:
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        import psutil

        return psutil.virtual_memory().total / 2**30
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _runs(side: Side) -> str:
    return ", ".join(f"{r.seconds:.2f}" for r in side.runs)


def _speedup(base: Side | None, side: Side) -> str:
    """How many times faster ``side`` is than ``base``, end to end (best runs)."""
    if base is None or not base.runs or not side.runs:
        return "–"
    return f"{base.best.seconds / side.best.seconds:.2f}×"


def _s(seconds: float) -> str:
    """Seconds with 2 decimals, 3 below 0.1 s."""
    return f"{seconds:.3f}" if seconds < 0.1 else f"{seconds:.2f}"


def _inside(run: Run) -> tuple[str, str]:
    """(steady-state M tokens/s, where the seconds went inside the process) of one run."""
    b = run.bench()
    if b and "setup_s" in b:  # the API script
        rate = b["tokens"] / b["export_s"] / 1e6
        parts = (
            f"import {_s(b['import_s'])} + setup {_s(b['setup_s'])} + export {_s(b['export_s'])} s"
        )
        return f"{rate:.2f}", parts
    if b:
        rate = b["tokens"] / b["loop_s"] / 1e6 if b.get("loop_s") else 0.0
        parts = (
            f"imports {_s(b['import_s'])} + tokenizer {_s(b['tokenizer_s'])} + index "
            f"{_s(b['index_s'])} + loop {_s(b['loop_s'])} s"
        )
        return f"{rate:.2f}", parts
    rate, secs = run.summary_value("tokens/s"), run.summary_value("seconds")
    return (
        f"{rate / 1e6:.2f}" if rate else "–",
        f"export {_s(secs)} s (its summary)" if secs is not None else "–",
    )


def token_table(bench: TokenBench) -> str:
    """One row per side and job (plus dexport's cold-cache first runs)."""
    head = (
        "| job | side | wall s (best) | all runs, s | speed-up over (a) | speed-up over (b) |"
        " steady state M tok/s | inside the process (best run) |"
    )
    rows = [head, "|---|---|---:|---|---:|---:|---:|---|"]
    for job in bench.jobs:
        by = {s.key: s for s in job.sides}
        label = f"{job.windows:,} windows"
        for side in job.sides:
            rate, inside = _inside(side.best)
            steady = side.key in ("ch", "cs")
            base_a, base_b = (None, None) if steady else (by["a"], by["b"])
            rows.append(
                f"| {label} | {side.label} | {side.best.seconds:.2f} | {_runs(side)} | "
                f"{_speedup(base_a, side)} | {_speedup(base_b, side)} | {rate} | {inside} |"
            )
            for what, run in side.colds:
                cold = Side(side.key, side.label, [run])
                rate, inside = _inside(run)
                rows.append(
                    f"| {label} | {side.label}, empty cache: {what} | "
                    f"{run.seconds:.2f} | (single run) | {_speedup(by['a'], cold)} | "
                    f"{_speedup(by['b'], cold)} | {rate} | {inside} |"
                )
    return "\n".join(rows)


def corpus_table(jobs: list[CorpusJob]) -> str:
    """One row per side and corpus size."""
    head = (
        "| corpus | side | wall s (best) | all runs, s | speed-up over `datasets` |"
        " rows train / validation / test | inside the process (best run) |"
    )
    rows = [head, "|---|---|---:|---|---:|---|---|"]
    for job in jobs:
        base = next(s for s in job.sides if s.key == "datasets")
        label = f"{job.corpus_bytes / 1e6:,.1f} MB, {job.documents:,} docs"
        for side in job.sides:
            counts = " / ".join(f"{job.rows[side.key][n]:,}" for n, _ in SPLITS)
            b = side.best.bench()
            if b:
                inside = (
                    f"imports {b['import_s']:.2f} + load {b['load_s']:.2f} + map/filter "
                    f"{b['map_filter_s']:.2f} + split/write {b['split_write_s']:.2f} s"
                )
            else:
                m = re.search(
                    r"documents -> .* in ([\d.]+) s", side.best.stdout + "\n" + side.best.stderr
                )
                inside = f"export {m.group(1)} s (its summary)" if m else "–"
            rows.append(
                f"| {label} | {side.label} | {side.best.seconds:.2f} | {_runs(side)} | "
                f"{_speedup(base, side)} | {counts} | {inside} |"
            )
    return "\n".join(rows)


def targets(
    args: argparse.Namespace, tokens: TokenBench | None, corpus: list[CorpusJob]
) -> list[str]:
    """Issue 11's "Done when" figures, computed from this run."""
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    if tokens:
        tiny = {s.key: s for s in tokens.jobs[0].sides}
        ratio = tiny["c"].best.seconds / tiny["a"].best.seconds
        out.append(
            f"- 2 windows as text: dexport end to end {ratio:.2f}× the TokenSmith-style script's "
            f"time (target ≤ 0.5×): {verdict(ratio <= 0.5)}."
        )
        best_help = tokens.help.best.seconds
        out.append(
            f"- `dexport --help` {best_help:.3f} s (target ≤ 0.3 s): {verdict(best_help <= 0.3)}."
        )
        for job in tokens.jobs:
            api = {s.key: s for s in job.sides}["d"].best
            work = job.sides[2].best.summary_value("seconds") or 0.0
            first_call = api.bench().get("setup_s", 0.0) + api.bench().get("export_s", 0.0)
            out.append(
                f"- {job.windows:,} windows, first API call in a fresh process (setup + export) "
                f"{first_call:.2f} s, of which the work (the CLI's export time) {work:.2f} s "
                f"(target ≤ 2 s plus the work): {verdict(first_call <= 2 + work)}."
            )
        big = {s.key: s for s in tokens.jobs[1].sides}
        for key in ("c", "d", "c2"):
            va = big["a"].best.seconds / big[key].best.seconds
            vb = big["b"].best.seconds / big[key].best.seconds
            line = (
                f"- {tokens.jobs[1].windows:,} windows as text, {big[key].label}: {va:.2f}× faster "
                f"than (a), {vb:.2f}× faster than (b)"
            )
            if key == "c2":  # asked for a Dask cluster: its start and stop are in the time
                out.append(f"{line} (for reference: the targets are for the default settings).")
            else:
                out.append(f"{line} (targets ≥ 10× and ≥ 5×): {verdict(va >= 10 and vb >= 5)}.")
        steady = steady_state(tokens.jobs[1])
        if steady is not None:
            marginal, summary, pairs = steady
            out.append(
                f"- Steady state of (c), {tokens.jobs[1].windows:,} windows: {marginal:.1f} M "
                "tok/s between whole processes (the extra tokens of N over N/4 windows ÷ the "
                f"extra wall seconds: median of {len(pairs)} pairs of runs, each pair back to "
                f"back; they range {pairs[0]:.0f}-{pairs[-1]:.0f}); {summary:.1f} M tok/s over "
                "its whole export call (its summary, one-time costs included) (target ≥ 100 M "
                f"tok/s): {verdict(marginal >= 100)}."
            )
    if corpus:
        job = corpus[-1]
        by = {s.key: s for s in job.sides}
        ratio = by["datasets"].best.seconds / by["dexport"].best.seconds
        out.append(
            f"- Corpus, {job.corpus_bytes / 1e6:,.0f} MB, 95/3/2: dexport {ratio:.2f}× faster than "
            f"`datasets` end to end (target ≥ 3×): {verdict(ratio >= 3)}."
        )
    sizes = [f"{args.windows:,} windows"] if tokens and args.windows != 20_000 else []
    sizes += [f"a {args.corpus_mb} MB corpus"] if corpus and args.corpus_mb != 300 else []
    if sizes:
        out.append(
            "- The targets are stated for 20,000 windows and a ~300 MB corpus; this run used "
            + " and ".join(sizes)
            + "."
        )
    return out


def steady_state(job: TokenJob) -> tuple[float, float, list[float]] | None:
    """(M tokens/s between the N and N/4 window runs of (c): the median over the pairs of
    runs, M tokens/s of (c)'s summary, every pair's M tokens/s)."""
    by = {s.key: s for s in job.sides}
    if "ch" not in by or not by["ch"].runs or not by["c"].runs:
        return None
    extra = (job.windows - job.windows // 4) * (SEQ_LEN + 1)
    full = by.get("cs", by["c"])
    pairs = [
        extra / seconds / 1e6 if seconds > 0 else float("inf")
        for seconds in (
            f.seconds - q.seconds for f, q in zip(full.runs, by["ch"].runs, strict=True)
        )
    ]
    summary = (by["c"].best.summary_value("tokens/s") or 0.0) / 1e6
    return statistics.median(pairs), summary, sorted(pairs)


def _flags(args: argparse.Namespace) -> str:
    defaults = vars(parse_args([]))
    parts = []
    for key in ("windows", "corpus_mb", "repeats", "tokenizer", "skip_tokens", "skip_corpus"):
        value = getattr(args, key)
        if value != defaults[key]:
            flag = "--" + key.replace("_", "-")
            parts.append(flag if isinstance(value, bool) else f"{flag} {value}")
    return "".join(" " + p for p in parts)


def report(
    args: argparse.Namespace,
    tokens: TokenBench | None,
    corpus: list[CorpusJob],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
    total_s: float,
) -> str:
    """The Markdown section."""
    n = args.repeats
    lines = [
        SECTION,
        "",
        f"Measured {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} with "
        f"`scripts/bench_endtoend.py{_flags(args)}` (whole run {total_s:.0f} s).",
        "",
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores, {_ram_gib():.0f} GiB RAM, "
        f"{platform.system()} {platform.machine()}; load average (1 / 5 / 15 min) "
        f"{_load(loads[0])} before, {_load(loads[1])} after. Python "
        f"{platform.python_version()}; {_versions()}.",
        "",
        "Every side runs as its own process, timed from outside (`time.perf_counter()` around "
        "`subprocess.run`): interpreter start to exit, imports, tokenizer load, index load and "
        "any cluster start/stop included. Sides alternate; the best of "
        f"{n} run{'s' if n > 1 else ''} is reported and all runs are listed. Every side first "
        "ran once untimed so that Python's bytecode cache (in the work folder) is warm, as in an "
        "installed environment. dexport's own caches (`DEXPORT_CACHE_DIR`: checked byte tables; "
        "`NUMBA_CACHE_DIR`: compiled kernels) are folders of the work folder: its first run of "
        "the tiny job starts with both empty (a fresh install), then each job's first run with "
        'an empty byte-table cache; these "empty cache" rows are single runs outside the '
        "best-of. Speed-up = the baseline's best wall time ÷ this row's.",
    ]
    if tokens:
        lines += [
            "",
            "### Token export as JSONL text",
            "",
            f"- Data: {tokens.data_desc}; tokenizer {tokens.tok_desc}.",
            f"- Selection: samples `--sequence-range 0:N` of a GPT-NeoX order (seq_len {SEQ_LEN}, "
            f"seed {SEED}, `--train-iters {tokens.train_iters} --batch-size {BATCH_SIZE}` = "
            f"{tokens.num_samples:,} samples, splits 969,30,1, packed), windows of {SEQ_LEN + 1} "
            "tokens; the index files were built by dexport's warm-up run in `--index`.",
            "- (a) TokenSmith-style script (numpy, json, transformers): "
            "`AutoTokenizer.from_pretrained`, the `.idx` read with numpy, the three index `.npy` "
            "files loaded as GPT-NeoX does, then per sample GPT-NeoX's `__getitem__` (window "
            "across documents from `sample_idx[j]`/`[j+1]`), `tokenizer.decode`, "
            "`json.dump(record, f, ensure_ascii=False)` + newline.",
            "- (b) batched script: the same loading, one vectorized gather per 1,000 samples, "
            "`tokenizer.batch_decode`, `orjson.dumps` per record.",
            "- (c) `dexport tokens PREFIX --seq-len 2048 --seed 1234 --train-iters I "
            "--batch-size 1024 --index DIR --sequence-range 0:N --text --tokenizer DIR --out "
            "x.jsonl`, default embedded settings; for the big job also `--workers 2`.",
            "- (d) the same export through the Python API in a fresh process, as a TokenSmith "
            "user writes it: `from pipeline import DatasetManager`, "
            "`setup_edit_inspect_sample_export(...)`, `export.export_sequence_range(0, N, "
            "path, 'jsonl', True, TOKENIZER_DIR)`; steady state = tokens ÷ the export call.",
            "- Steady state: tokens ÷ loop seconds as the baseline scripts measure them inside; "
            "dexport's own `tokens/s` summary line (its whole export call, one-time costs "
            "included). (c) also runs on a quarter of the windows: the difference of the two "
            f"whole-process times (median over {STEADY_REPEATS} pairs of runs, each pair back "
            "to back) gives its steady state from outside (below the table).",
            "",
            token_table(tokens),
            "",
            f"`dexport --help`: best {tokens.help.best.seconds:.3f} s of {HELP_REPEATS} "
            f"({', '.join(f'{r.seconds:.3f}' for r in tokens.help.runs)}).",
            "",
            "Records (index and text per record, every record): "
            + "; ".join(
                f"{job.windows:,} windows: " + ", ".join(f"{k} {v}" for k, v in job.checks.items())
                for job in tokens.jobs
            )
            + ".",
        ]
    if corpus:
        big = corpus[-1]
        lines += [
            "",
            "### Corpus export",
            "",
            f"- Data: generated curated corpus (`make_sample_corpus.py`): "
            f"{big.corpus_bytes / 1e6:,.1f} MB in {big.files} JSONL file"
            f"{'s' if big.files > 1 else ''}, {big.documents:,} "
            f"documents; and {TINY_DOCS} documents.",
            '- `datasets` script: `load_dataset("json")` (fresh cache folder each run), `map` to '
            "the training schema, `filter` empty texts, `train_test_split` 95/5 then 3/2 with seed "
            "42, `to_json` per split.",
            "- `dexport corpus INPUT --out OUT --split 0.95,0.03,0.02 --seed 42` (default "
            "settings; also validates every record, writes `dataset_stats.json`, the card and the "
            "manifest).",
            "",
            corpus_table(corpus),
            "",
            "Rows (every document in one split, each split within 5σ of its share; the split "
            "algorithms differ): "
            + "; ".join(
                f"{job.documents:,} docs: " + ", ".join(f"{k} {v}" for k, v in job.checks.items())
                for job in corpus
            )
            + ".",
        ]
    goals = targets(args, tokens, corpus)
    if goals:
        lines += ["", "Issue 11's targets, from this run:", "", *goals]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--windows", type=int, default=20_000, help="windows of the big token job")
    p.add_argument("--corpus-mb", type=int, default=300, help="size of the big corpus in MB")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per side (best reported)")
    p.add_argument(
        "--tokenizer",
        choices=("tekken", "byte-bpe"),
        default="tekken",
        help="tekken: Mistral's byte-level BPE (131k); byte-bpe: a small trained GPT-2-style one",
    )
    p.add_argument("--skip-tokens", action="store_true", help="skip the token export")
    p.add_argument("--skip-corpus", action="store_true", help="skip the corpus export")
    p.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dexport-bench-endtoend",
        help="work folder: data (kept and reused), index, outputs, caches",
    )
    p.add_argument("--write-docs", action="store_true", help=f"replace '{SECTION}' in --docs")
    p.add_argument(
        "--docs", type=Path, default=ROOT / "docs" / "benchmarks.md", help="file --write-docs edits"
    )
    args = p.parse_args(argv)
    if args.windows < 1 or args.corpus_mb < 1 or args.repeats < 1:
        p.error("--windows, --corpus-mb and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the Markdown section (and update the docs if asked)."""
    args = parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    env = base_env(work)
    tokens = None if args.skip_tokens else run_token_bench(args, work, env)
    corpus = [] if args.skip_corpus else run_corpus_bench(args, work, env)
    section = report(args, tokens, corpus, (load_before, os.getloadavg()), time.perf_counter() - t0)
    print(section)
    if args.write_docs:
        bench_tokens.write_docs(section, args.docs, SECTION)
        _log(f"updated {args.docs} ({SECTION})")
    checks = [v for job in (tokens.jobs if tokens else []) for v in job.checks.values()]
    checks += [v for job in corpus for v in job.checks.values()]
    return 0 if all(v.startswith(("identical", "ok")) for v in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
