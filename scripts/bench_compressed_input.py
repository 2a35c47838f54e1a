#!/usr/bin/env python3
"""Peak memory of `dexport corpus` on a large compressed input (issue 10: bounded memory).

Generates a curated JSONL corpus of about ``--size`` bytes (``make_sample_corpus.py``),
compresses it into ONE single-frame ``.jsonl.zst`` (the worst case: it cannot be split, one
task reads it sequentially) and runs ``dexport corpus`` on it as a subprocess, sampling the
resident memory of the whole process tree (driver and any workers) every 50 ms. Prints a
Markdown table: input sizes, wall time, peak RSS of the tree and of the largest process.

    .venv/bin/python scripts/bench_compressed_input.py --size 1G
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _sample(pid: int, peaks: dict[str, int], stop: threading.Event) -> None:
    while not stop.wait(0.05):
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            rss = [p.memory_info().rss for p in procs]
        except psutil.Error:
            continue
        peaks["tree"] = max(peaks["tree"], sum(rss))
        peaks["largest"] = max(peaks["largest"], max(rss))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1G", help="uncompressed corpus size (default 1G)")
    p.add_argument("--work", type=Path, default=Path("/tmp/dexport-bench-zst"))
    p.add_argument("--workers", type=int, help="pass --workers N to dexport (default: embedded)")
    args = p.parse_args()
    import zstandard

    args.work.mkdir(parents=True, exist_ok=True)
    plain, packed = args.work / "plain", args.work / "corpus.jsonl.zst"
    if not packed.exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts/make_sample_corpus.py"),
                str(plain),
                "--target-bytes",
                args.size,
                "--files",
                "1",
            ],
            check=True,
        )
        (source,) = sorted(plain.glob("*.jsonl"))
        with open(source, "rb") as src, open(packed, "wb") as dst:
            zstandard.ZstdCompressor(level=3).copy_stream(src, dst)  # one frame
        shutil.rmtree(plain)
    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(ROOT / ".venv/bin/dexport"), "corpus", str(packed), "--out", str(out)]
    cmd += ["--workers", str(args.workers)] if args.workers else []
    peaks = {"tree": 0, "largest": 0}
    stop = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=_sample, args=(proc.pid, peaks, stop), daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        print(err, file=sys.stderr)
        return proc.returncode
    with zstandard.ZstdDecompressor().stream_reader(open(packed, "rb")) as reader:
        raw = sum(len(b) for b in iter(lambda: reader.read(1 << 24), b""))
    mib = 1 << 20
    print(
        "| input | compressed | uncompressed | wall s | peak RSS, process tree | largest process |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| one single-frame `.jsonl.zst` | {os.path.getsize(packed) / mib:,.0f} MiB "
        f"| {raw / mib:,.0f} MiB | {wall:.1f} | {peaks['tree'] / mib:,.0f} MiB "
        f"| {peaks['largest'] / mib:,.0f} MiB |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
