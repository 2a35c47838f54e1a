"""Benchmark: ``--backend cpu`` against ``--backend gpu``, whole ``dexport`` processes timed.

Two jobs, each run once per backend on the same input, timed from outside (process start to
exit, as a user waits for it), and their outputs compared byte for byte:

- ``tokens``: detokenize and export ``--windows`` training windows of ``--seq-len`` tokens
  as JSONL text (a Megatron dataset of random ids over a byte-level BPE built offline, as in
  the tests; the sample index is built before the timing);
- ``corpus``: export a generated curated corpus of ``--corpus-size`` (scripts/make_sample_corpus.py)
  to train/validation/test JSONL with statistics.

Prints a Markdown table (and writes it to ``--report`` when given) naming the device. With
``--dry-run`` it prepares nothing and runs nothing: it checks that the command line takes every
flag the runs use and prints the plan. Nothing is downloaded.

    python scripts/bench_gpu.py                         # on a GPU machine: under 5 minutes
    python scripts/bench_gpu.py --backends cpu --windows 500 --corpus-size 5M   # CPU smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SEED = 7


def parse_size(text: str) -> int:
    """``300M``, ``1G``, ``5000000`` → bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    value = text.strip().lower().removesuffix("b")
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)


def token_command(work: Path, args: argparse.Namespace, backend: str) -> list[str]:
    return [
        *("tokens", str(work / "tokens" / "ds"), "--seq-len", str(args.seq_len)),
        *("--seed", str(SEED), "--num-samples", str(args.windows), "--splits", "100,0,0"),
        *("--all", "--text"),
        *("--tokenizer", str(work / "tokenizer"), "--format", "jsonl"),
        *("--out", str(work / f"tokens-{backend}"), "--backend", backend),
    ]


def corpus_command(work: Path, backend: str) -> list[str]:
    return [
        *("corpus", str(work / "corpus"), "--out", str(work / f"corpus-{backend}")),
        *("--no-card", "--backend", backend),
    ]


def check_commands(work: Path, args: argparse.Namespace) -> None:
    """Every flag the runs use is one the command line takes (argparse exits 2 otherwise)."""
    from pipeline.cli import build_parser

    parser = build_parser()
    for backend in args.backends:
        parser.parse_args(token_command(work, args, backend))
        parser.parse_args(corpus_command(work, backend))


def make_token_dataset(work: Path, args: argparse.Namespace) -> None:
    """A byte-level BPE (built offline) and random documents over its vocabulary, enough for
    ``windows`` windows, plus the sample index (built here so that no timed run pays for it)."""
    import tokenizers_fixtures as fixtures
    from transformers import AutoTokenizer

    from pipeline.formats.indexed_dataset import IndexedDatasetBuilder

    tokenizer = fixtures.byte_bpe_tokenizer_dir(work)
    shutil.move(str(tokenizer), work / "tokenizer")
    vocab = len(AutoTokenizer.from_pretrained(str(work / "tokenizer")))
    rng = np.random.default_rng(SEED)
    need = int(args.windows * (args.seq_len + 1) * 1.05) + 10_000
    (work / "tokens").mkdir()
    builder = IndexedDatasetBuilder(str(work / "tokens" / "ds"), np.uint16)
    made = 0
    while made < need:
        doc = rng.integers(1, vocab, int(rng.integers(200, 4000)), dtype=np.uint16)
        builder.add_document(np.append(doc, np.uint16(0)))  # EOD
        made += len(doc) + 1
    builder.finalize()
    # A tokens-only export of one window builds the sample index and caches it next to the
    # dataset, where the timed runs load it.
    first = token_command(work, args, "cpu")
    first[first.index("--num-samples") + 1] = str(args.windows)
    first[first.index("--all")] = "--sequence-range"
    first.insert(first.index("--sequence-range") + 1, "0:1")
    first.remove("--text")
    first[first.index("--out") + 1] = str(work / "index-warmup")
    run(first, "building the sample index")
    shutil.rmtree(work / "index-warmup")


