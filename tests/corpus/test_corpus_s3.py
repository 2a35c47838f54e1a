"""Corpus export from and to S3 (SeaweedFS): same bytes with 1 or 2 workers, and as locally."""

from __future__ import annotations

from pathlib import Path

import corpus_helpers
from corpus_helpers import tree_bytes

from pipeline.cli import main
from pipeline.corpus.api import export_corpus
from pipeline.validate.api import validate_export

workshop_corpus = corpus_helpers.workshop_corpus


def _objects(fs, url: str) -> dict[str, bytes]:
    base = url.removeprefix("s3://").rstrip("/")
    return {p[len(base) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(base))}


def test_s3_export_is_byte_identical_with_one_or_two_workers(
    workshop_corpus: Path,
    tmp_path: Path,
    s3_server,
    s3_bucket: str,
    dask_client,
    dask_client_1worker,
    capsys,
) -> None:
    fs = s3_server.filesystem()
    fs.put(
        str(workshop_corpus) + "/", f"{s3_bucket.removeprefix('s3://')}/classified/", recursive=True
    )
    options = s3_server.storage_options
    args = {"storage_options": options, "chunk_size": 300_000, "compression": "zstd"}
    inputs = [f"{s3_bucket}/classified/"]
    one = export_corpus(inputs, f"{s3_bucket}/one/export", client=dask_client_1worker, **args)
    two = export_corpus(inputs, f"{s3_bucket}/two/export", client=dask_client, **args)
    assert one["splits"] == two["splits"] and one["documents"] == 705
    a, b = _objects(fs, f"{s3_bucket}/one/export"), _objects(fs, f"{s3_bucket}/two/export")
    assert a == b and "train.jsonl.zst" in a and "_manifest.json" in a
    # The same data files as a local export of the same input (only the manifest's input
    # URLs differ).
    export_corpus(
        [str(workshop_corpus)],
        str(tmp_path / "export"),
        client=dask_client,
        chunk_size=300_000,
        compression="zstd",
    )
    local = {k.removeprefix("export/"): v for k, v in tree_bytes(tmp_path).items()}
    assert {k: v for k, v in local.items() if k != "_manifest.json"} == {
        k: v for k, v in a.items() if k != "_manifest.json"
    }
    assert validate_export(f"{s3_bucket}/two/export", options).passed
    import json

    assert (
        main(["validate", f"{s3_bucket}/two/export", "--storage-options", json.dumps(options)]) == 0
    )
    assert "ALL SPLITS PASSED VALIDATION" in capsys.readouterr().out
