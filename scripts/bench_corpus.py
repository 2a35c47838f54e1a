#!/usr/bin/env python3
"""Benchmark: ``dexport corpus`` against the Hugging Face ``datasets`` pipeline users write.

Both turn the same generated classified corpus (>= 1 GB of JSONL, ``make_sample_corpus.py``)
into train/validation/test JSONL files in the training schema:

- baseline: ``load_dataset("json")`` → ``map`` to the schema → ``train_test_split`` twice
  (95/5, then the 5% into 3/2) → ``to_json`` per split (what the workshop script does with
  ``datasets``), with a fresh cache directory;
- dexport: ``python -m pipeline corpus DIR --out OUT --workers N`` (which also validates every
  record, computes ``dataset_stats.json`` and writes the dataset card).

Each runs as a separate process; wall time and peak resident memory of the whole process tree
(dexport's worker processes included) are sampled every 50 ms with psutil. Both first run once
untimed on a small corpus, so that Python's bytecode cache is warm as in a normal installation
(``PYTHONPYCACHEPREFIX`` inside the work directory: an environment with
``PYTHONDONTWRITEBYTECODE`` would otherwise recompile every imported module in every process).
Usage::

    python scripts/bench_corpus.py                    # 1 GiB corpus in /tmp/dexport-bench
    python scripts/bench_corpus.py --size 256M --workers 2 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``; wall seconds, CPU seconds and peak RSS of its whole process tree."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    # descendants are waited for by their parents
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(
            f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}"
        )
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mib": round(peak / 2**20),
        "output": output[-2000:],
    }


def hf_baseline(data_dir: str, out: str, cache: str) -> None:
    """The ``datasets`` pipeline (runs in its own process)."""
    import datasets

    datasets.disable_progress_bars()
    files = sorted(str(p) for p in Path(data_dir).glob("*.jsonl"))
    ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache)

    def to_schema(r: dict) -> dict:
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

    ds = ds.map(to_schema, remove_columns=ds.column_names)
    first = ds.train_test_split(test_size=0.05, seed=42)
    second = first["test"].train_test_split(test_size=0.4, seed=42)
    os.makedirs(out, exist_ok=True)
    for name, part in (
        ("train", first["train"]),
        ("validation", second["train"]),
        ("test", second["test"]),
    ):
        part.to_json(os.path.join(out, f"{name}.jsonl"), force_ascii=False)


def _commands(corpus: Path, out: Path, workers: int) -> list[tuple[str, list[str]]]:
    """The two pipelines as command lines (fresh output folders)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dexport = [
        sys.executable,
        "-m",
        "pipeline",
        "corpus",
        str(corpus),
        "--out",
        str(out / "dexport"),
        "--workers",
        str(workers),
    ]
    hf = [
        sys.executable,
        __file__,
        "--baseline-worker",
        str(corpus),
        str(out / "datasets"),
        str(out / "hf-cache"),
    ]
    return [("dexport", dexport), ("datasets", hf)]


def ensure_corpus(directory: Path, size: int, files: int) -> dict:
    """Generate the corpus once (re-used when a marker with the same size exists)."""
    marker = directory / "_generated.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("requested") == size and info.get("files_count") == files:
            return info
    shutil.rmtree(directory, ignore_errors=True)
    from make_sample_corpus import generate

    t0 = time.perf_counter()
    info = generate(str(directory), target_bytes=size, files=files, seed=0)
    info.update(requested=size, files_count=files, seconds=round(time.perf_counter() - t0, 1))
    info.pop("files")
    marker.write_text(json.dumps(info))
    return info


def _size(text: str) -> int:
    from make_sample_corpus import _parse_size

    return _parse_size(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="corpus size (default 1G)")
    parser.add_argument("--files", type=int, default=16, help="input files (default 16)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="dexport worker processes (default: cores)",
    )
    parser.add_argument(
        "--dir", default=os.path.join(tempfile.gettempdir(), "dexport-bench"), help="work directory"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="only run dexport")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each pipeline, alternating; the best is reported (default 1)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--baseline-worker", nargs=3, metavar=("DATA", "OUT", "CACHE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.baseline_worker:
        hf_baseline(*args.baseline_worker)
        return 0
    work = Path(args.dir)
    corpus = ensure_corpus(work / "corpus", _size(args.size), args.files)
    env = {
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(work / "pycache"),
        "PYTHONPATH": str(ROOT),
    }
    hf_env = {**env, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    ensure_corpus(work / "warmup", 4 << 20, 2)
    for name, cmd in _commands(work / "warmup", work / "warmup-out", args.workers):
        measure(cmd, hf_env if name == "datasets" else env)
    results: dict = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores,"
            f" {psutil.virtual_memory().total / 2**30:.0f} GiB"
        ),
        "corpus_bytes": corpus["bytes"],
        "documents": corpus["documents"],
        "workers": args.workers,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"corpus: {corpus['bytes'] / 1e9:.2f} GB, {corpus['documents']:,} documents in "
        f"{args.files} files",
        flush=True,
    )
    runs: dict[str, list[dict]] = {}
    for _ in range(max(1, args.repeats)):
        for name, cmd in _commands(work / "corpus", work / "out", args.workers):
            if name == "datasets" and args.skip_baseline:
                continue
            r = measure(cmd, hf_env if name == "datasets" else env)
            r["load_average"] = round(os.getloadavg()[0], 2)
            runs.setdefault(name, []).append(r)
            print(
                f"{name}: {r['wall_s']} s wall, {r['cpu_s']} s CPU, peak RSS {r['peak_rss_mib']} "
                f"MiB (load {r['load_average']})",
                flush=True,
            )
    for name, rs in runs.items():
        results[name] = min(rs, key=lambda r: r["wall_s"])
        results[f"{name}_runs"] = [{k: v for k, v in r.items() if k != "output"} for r in rs]
    shutil.rmtree(work / "out" / "hf-cache", ignore_errors=True)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if "datasets" in results:
        results["speedup"] = round(results["datasets"]["wall_s"] / results["dexport"]["wall_s"], 2)
        print(f"dexport is {results['speedup']}x faster", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
