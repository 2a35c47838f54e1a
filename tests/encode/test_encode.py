"""The encode job on a real Dask cluster: megatron-core reads the result, determinism, NPZ,
rejects, dtype, overwrite/resume."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_encode_stage import wide_tokenizer
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401
from transformers import AutoTokenizer

from pipeline.encode.api import encode_corpus
from pipeline.encode.merge import EncodeTarget
from pipeline.errors import DataCheckFailed, UserError
from pipeline.formats.indexed_dataset import IndexedDataset

BAD_LINES = ['{"title": "no text"}', '{"text": ""}', "not json", '{"text": 42}']


def write_corpus(
    directory: Path, texts: list[str], *, files: int = 3, parquet: bool = True
) -> list[str]:
    """JSONL files (with invalid lines) and a Parquet file; returns the texts in input order.

    Files are read in sorted name order, so the returned list is the expected document order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(texts)), files + int(parquet))
    order: list[str] = []
    for k in range(files):
        lines = [json.dumps({"text": texts[i], "id": int(i)}) for i in chunks[k]]
        lines[len(lines) // 2 : len(lines) // 2] = BAD_LINES  # invalid records in the middle
        (directory / f"part-{k}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        order.extend(texts[i] for i in chunks[k])
    if parquet:
        rows = [texts[i] for i in chunks[-1]]
        table = pa.table({"text": [*rows, None]})  # a null text is rejected too
        pq.write_table(table, directory / "zz.parquet", row_group_size=50)
        order.extend(rows)
    return order


def megatron_dataset(prefix: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # megatron-core warns about missing Apex/TE on import
        from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexedDataset

        return MegatronIndexedDataset(str(prefix))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    directory = tmp_path_factory.mktemp("corpus")
    texts = multilingual_text(1200, seed=21)
    return directory, write_corpus(directory, texts)


def test_megatron_core_reads_every_document(tmp_path, corpus, byte_bpe_tokenizer_path, dask_client):  # noqa: F811
    directory, texts = corpus
    tok = AutoTokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    prefix = tmp_path / "out" / "ds"
    summary = encode_corpus(
        [str(directory)],
        prefix,
        tokenizer=byte_bpe_tokenizer_path,
        append_eod=True,
        partition_bytes=16 << 10,
        client=dask_client,
    )
    assert summary["shards"] > 4  # several partitions per file: the merge has work to do
    ds = megatron_dataset(prefix)
    assert len(ds) == len(texts) == summary["documents"]
    assert ds.index.dtype == np.uint16 and ds.index.sequence_count == len(texts)
    for i, text in enumerate(texts):
        assert ds[i].tolist() == tok(text)["input_ids"] + [tok.eos_token_id], i
    assert np.array_equal(ds.document_indices, np.arange(len(texts) + 1))
    assert summary["tokens"] == int(ds.sequence_lengths.sum())
    # The same file through dexport's own reader (the format GPT-NeoX reads too).
    ours = IndexedDataset(str(prefix))
    assert np.array_equal(ours.sizes, ds.sequence_lengths) and ours.dtype == np.uint16

    manifest = json.loads((tmp_path / "out" / "ds.manifest.json").read_text())
    # +1: Parquet null
    bad = {"missing_field": 3 + 1, "empty_text": 3, "invalid_json": 3, "not_text": 3}
    assert manifest["totals"]["rejected"] == dict(sorted(bad.items()))
    assert manifest["totals"]["records"] == len(texts) + sum(bad.values())
    assert manifest["totals"]["dtype"] == "uint16"
    assert manifest["totals"]["tokenizer"]["name"] == "byte_bpe"
    assert manifest["totals"]["tokenizer"]["vocab_size"] == len(tok)
    rejects = [
        json.loads(line)
        for line in (tmp_path / "out" / "ds.rejects.jsonl").read_text().splitlines()
    ]
    assert len(rejects) == sum(bad.values()) and {r["reason"] for r in rejects} == set(bad)
    assert all(r["file"] and r["offset"] is not None for r in rejects)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ds.bin",
        "ds.idx",
        "ds.manifest.json",
        "ds.rejects.jsonl",
    ]


def test_one_and_two_workers_write_identical_bytes(
    tmp_path,
    corpus,
    byte_bpe_tokenizer_path,  # noqa: F811
    dask_client,
    dask_client_1worker,
):
    directory, _ = corpus
    outputs = []
    for name, client in (("one", dask_client_1worker), ("two", dask_client)):
        prefix = tmp_path / name / "ds"
        encode_corpus(
            str(directory),
            prefix,
            tokenizer=byte_bpe_tokenizer_path,
            append_eod=True,
            add_bos=True,
            partition_bytes=8 << 10,
            client=client,
        )
        outputs.append({p.name: p.read_bytes() for p in (tmp_path / name).iterdir()})
    assert (
        outputs[0].keys()
        == outputs[1].keys()
        == {"ds.bin", "ds.idx", "ds.rejects.jsonl", "ds.manifest.json"}
    )
    assert outputs[0] == outputs[1]


def test_npz_shards(tmp_path, corpus, byte_bpe_tokenizer_path, dask_client):  # noqa: F811
    directory, texts = corpus
    tok = AutoTokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    out = tmp_path / "npz"
    summary = encode_corpus(
        str(directory),
        out,
        tokenizer=byte_bpe_tokenizer_path,
        append_eod=True,
        format="npz",
        partition_bytes=32 << 10,
        client=dask_client,
    )
    parts = sorted(out.glob("part-*.npz"))
    assert len(parts) == summary["shards"] and (out / "_manifest.json").exists()
    docs: list[list[int]] = []
    for path in parts:
        with np.load(path, allow_pickle=False) as z:
            assert (
                set(z.files) == {"tokens", "offsets", "metadata"} and z["tokens"].dtype == np.uint16
            )
            meta = json.loads(str(z["metadata"]))
            assert meta["tokenizer"] == "byte_bpe" and meta["vocab_size"] == len(tok)
            t, o = z["tokens"], z["offsets"]
            docs.extend(t[o[i] : o[i + 1]].tolist() for i in range(len(o) - 1))
    assert docs == [tok(text)["input_ids"] + [tok.eos_token_id] for text in texts]
    # rejects kept per part, as a corpus export
    assert sorted(p.name for p in (out / "rejects").iterdir())
    again = tmp_path / "npz2"
    encode_corpus(
        str(directory),
        again,
        tokenizer=byte_bpe_tokenizer_path,
        append_eod=True,
        format="npz",
        partition_bytes=32 << 10,
        client=dask_client,
        overwrite=True,
    )
    # no timestamps inside
    assert all(p.read_bytes() == (again / p.name).read_bytes() for p in parts)


def test_wide_vocabulary_is_int32(tmp_path, dask_client):
    tokenizer = wide_tokenizer(tmp_path / "wide")
    texts = [
        " ".join(f"w{(i * 7919 + j * 104729) % 69998}" for j in range(i % 40 + 1))
        for i in range(500)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    prefix = tmp_path / "wide_ds"
    encode_corpus(
        str(tmp_path / "in.jsonl"),
        prefix,
        tokenizer=tokenizer,
        client=dask_client,
        partition_bytes=4096,
    )
    ds = megatron_dataset(prefix)
    assert ds.index.dtype == np.int32
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    assert [ds[i].tolist() for i in range(len(texts))] == [tok(t)["input_ids"] for t in texts]
    assert max(int(ds[i].max()) for i in range(len(texts))) > 65535


def test_existing_output_overwrite_and_resume(
    tmp_path,
    corpus,
    byte_bpe_tokenizer_path,  # noqa: F811
    dask_client,
    monkeypatch,
):
    directory, _ = corpus
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for p in directory.glob("*.jsonl"):
        (inputs / p.name).write_bytes(p.read_bytes())
    args = dict(
        tokenizer=byte_bpe_tokenizer_path,
        append_eod=True,
        partition_bytes=16 << 10,
        client=dask_client,
    )
    reference = tmp_path / "ref" / "ds"
    encode_corpus(str(inputs), reference, **args)
    expected = {p.name: p.read_bytes() for p in reference.parent.iterdir()}

    with pytest.raises(UserError, match="already exists.*--overwrite.*--resume"):
        encode_corpus(str(inputs), reference, **args)
    encode_corpus(str(inputs), reference, overwrite=True, **args)
    assert {p.name: p.read_bytes() for p in reference.parent.iterdir()} == expected

    # Bad input found mid-run in a fresh run leaves nothing behind ...
    prefix = tmp_path / "run" / "ds"

    def bad_input(*a, **k):
        raise UserError("bad input found while merging")

    monkeypatch.setattr(EncodeTarget, "finish", bad_input)
    with pytest.raises(UserError):
        encode_corpus(str(inputs), prefix, **args)
    assert not prefix.parent.exists() or not any(prefix.parent.iterdir())

    # ... any other failure keeps the finished shards for --resume (and no lock).
    def fail(*a, **k):
        raise RuntimeError("merge failed")

    monkeypatch.setattr(EncodeTarget, "finish", fail)
    with pytest.raises(RuntimeError):
        encode_corpus(str(inputs), prefix, **args)
    staged = {p.name for p in (prefix.parent / "ds.shards").iterdir()}
    assert ".dexport-progress" in staged and ".dexport-lock" not in staged
    assert any(name.startswith("shard-") for name in staged)
    import shutil

    shutil.rmtree(prefix.parent)

    # An interrupted run keeps its shards; --resume re-uses them without re-reading the input.
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(EncodeTarget, "finish", interrupt)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(str(inputs), prefix, **args)
    monkeypatch.undo()
    assert (tmp_path / "run" / "ds.shards").is_dir() and not prefix.with_suffix(".bin").exists()
    for p in inputs.iterdir():  # same sizes, other text: only a re-read would notice
        p.write_bytes(p.read_bytes().replace(b"the", b"THE"))
    with pytest.raises(UserError, match="already exists"):
        encode_corpus(str(inputs), prefix, **args)
    encode_corpus(str(inputs), prefix, resume=True, **args)
    assert {p.name: p.read_bytes() for p in prefix.parent.iterdir()} == expected
    summary = encode_corpus(str(inputs), prefix, resume=True, **args)  # finished: nothing to do
    assert summary["documents"] == IndexedDataset(str(prefix)).num_documents
    with pytest.raises(UserError, match="other parameters"):
        encode_corpus(str(inputs), prefix, resume=True, **{**args, "append_eod": False})


def test_everything_rejected_gives_an_empty_dataset(tmp_path, byte_bpe_tokenizer_path, dask_client):  # noqa: F811
    (tmp_path / "in.jsonl").write_text('{"text": ""}\n{"x": 1}\n')
    with pytest.raises(DataCheckFailed, match="every record was rejected") as failed:
        encode_corpus(
            str(tmp_path / "in.jsonl"),
            tmp_path / "ds",
            tokenizer=byte_bpe_tokenizer_path,
            client=dask_client,
        )
    summary = failed.value.summary  # the dataset is written (and kept for inspection)
    assert summary["documents"] == 0 and summary["rejected"] == {
        "empty_text": 1,
        "missing_field": 1,
    }
    # megatron-core cannot memory-map an empty .bin (its own tools write the same file).
    assert (
        IndexedDataset(str(tmp_path / "ds")).num_documents == 0
        and (tmp_path / "ds.bin").stat().st_size == 0
    )
