"""Compressed inputs are encoded batch by batch: the same dataset as from the plain file."""

from __future__ import annotations

import gzip
from pathlib import Path

import tokenizers_fixtures
import zstandard
from test_encode import write_corpus

from pipeline.encode.api import encode_corpus
from pipeline.io import records

byte_bpe_tokenizer_path = tokenizers_fixtures.byte_bpe_tokenizer_path  # the session fixture


def test_streamed_batches_give_the_bytes_of_the_plain_file(
    tmp_path: Path, byte_bpe_tokenizer_path: Path, monkeypatch
) -> None:
    write_corpus(
        tmp_path / "plain",
        tokenizers_fixtures.multilingual_text(400, seed=5),
        files=1,
        parquet=False,
    )
    (plain,) = sorted((tmp_path / "plain").iterdir())
    data = plain.read_bytes() + b'{"text": ""}\n{"x": 1}\n'  # rejects in a later batch
    plain.write_bytes(data)
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "a.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "zst").mkdir()
    (tmp_path / "zst" / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    monkeypatch.setattr(records, "STREAM_BATCH", 4096)  # many batches per file
    out: dict[str, dict[str, bytes]] = {}
    for name in ("plain", "gz", "zst"):
        for fmt in ("megatron", "npz"):
            prefix = tmp_path / "out" / fmt / name / "ds"
            encode_corpus(
                str(tmp_path / name),
                prefix,
                tokenizer=byte_bpe_tokenizer_path,
                append_eod=True,
                format=fmt,
                max_reject_fraction=None,
            )
            files = [
                f for f in prefix.parent.rglob("*") if f.is_file() and "manifest" not in f.name
            ]
            out[f"{fmt}/{name}"] = {
                str(f.relative_to(prefix.parent)): f.read_bytes()
                for f in files
                if "rejects" not in str(f)
            }
    for fmt in ("megatron", "npz"):
        assert out[f"{fmt}/plain"] and out[f"{fmt}/gz"] == out[f"{fmt}/plain"]
        assert out[f"{fmt}/zst"] == out[f"{fmt}/plain"]