def make_corpus(work: Path, size: int) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_sample_corpus.py"),
            "--target-bytes",
            str(size),
            "--files",
            "8",
            "--seed",
            str(SEED),
            str(work / "corpus"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run(argv: list[str], what: str) -> float:
    """Run ``python -m pipeline ARGV``; seconds from start to exit (fails loudly)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv], cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(
            f"bench_gpu: {what} failed (exit {done.returncode}): {done.stderr[-2000:]}"
        )
    return seconds


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def device_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "no GPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=20_000, help="token windows (20000)")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per window (1024)")
    parser.add_argument("--corpus-size", type=parse_size, default=300 << 20, help="(300M)")
    parser.add_argument("--backends", default="cpu,gpu", help="backends to run (cpu,gpu)")
    parser.add_argument("--workdir", help="keep data and outputs here (default: a temp dir)")
    parser.add_argument("--report", metavar="FILE", help="also write the table to FILE")
    parser.add_argument("--dry-run", action="store_true", help="check and print the plan only")
    args = parser.parse_args()
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    # Created only once something is prepared: a dry run leaves nothing behind.
    work = Path(args.workdir or Path(tempfile.gettempdir()) / f"dexport-bench-gpu-{os.getpid()}")
    print(
        f"plan: tokens --text of {args.windows:,} windows x {args.seq_len} tokens, corpus export "
        f"of {args.corpus_size / 2**20:.0f} MiB; backends {', '.join(args.backends)}; "
        f"data in {work}"
    )
    for backend in args.backends:
        print("  dexport " + " ".join(token_command(work, args, backend)))
        print("  dexport " + " ".join(corpus_command(work, backend)))
    check_commands(work, args)
    if args.dry_run:
        print("dry run: the command line takes every flag above; nothing prepared or run")
        return 0
    if "gpu" in args.backends:
        from gpu.backend import gpu_missing

        if gpu_missing():
            print(f"bench_gpu: no GPU backend here (missing: {', '.join(gpu_missing())})")
            return 2
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_token_dataset(work, args)
    make_corpus(work, args.corpus_size)
    print(f"prepared in {time.perf_counter() - t0:.0f} s")
    corpus_bytes = sum(p.stat().st_size for p in (work / "corpus").rglob("*") if p.is_file())
    jobs = [
        (
            f"tokens --text, {args.windows:,} windows x {args.seq_len}",
            lambda b: token_command(work, args, b),
            "tokens",
        ),
        (
            f"corpus, {corpus_bytes / 2**20:.0f} MiB JSONL",
            lambda b: corpus_command(work, b),
            "corpus",
        ),
    ]
    rows = []
    for label, command, name in jobs:
        times, digests = {}, {}
        for backend in args.backends:
            times[backend] = run(command(backend), f"{name} --backend {backend}")
            digests[backend] = tree_digest(work / f"{name}-{backend}")
            print(f"{name} --backend {backend}: {times[backend]:.1f} s")
        same = "n/a" if len(digests) < 2 else "yes" if len(set(digests.values())) == 1 else "NO"
        ratio = f"{times['cpu'] / times['gpu']:.2f}x" if {"cpu", "gpu"} <= set(times) else "n/a"
        cells = [f"{times[b]:.1f}" if b in times else "-" for b in ("cpu", "gpu")]
        rows.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} | {same} |")
    table = "\n".join(
        [
            f"Device: {device_name()}; host: {platform.node()}, {os.cpu_count()} cores; "
            f"Python {platform.python_version()}",
            "",
            "| job | cpu (s) | gpu (s) | gpu speed-up | same bytes |",
            "|---|---:|---:|---:|:---:|",
            *rows,
        ]
    )
    print(table)
    if args.report:
        Path(args.report).write_text(table + "\n")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.endswith("| NO |") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
