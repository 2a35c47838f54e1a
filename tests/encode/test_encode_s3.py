"""Encode from and to S3 (SeaweedFS): the same bytes as locally; large shards merge server-side."""

from __future__ import annotations

import json

import numpy as np
import s3fs
from test_encode import write_corpus
from test_encode_stage import wide_tokenizer
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401
from transformers import AutoTokenizer

from pipeline.encode.api import encode_corpus
from pipeline.formats.indexed_dataset import IndexedDataset


def _upload(fs: s3fs.S3FileSystem, local_dir, bucket_url: str) -> str:
    target = f"{bucket_url}/corpus"
    for path in sorted(local_dir.iterdir()):
        fs.put_file(str(path), f"{target}/{path.name}")
    return target


def _local_files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_local_and_s3_outputs_identical(
    tmp_path,
    s3_server,
    s3_bucket,
    byte_bpe_tokenizer_path,  # noqa: F811
    dask_client,
):
    texts = write_corpus(tmp_path / "corpus", multilingual_text(600, seed=31))
    fs = s3_server.filesystem()
    remote_inputs = _upload(fs, tmp_path / "corpus", s3_bucket)
    args = dict(
        tokenizer=byte_bpe_tokenizer_path,
        append_eod=True,
        partition_bytes=16 << 10,
        client=dask_client,
    )
    encode_corpus(str(tmp_path / "corpus"), tmp_path / "out" / "ds", **args)
    summary = encode_corpus(
        remote_inputs, f"{s3_bucket}/out/ds", storage_options=s3_server.storage_options, **args
    )
    assert summary["documents"] == len(texts)
    local = _local_files(tmp_path / "out")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{s3_bucket}/out"))
    # no staged object left
    assert names == ["ds.bin", "ds.idx", "ds.manifest.json", "ds.rejects.jsonl"]
    for name in ("ds.bin", "ds.idx", "ds.rejects.jsonl"):
        remote = fs.cat_file(f"{s3_bucket}/out/{name}")
        if name == "ds.rejects.jsonl":  # rejects name their source file: local path vs s3:// URL
            strip = [
                {k: v for k, v in json.loads(line).items() if k != "file"}
                for line in remote.splitlines()
            ]
            assert strip == [
                {k: v for k, v in json.loads(line).items() if k != "file"}
                for line in local[name].splitlines()
            ]
        else:
            assert remote == local[name], name
    manifest = json.loads(fs.cat_file(f"{s3_bucket}/out/ds.manifest.json"))
    assert manifest["totals"] == json.loads(local["ds.manifest.json"])["totals"]
    # Read back straight from S3 (range requests).
    ds = IndexedDataset(f"{s3_bucket}/out/ds", s3_server.storage_options)
    tok = AutoTokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    assert ds.sequence(5).tolist() == tok(texts[5])["input_ids"] + [tok.eos_token_id]


def test_large_shards_merge_server_side(tmp_path, s3_server, s3_bucket, dask_client, monkeypatch):
    # S3 copies parts of at least 5 MiB (all but the last): 1320 documents of 1001 int32 tokens
    # make a 5.3 MB first shard; the second shard may be small.
    tokenizer = wide_tokenizer(tmp_path / "wide")
    rng = np.random.default_rng(0)
    corpus = tmp_path / "big"
    corpus.mkdir()
    texts = {}
    for k, n_docs in ((0, 1320), (1, 10)):
        texts[k] = [
            " ".join(f"w{w}" for w in row) for row in rng.integers(0, 69998, size=(n_docs, 1000))
        ]
        (corpus / f"f{k}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in texts[k])
        )
    fs = s3_server.filesystem()
    remote_inputs = _upload(fs, corpus, s3_bucket)
    merges: list[int] = []
    original = s3fs.S3FileSystem.merge

    def spy(self, path, filelist, **kwargs):
        merges.append(len(filelist))
        return original(self, path, filelist, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "merge", spy)
    summary = encode_corpus(
        remote_inputs,
        f"{s3_bucket}/big/ds",
        tokenizer=tokenizer,
        append_eod=True,
        storage_options=s3_server.storage_options,
        client=dask_client,
    )
    assert (
        summary["tokens"] == 1330 * 1001 and summary["dtype"] == "int32" and summary["shards"] == 2
    )
    assert merges == [2]  # the .bin was assembled by UploadPartCopy, not downloaded
    ds = IndexedDataset(f"{s3_bucket}/big/ds", s3_server.storage_options)
    assert len(ds) == 1330 and (ds.sizes == 1001).all()
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    for i, text in (
        (0, texts[0][0]),
        (1319, texts[0][-1]),
        (1320, texts[1][0]),
        (1329, texts[1][-1]),
    ):
        assert ds.sequence(i).tolist() == tok(text)["input_ids"] + [tok.eos_token_id]
    manifest = json.loads(fs.cat_file(f"{s3_bucket}/big/ds.manifest.json"))
    assert manifest["files"][0]["path"] == "ds.bin" and manifest["files"][0]["sha256"] is None
    assert [s["documents"] for s in manifest["shards"]] == [1320, 10]
