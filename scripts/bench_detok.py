"""Benchmark: token windows -> text, dexport's detokenizer against Hugging Face, one process.

The same windows (``--windows`` random windows of ``--seq-len`` tokens from an encoded corpus,
as a training run's samples) go through:

- ``tokenizers`` ``Tokenizer.decode_batch`` (Rust, parallel over the cores),
- transformers ``batch_decode`` (a Python loop over ``decode`` in transformers 5),
- a per-window ``tokenizer.decode`` loop (what TokenSmith-style exports do),
- dexport ``Detokenizer.decode_to_bytes`` (UTF-8 bytes + offsets, what writers consume),
  with all cores and with one thread, and ``Detokenizer.decode`` (a list of str).

Baselines get their inputs as Python lists prepared outside the timing; dexport gets the NumPy
arrays. Every output is checked equal to ``batch_decode``'s before any number is printed. Times
are the best of ``--repeats`` interleaved rounds, as wall clock and as CPU time of the process (all
threads): on a shared machine the CPU time is the steadier measure of the work done. Tokenizers
are built offline as in the tests: a GPT-2-style byte-level BPE trained on generated text,
Mistral's real tekken byte-level BPE (131k tokens) and Mistral-7B's SentencePiece model (both
from ``mistral-common``), and a trained WordPiece. The corpus is English prose (installed
packages' METADATA files) with 10% generated multilingual text (accents, CJK, emoji).

    python scripts/bench_detok.py                 # defaults finish in about 2 minutes
    python scripts/bench_detok.py --families tekken,mistral --windows 2000
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import platform
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import tokenizers_fixtures as fixtures  # noqa: E402

from gpu.detok import Detokenizer  # noqa: E402

FAMILIES: dict[str, tuple[str, Callable[[Path], Path | None]]] = {
    "gpt2style": ("byte-level BPE, GPT-2 style (trained, 1.5k)", fixtures.byte_bpe_tokenizer_dir),
    "tekken": ("byte-level BPE, Mistral tekken (real, 131k)", fixtures.tekken_tokenizer_dir),
    "mistral": (
        "SentencePiece + byte fallback, Mistral-7B (real, 32k)",
        fixtures.mistral_tokenizer_dir,
    ),
    "wordpiece": ("WordPiece, BERT style (trained, 1.2k)", fixtures.wordpiece_tokenizer_dir),
}


def corpus(max_chars: int) -> list[str]:
    """English prose from installed distributions' METADATA, plus 10% multilingual text."""
    site = sysconfig.get_paths()["purelib"]
    docs: list[str] = []
    size = 0
    for path in sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA"))):
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        body = text.split("\n\n", 1)[-1]
        if len(body) > 200:
            docs.append(body)
            size += len(body)
        if size > max_chars:
            break
    multi = fixtures.multilingual_text(4000, seed=7)
    step = 40
    docs += ["\n".join(multi[i : i + step]) for i in range(0, len(multi), step)][
        : max(1, len(docs) // 10)
    ]
    return docs


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Wall time and CPU time (all threads of this process) of one call, and its result."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - start, time.process_time() - start_cpu, result


def bench_family(key: str, args: argparse.Namespace, tmp: Path, docs: list[str]) -> list[str]:
    from transformers import AutoTokenizer

    label, build = FAMILIES[key]
    path = build(tmp)
    if path is None:
        return [f"| {label} | skipped: mistral-common not installed |"]
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    backend = tokenizer.backend_tokenizer
    sep = tokenizer.eos_token_id or tokenizer.sep_token_id or 0
    encoded = backend.encode_batch(docs, add_special_tokens=False)
    stream = np.asarray([t for e in encoded for t in [*e.ids, sep]], dtype=np.int32)
    rng = np.random.default_rng(args.seed)
    starts = rng.integers(0, len(stream) - args.seq_len, args.windows)
    tokens = stream[(starts[:, None] + np.arange(args.seq_len)).ravel()]
    offsets = np.arange(args.windows + 1, dtype=np.int64) * args.seq_len
    lists = tokens.reshape(args.windows, args.seq_len).tolist()
    n_tokens = tokens.size

    start = time.perf_counter()
    detok = Detokenizer.from_tokenizer(
        tokenizer, threads=args.threads or len(os.sched_getaffinity(0))
    )
    build_s = time.perf_counter() - start
    single = copy.copy(detok)
    single.threads = 1
    detok.decode_to_bytes(tokens[: 10 * args.seq_len], offsets[:11])  # compile / warm up

    reference = tokenizer.batch_decode(lists)
    runs: dict[str, tuple[float, float]] = {}
    checks: list[bool] = []
    methods: list[tuple[str, Callable[[], object], Callable[[object], list[str]]]] = [
        (
            "tokenizers decode_batch",
            lambda: backend.decode_batch(lists, skip_special_tokens=False),
            list,
        ),
        ("transformers batch_decode", lambda: tokenizer.batch_decode(lists), list),
        ("decode loop", lambda: [tokenizer.decode(w) for w in lists], list),
        (
            f"dexport bytes ({detok.threads} threads)",
            lambda: detok.decode_to_bytes(tokens, offsets),
            _texts,
        ),
        ("dexport bytes (1 thread)", lambda: single.decode_to_bytes(tokens, offsets), _texts),
        (
            "dexport JSON strings (1 thread)",
            lambda: single.decode_to_bytes(tokens, offsets, json=True),
            _json_texts,
        ),
        ("dexport list[str] (1 thread)", lambda: single.decode(tokens, offsets), list),
    ]
    # Rounds interleave the methods, so that load from other processes hits them alike; each
    # method keeps its best round.
    for round_ in range(args.repeats):
        for name, fn, as_texts in methods:
            wall, cpu, result = timed(fn)
            best_wall, best_cpu = runs.get(name, (float("inf"), float("inf")))
            runs[name] = (min(wall, best_wall), min(cpu, best_cpu))
            # decode_batch knows nothing of transformers' cleanup: compared where none applies
            if round_ == 0 and (name != "tokenizers decode_batch" or not detok.cleanup):
                checks.append(as_texts(result) == reference)
            del result
    if not all(checks):
        raise SystemExit(f"{label}: outputs differ from batch_decode")
    base_wall, base_cpu = runs["tokenizers decode_batch"]
    rows = []
    bytes_per_token = sum(len(t.encode()) for t in reference) / n_tokens
    for name, (wall, cpu) in runs.items():
        rows.append(
            f"| {label} | {name} | {n_tokens / wall / 1e6:.1f} | {base_wall / wall:.1f}x"
            f" | {n_tokens / cpu / 1e6:.1f} | {base_cpu / cpu:.1f}x |"
        )
    rows.append(
        f"| {label} | (table build + check: {build_s:.1f} s; {bytes_per_token:.2f} bytes/token;"
        f" fast path: {detok.exact_fast_path}) | | | | |"
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES)
    )
    parser.add_argument(
        "--windows", type=int, default=500, help="windows per tokenizer (default 500)"
    )
    parser.add_argument(
        "--seq-len", type=int, default=2049, help="tokens per window (default 2049)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each method's best counts")
    parser.add_argument(
        "--threads", type=int, default=None, help="dexport threads (default: all CPUs)"
    )
    parser.add_argument(
        "--corpus-chars", type=int, default=3_000_000, help="English text to encode"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.families.split(",") if k.strip()]
    unknown = [k for k in keys if k not in FAMILIES]
    if unknown:
        parser.error(f"unknown --families {unknown}; choose from {', '.join(FAMILIES)}")
    docs = corpus(args.corpus_chars)
    cpus = len(os.sched_getaffinity(0))
    print(
        f"machine: {platform.machine()}, {cpus} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}; {args.windows} windows x {args.seq_len} tokens; "
        f"best of {args.repeats}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "\n| tokenizer | method | M tokens/s (wall) | vs decode_batch | M tokens/CPU-s"
        " | vs decode_batch |\n|---|---|---:|---:|---:|---:|"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            for row in bench_family(key, args, Path(tmp), docs):
                print(row, flush=True)


def _texts(result: object) -> list[str]:
    data, offsets = result  # type: ignore[misc]
    buf = data.tobytes()
    return [
        buf[a:b].decode() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    ]


def _json_texts(result: object) -> list[str]:
    """The texts of JSON string literals (what JSONL lines hold)."""
    import orjson

    data, offsets = result  # type: ignore[misc]
    buf = data.tobytes()
    pairs = zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    return [orjson.loads(buf[a:b]) for a, b in pairs]


if __name__ == "__main__":
    main()
