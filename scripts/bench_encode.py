"""Benchmark: JSONL corpus -> tokenized Megatron dataset, dexport encode against the baselines.

The same JSONL files go through:

- ``loop``: one process, one ``tokenizer(text)["input_ids"]`` call per document, written with
  an indexed-dataset builder (Megatron-LM's ``preprocess_data.py`` without its process pool),
- ``datasets``: Hugging Face ``load_dataset("json")`` + ``map(batched=True)`` (Rust batch
  encoding, all cores, Arrow cache; no .bin/.idx is written, so it is measured doing less),
- ``dexport``: ``encode_corpus`` on a local cluster of ``--workers`` processes (started before
  the clock; its start-up time is printed separately).

Every run appends EOD. dexport's ``.bin``/``.idx`` must equal the loop's byte for byte and the
``datasets`` ids must match on a sample, or nothing is reported. Tokenizers are built offline
as in the tests: Mistral's real tekken byte-level BPE (131k tokens: int32 output) and Mistral-7B's
SentencePiece model (32k: uint16), both from ``mistral-common``, and a small trained GPT-2-style
byte-level BPE. The corpus is English prose (installed packages' METADATA files) with 10%
generated multilingual text, repeated to ``--size-mb``.

    python scripts/bench_encode.py                        # about 2-4 minutes on 2 cores
    python scripts/bench_encode.py --families tekken --size-mb 64 --workers 4
"""

from __future__ import annotations

import argparse
import glob
import json
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

from pipeline.formats.indexed_dataset import IndexedDatasetBuilder, token_dtype_for_vocab  # noqa: E402

FAMILIES: dict[str, tuple[str, Callable[[Path], Path | None]]] = {
    "tekken": ("byte-level BPE, Mistral tekken (real, 131k)", fixtures.tekken_tokenizer_dir),
    "mistral": ("SentencePiece BPE, Mistral-7B (real, 32k)", fixtures.mistral_tokenizer_dir),
    "gpt2style": ("byte-level BPE, GPT-2 style (trained, 1.5k)", fixtures.byte_bpe_tokenizer_dir),
}


