"""The TokenSmith-compatible Python API: same names and defaults, on the parallel engine,
and each TokenSmith failure done right."""

from __future__ import annotations

import csv
import json

import numpy as np
import orjson
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401
from transformers import AutoTokenizer

from pipeline import DatasetManager
from pipeline.formats.indexed_dataset import IndexedDatasetBuilder

SEQ_LEN, SEED, ITERS, BATCH = 24, 11, 30, 4


@pytest.fixture(scope="module")
def prefix(tmp_path_factory, byte_bpe_tokenizer_path) -> str:  # noqa: F811
    tok = AutoTokenizer.from_pretrained(byte_bpe_tokenizer_path)
    prefix = str(tmp_path_factory.mktemp("api") / "ds")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    for ids in tok(multilingual_text(200, seed=5), add_special_tokens=False)["input_ids"]:
        builder.add_document(np.asarray([*ids, tok.eos_token_id]))
    builder.finalize()
    return prefix


@pytest.fixture()
def manager(prefix, dask_client, tmp_path) -> DatasetManager:
    m = DatasetManager(client=dask_client)
    m.setup_edit_inspect_sample_export(
        prefix,
        str(tmp_path / "index" / "ds"),
        ITERS,
        BATCH,
        SEQ_LEN,
        SEED,
        splits_string="969,30,1",
    )
    return m


@pytest.fixture(scope="module")
def tokenizer(byte_bpe_tokenizer_path):  # noqa: F811
    return AutoTokenizer.from_pretrained(byte_bpe_tokenizer_path)


def _lines(path) -> list[dict]:
    return [orjson.loads(x) for x in open(path, "rb")]


def test_six_methods_with_tokensmith_defaults(manager, tokenizer, tmp_path):
    ex = manager.export
    ex.export_sequences([4, 2], str(tmp_path / "s.jsonl"), tokenizer=tokenizer)
    ex.export_sequence_range(3, 9, str(tmp_path / "r.jsonl"), tokenizer=tokenizer)
    ex.export_batches([1, 3], BATCH, str(tmp_path / "b.jsonl"), tokenizer=tokenizer)
    ex.export_batch_range(
        0, 2, BATCH, str(tmp_path / "br.jsonl"), tokenizer=tokenizer, flatten_batches=True
    )
    ex.export_dataset_range(10, 30, str(tmp_path / "dr.jsonl"), tokenizer=tokenizer, chunk_size=7)
    ex.export_entire_dataset(str(tmp_path / "all.jsonl"), tokenizer=tokenizer, chunk_size=50)
    assert [r["index"] for r in _lines(tmp_path / "s.jsonl")] == [4, 2]
    assert [r["index"] for r in _lines(tmp_path / "r.jsonl")] == list(range(3, 9))
    nested = _lines(tmp_path / "b.jsonl")  # TokenSmith's default flatten_batches=False
    assert [r["batch_id"] for r in nested] == [1, 3]
    assert [s["index"] for s in nested[1]["sequences"]] == list(range(12, 16))
    assert [r["index"] for r in _lines(tmp_path / "br.jsonl")] == list(range(0, 8))
    assert [r["index"] for r in _lines(tmp_path / "dr.jsonl")] == list(range(10, 30))
    everything = _lines(tmp_path / "all.jsonl")
    assert len(everything) == len(manager.order)
    texts = manager.sample.get_samples_by_indices(
        [4, 2], return_detokenized=True, tokenizer=tokenizer
    )
    assert [r["content"] for r in _lines(tmp_path / "s.jsonl")] == texts
    samples = manager.sample.get_samples_by_indices([4, 2])  # token arrays per document
    assert texts == [tokenizer.decode(np.concatenate(s).tolist()) for s in samples]


def test_tokensmith_failures_done_right(manager, tokenizer, tmp_path, monkeypatch):
    ex = manager.export
    # raw tokens, in every format
    for fmt in ("jsonl", "csv", "npz", "parquet"):
        ex.export_sequences(
            [0, 1], str(tmp_path / f"raw.{fmt}"), format_type=fmt, return_detokenized=False
        )
        assert (tmp_path / f"raw.{fmt}").stat().st_size > 0
    assert (
        _lines(tmp_path / "raw.jsonl")[0]["content"]
        == np.concatenate(manager.sample.get_samples_by_indices([0])[0]).tolist()
    )
    # doc_details in JSONL (TokenSmith: numpy ints are not JSON serializable)
    ex.export_sequences(
        [5], str(tmp_path / "d.jsonl"), tokenizer=tokenizer, include_doc_details=True
    )
    details = _lines(tmp_path / "d.jsonl")[0]["doc_details"]
    assert details == manager.inspect.inspect_sample_by_id(5, return_doc_details=True)[1]
    # a bare file name as output_path
    monkeypatch.chdir(tmp_path)
    ex.export_sequences([1], "bare.jsonl", tokenizer=tokenizer)
    assert (tmp_path / "bare.jsonl").exists()
    # an end beyond the dataset: a clear error before anything is written
    n = len(manager.order)
    with pytest.raises(ValueError, match="outside"):
        ex.export_sequence_range(0, n + 5, str(tmp_path / "beyond.jsonl"), tokenizer=tokenizer)
    assert not (tmp_path / "beyond.jsonl").exists()
    # index is the true sample id, in CSV too
    ex.export_sequence_range(
        7, 10, str(tmp_path / "ids.csv"), format_type="csv", tokenizer=tokenizer
    )
    assert [int(r["index"]) for r in csv.DictReader(open(tmp_path / "ids.csv", newline=""))] == [
        7,
        8,
        9,
    ]
    with pytest.raises(ValueError, match="tokenizer must be provided"):
        ex.export_sequences([1], str(tmp_path / "x.jsonl"))


def test_sample_and_inspect_handlers(manager, tokenizer):
    batches = manager.sample.get_batches_by_ids([2], BATCH, return_doc_details=True)
    assert len(batches) == 1 and len(batches[0]) == BATCH
    segments, details = batches[0][0]
    assert sum(len(s) for s in segments) == SEQ_LEN + 1
    assert set(details) == {"doc_index_f", "doc_index_l", "offset_f", "offset_l"}
    same = manager.inspect.inspect_sample_by_batch(2, BATCH)
    assert np.array_equal(np.concatenate(same[0]), np.concatenate(segments))
    text = manager.inspect.inspect_sample_by_id(0, return_detokenized=True, tokenizer=tokenizer)
    window = np.concatenate(manager.sample.get_samples_by_indices([0])[0])
    assert text == tokenizer.decode(window.tolist())
    with pytest.raises(ValueError, match="out of range"):
        manager.sample.get_samples_by_indices([10**9])


def test_manifest_parameters_record_the_run(manager, tokenizer, tmp_path):
    manager.export.export_batch_range(
        0, 2, BATCH, str(tmp_path / "dir") + "/", format_type="parquet", return_detokenized=False
    )
    manifest = json.loads((tmp_path / "dir" / "_manifest.json").read_text())
    assert manifest["parameters"]["run"]["seq_len"] == SEQ_LEN
    assert manifest["totals"]["records"] == 2 * BATCH
