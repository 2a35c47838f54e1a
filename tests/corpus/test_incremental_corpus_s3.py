"""Incremental corpus export with inputs and output on S3 (SeaweedFS): a re-run is a no-op,
new objects are added as a generation equal to a from-scratch run, a changed object (another
ETag) is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_incremental_corpus import SPLITS, write_day

from pipeline.cli import main


def objects(fs, url: str) -> dict[str, bytes]:
    base = url.removeprefix("s3://").rstrip("/")
    fs.invalidate_cache()
    return {p[len(base) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(base))}


def split_bytes(tree: dict[str, bytes], name: str) -> bytes:
    if f"{name}.jsonl" in tree:
        return tree[f"{name}.jsonl"]
    return b"".join(tree[k] for k in sorted(tree) if k.startswith(f"{name}/"))


@pytest.fixture
def upload(s3_server, s3_bucket: str, tmp_path: Path):
    fs = s3_server.filesystem()
    local = tmp_path / "days"
    local.mkdir()

    def put(day: int, **kw) -> None:
        path = write_day(local, day, **kw)
        fs.put_file(str(path), f"{s3_bucket.removeprefix('s3://')}/in/{path.name}")

    return put


def test_incremental_corpus_on_s3(
    s3_server, s3_bucket: str, upload, tmp_path: Path, capsys
) -> None:
    fs = s3_server.filesystem()
    options = ["--storage-options", json.dumps(s3_server.storage_options)]
    out, inputs = f"{s3_bucket}/export", f"{s3_bucket}/in/"
    args = ["corpus", inputs, "--out", out, "--incremental", "--chunk-size", "4k", *options]
    upload(1, bad=1)
    upload(2)
    assert main(args) == 0
    before = objects(fs, out)
    assert "train/gen-00000.jsonl" in before
    capsys.readouterr()
    assert main(args) == 0
    assert "is up to date" in capsys.readouterr().err
    assert objects(fs, out) == before

    upload(3)
    report = tmp_path / "report.json"
    assert main([*args, "--report", str(report)]) == 0
    step = json.loads(report.read_text())["steps"][0]
    assert (step["generation"], step["records_in"], step["records_out"]) == (1, 60, 60)
    full = f"{s3_bucket}/full"
    assert main(["corpus", inputs, "--out", full, *options]) == 0
    got, want = objects(fs, out), objects(fs, full)
    for name in SPLITS:
        assert split_bytes(got, name) == split_bytes(want, name)
    assert got["dataset_stats.json"] == want["dataset_stats.json"]
    assert main(["validate", out, *options]) == 0

    upload(2, docs=61)  # a new object under an old name: another ETag and size
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2026-01-02.jsonl" in err[0] and "--rebuild" in err[0], err
