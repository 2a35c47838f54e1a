"""Shared pieces of the corpus tests: the sample generator, small corpora, reading outputs."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_sample_corpus", ROOT / "scripts" / "make_sample_corpus.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sample = _load_generator()


@pytest.fixture(scope="session")
def workshop_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 705 classified documents, like the NeMo Curator workshop's export stage input."""
    out = tmp_path_factory.mktemp("classified")
    sample.generate(str(out), docs=705, seed=7, mean_words=120)
    return out


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Two zstd JSONL files and one plain file with planted bad records and blank lines."""
    out = tmp_path_factory.mktemp("bad")
    info = sample.generate(
        str(out / "z"),
        docs=240,
        bad=48,
        blank=3,
        files=2,
        seed=3,
        compression="zstd",
        mean_words=60,
    )
    plain = sample.generate(
        str(out / "p"), docs=160, bad=16, blank=2, files=1, seed=4, mean_words=60, first_id=10_000
    )
    return out, {"z": info, "p": plain}


def raw_lines(path: Path) -> list[bytes]:
    """All lines (blank ones included) of a possibly compressed file."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def read_lines(path: Path) -> list[bytes]:
    """Non-empty lines of a possibly compressed file."""
    return [line for line in raw_lines(path) if line]


def read_jsonl(path: Path) -> list[dict]:
    """Records of a (possibly compressed) JSONL file."""
    return [json.loads(line) for line in read_lines(path)]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (for byte-identity checks)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
