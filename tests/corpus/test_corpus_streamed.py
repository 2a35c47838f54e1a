"""Compressed inputs stream through the corpus export: the same splits as the plain file."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.corpus.api import export_corpus
from pipeline.io import records


def _corpus(n: int = 1500) -> bytes:
    rng = random.Random(3)
    lines = []
    for i in range(n):
        text = " ".join(rng.choice(("alpha", "beta", "γάμμα", "日本語")) for _ in range(60))
        lines.append(json.dumps({"id": i, "text": text, "quality_prob": rng.random()}))
        if i % 50 == 7:
            lines.append("not json")
        if i % 70 == 3:
            lines.append("")
    return ("\n".join(lines) + "\n").encode()


def _frames(data: bytes, size: int = 20_000) -> bytes:
    """zstd frames of ``size`` bytes each (cut anywhere, not at line ends)."""
    compressor = zstandard.ZstdCompressor()
    return b"".join(compressor.compress(data[i : i + size]) for i in range(0, len(data), size))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_gzip_and_zstd_inputs_export_like_the_plain_file(
    tmp_path: Path, monkeypatch, fmt: str
) -> None:
    data = _corpus()
    inputs = {
        "plain": ("a.jsonl", data),
        "gzip": ("a.jsonl.gz", gzip.compress(data)),
        "frames": ("a.jsonl.zst", _frames(data)),
    }
    monkeypatch.setattr(records, "STREAM_BATCH", 8192)  # many batches per task
    results = {}
    for name, (file, blob) in inputs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / file).write_bytes(blob)
        out = tmp_path / "out" / name
        summary = export_corpus(
            [str(tmp_path / name)], str(out), chunk_size=100_000, card=False, format=fmt
        )
        stats = json.loads((out / "dataset_stats.json").read_text())
        if fmt == "jsonl":
            splits = [(out / f"{s}.jsonl").read_bytes() for s in ("train", "validation", "test")]
        else:
            splits = [
                pq.read_table(out / f"{s}.parquet").to_pylist()
                for s in ("train", "validation", "test")
            ]
        results[name] = (summary["splits"], summary["rejected"], stats, splits)
        manifest = json.loads((out / "_manifest.json").read_text())
        if name == "frames":
            assert manifest["parameters"]["partitions"] > 3  # cut at frame starts
    assert results["gzip"] == results["plain"] and results["frames"] == results["plain"]
    assert results["plain"][1] == 30