def write_corpus(directory: Path, size_mb: float, files: int = 4) -> list[str]:
    """JSONL files of about ``size_mb`` MB; returns their paths in reading order."""
    site = sysconfig.get_paths()["purelib"]
    docs: list[str] = []
    for path in sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA"))):
        body = Path(path).read_text(encoding="utf-8", errors="replace").split("\n\n", 1)[-1]
        if len(body) > 200:
            docs.append(body)
    multi = fixtures.multilingual_text(4000, seed=7)
    docs += ["\n".join(multi[i : i + 40]) for i in range(0, len(multi), 40)][
        : max(1, len(docs) // 10)
    ]
    lines = [json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs]
    target, out, size = size_mb * 1e6, [], 0
    while size < target:
        for line in lines:
            out.append(line)
            size += len(line.encode())
            if size >= target:
                break
    paths = []
    for k, chunk in enumerate(np.array_split(np.arange(len(out)), files)):
        path = directory / f"corpus-{k:02d}.jsonl"
        path.write_text("".join(out[i] for i in chunk), encoding="utf-8")
        paths.append(str(path))
    return paths


def run_loop(paths: list[str], tokenizer_dir: Path, prefix: Path) -> int:
    """The single-process baseline; returns the number of tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    builder = IndexedDatasetBuilder(str(prefix), token_dtype_for_vocab(len(tok)))
    tokens = 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                ids = tok(json.loads(line)["text"])["input_ids"] + [tok.eos_token_id]
                builder.add_document(np.asarray(ids))
                tokens += len(ids)
    builder.finalize()
    return tokens


def run_datasets(paths: list[str], tokenizer_dir: Path, cache: Path) -> tuple[int, list[list[int]]]:
    """``load_dataset("json")`` + ``map(batched=True)``; returns tokens and the first ids."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    eod = tok.eos_token_id

    def encode(batch: dict) -> dict:
        return {"input_ids": [ids + [eod] for ids in tok(batch["text"])["input_ids"]]}

    ds = datasets.load_dataset("json", data_files=paths, split="train", cache_dir=str(cache))
    mapped = ds.map(encode, batched=True, remove_columns=["text"], load_from_cache_file=False)
    lengths = mapped.with_format("arrow")["input_ids"]
    return int(sum(len(x) for x in lengths.to_pylist())), mapped[:50]["input_ids"]


def _worker_cpu() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def timed(fn: Callable[[], object], client=None) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds (this process and its threads, plus the workers') and result.

    CPU seconds do not depend on what else runs on the machine, wall seconds do: on a shared
    machine compare tokens per CPU second.
    """
    workers = (
        (lambda: sum(client.run(_worker_cpu).values())) if client is not None else (lambda: 0.0)
    )
    cpu0, w0, start = time.process_time(), workers(), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    return wall, time.process_time() - cpu0 + workers() - w0, result


def bench_family(key: str, paths: list[str], tmp: Path, client, workers: int) -> list[str]:
    from pipeline.encode.api import encode_corpus
    from pipeline.formats.indexed_dataset import IndexedDataset

    label, build = FAMILIES[key]
    tokenizer_dir = build(tmp / f"tok-{key}")
    if tokenizer_dir is None:
        return [f"| {label} | skipped: mistral-common not installed | | | | | | | |"]
    loop_s, loop_cpu, loop_tokens = timed(
        lambda: run_loop(paths, tokenizer_dir, tmp / f"loop-{key}")
    )
    hf_s, hf_cpu, (hf_tokens, hf_first) = timed(
        lambda: run_datasets(paths, tokenizer_dir, tmp / f"hf-{key}")
    )
    dx_s, dx_cpu, summary = timed(
        lambda: encode_corpus(
            paths,
            tmp / f"dx-{key}",
            tokenizer=tokenizer_dir,
            append_eod=True,
            client=client,
            partition_bytes=4 << 20,
        ),
        client,
    )
    for suffix in (".bin", ".idx"):
        if (tmp / f"loop-{key}{suffix}").read_bytes() != (tmp / f"dx-{key}{suffix}").read_bytes():
            raise SystemExit(f"{key}: dexport's {suffix} differs from the loop's; not reporting")
    ours = IndexedDataset(str(tmp / f"dx-{key}"))
    if (
        hf_tokens != loop_tokens
        or [ours.sequence(i).tolist() for i in range(len(hf_first))] != hf_first
    ):
        raise SystemExit(f"{key}: datasets.map produced other ids; not reporting")
    docs = summary["documents"]
    rows = []
    methods = (
        ("loop (1 process)", loop_s, loop_cpu),
        ("datasets.map(batched=True)", hf_s, hf_cpu),
        (f"dexport encode ({workers} workers)", dx_s, dx_cpu),
    )
    for method, seconds, cpu in methods:
        rows.append(
            f"| {label} ({summary['dtype']}) | {method} | {docs:,} | {loop_tokens / 1e6:.2f} | "
            f"{seconds:.1f} | "
            f"{loop_tokens / seconds / 1e3:,.0f} | {loop_s / seconds:.2f}x | {cpu:.1f} | "
            f"{loop_tokens / cpu / 1e3:,.0f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mb", type=float, default=12.0, help="corpus size in MB of JSONL (default 12)"
    )
    parser.add_argument(
        "--families", default="tekken,mistral", help=f"comma list of {', '.join(FAMILIES)}"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="dexport worker processes (default: cores)",
    )
    args = parser.parse_args(argv)
    from cluster.client import get_client

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        paths = write_corpus(tmp, args.size_mb)
        start = time.perf_counter()
        with get_client(workers=args.workers) as client:
            started = time.perf_counter() - start
            print(
                f"# encode benchmark: {args.size_mb:g} MB JSONL in {len(paths)} files, "
                f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} cores, Python {platform.python_version()}; local cluster start "
                f"{started:.1f} s (not in the times)"
            )
            print(
                "\n| tokenizer | method | documents | M tokens | seconds | k tokens/s | vs loop | "
                "CPU s | k tokens/CPU s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
            )
            for key in args.families.split(","):
                for row in bench_family(key.strip(), paths, tmp, client, args.workers):
                    print(row, flush=True)


if __name__ == "__main__":
    main()
