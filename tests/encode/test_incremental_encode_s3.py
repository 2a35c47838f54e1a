"""Incremental encode with inputs and output on S3 (SeaweedFS): the grown ``.bin``/``.idx``
(rewritten through the publish path) equal a from-scratch encode, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

from test_incremental_encode import write_day
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401  (session fixture)

from pipeline.cli import main


def objects(fs, url: str) -> dict[str, bytes]:
    base = url.removeprefix("s3://").rstrip("/")
    fs.invalidate_cache()
    return {p[len(base) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(base))}


def test_incremental_encode_on_s3(
    s3_server,
    s3_bucket: str,
    tmp_path: Path,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
) -> None:
    fs = s3_server.filesystem()
    options = ["--storage-options", json.dumps(s3_server.storage_options)]
    common = ["--tokenizer", str(byte_bpe_tokenizer_path), "--partition-size", "4KiB", *options]
    inputs = f"{s3_bucket}/in/"
    local = tmp_path / "days"
    local.mkdir()

    def upload(day: int, **kw) -> None:
        path = write_day(local, day, **kw)
        fs.put_file(str(path), f"{s3_bucket.removeprefix('s3://')}/in/{path.name}")

    upload(1, blank_text=1)
    upload(2)
    ds = f"{s3_bucket}/ds/ds"
    assert main(["encode", inputs, "--out", ds, "--incremental", *common]) == 0
    upload(3)
    upload(4)
    assert main(["encode", inputs, "--out", ds, "--incremental", *common]) == 0
    full = f"{s3_bucket}/full/ds"
    assert main(["encode", inputs, "--out", full, *common]) == 0
    got, want = objects(fs, f"{s3_bucket}/ds"), objects(fs, f"{s3_bucket}/full")
    for suffix in (".bin", ".idx", ".rejects.jsonl"):
        assert got[f"ds{suffix}"] == want[f"ds{suffix}"], suffix
    assert not [k for k in got if k.startswith("ds.shards")]
