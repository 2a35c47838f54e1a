"""TokenSmith users' own code runs unchanged on ``from pipeline import DatasetManager``.

The script below is a representative copy, written for this project, of the calls in
TokenSmith's ``export_example.py`` (its seven exports) and in the code cells of its tutorials
that inspect and sample (02 and 03: segments, text, doc details, batches, sampling policies). It
runs as a plain unguarded script in a subprocess and in-process, and what it gets is checked
against dexport's own GPT-NeoX order (windows, ``tokenizer.decode`` of them, and TokenSmith's
split of each window into per-document segments). Then: GPT-NeoX's golden data, tokenizers that
only have ``decode``, any output name, ``except IndexError``, and TokenSmith's edit/search/ingest.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401
from transformers import AutoTokenizer

from pipeline import DatasetManager
from pipeline.cli import main
from pipeline.errors import NotSupported, SelectionOutOfRange, UserError
from pipeline.formats.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
from pipeline.tokens.decode_fallback import DecodeFallback
from pipeline.tokens.job import TokenExport
from pipeline.tokens.source import TrainingRun, open_sample_order

SEQ_LEN, SEED, ITERS, BATCH = 32, 42, 100, 4
REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO.parent / "shared" / "golden" / "neox"  # shared/ lies beside the clone

# TokenSmith-style user code: no main guard, keyword arguments as TokenSmith's docs write them.
TOKENSMITH_SCRIPT = """
import json

import numpy as np
from transformers import AutoTokenizer

from pipeline import DatasetManager

manager = DatasetManager()
manager.setup_edit_inspect_sample_export(
    dataset_prefix=PREFIX,
    batch_info_save_prefix=INDEX,
    train_iters=ITERS,
    train_batch_size=4,
    train_seq_len=SEQ_LEN,
    seed=SEED,
)
tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)

# export_example.py, its seven examples (ranges scaled to the small dataset)
manager.export.export_batches(
    batch_ids=[0, 1, 2], batch_size=4, output_path="exports/batches_example.jsonl",
    format_type="jsonl", return_detokenized=True, tokenizer=tokenizer,
    include_doc_details=True, flatten_batches=True,
)
manager.export.export_sequences(
    sequence_indices=list(range(10)), output_path="exports/sequences_example.csv",
    format_type="csv", return_detokenized=True, tokenizer=tokenizer, include_doc_details=False,
)
manager.export.export_sequences(
    sequence_indices=list(range(50)), output_path="exports/dataset_sample.jsonl",
    format_type="jsonl", return_detokenized=True, tokenizer=tokenizer, include_doc_details=True,
)
manager.export.export_sequences(
    sequence_indices=list(range(5)), output_path="exports/raw_tokens_example.jsonl",
    format_type="jsonl", return_detokenized=False, tokenizer=None, include_doc_details=True,
)
manager.export.export_sequence_range(
    start_idx=100, end_idx=150, output_path="exports/sequence_range_example.jsonl",
    format_type="jsonl", return_detokenized=True, tokenizer=tokenizer, include_doc_details=True,
)
manager.export.export_batch_range(
    start_batch=5, end_batch=10, batch_size=4, output_path="exports/batch_range_example.csv",
    format_type="csv", return_detokenized=True, tokenizer=tokenizer,
    include_doc_details=False, flatten_batches=True,
)
manager.export.export_dataset_range(
    start_idx=200, end_idx=400, output_path="exports/dataset_range_example.jsonl",
    format_type="jsonl", return_detokenized=True, tokenizer=tokenizer,
    include_doc_details=True, chunk_size=50,
)

# tutorial 02: inspecting samples
results = {}
sample_0 = manager.inspect.inspect_sample_by_id(sample_id=0)
results["sample_0"] = {
    "type": type(sample_0).__name__,
    "segments": [segment.tolist() for segment in sample_0],
    "first_shape": list(sample_0[0].shape),
    "first_10": sample_0[0][:10].tolist(),
}
text, doc_details = manager.inspect.inspect_sample_by_id(
    sample_id=0, return_detokenized=True, return_doc_details=True, tokenizer=tokenizer
)
results["text_0"], results["details_0"] = text, dict(doc_details.items())
batch_0 = manager.inspect.inspect_sample_by_batch(
    batch_id=0, batch_size=4, return_detokenized=True, return_doc_details=True,
    tokenizer=tokenizer,
)
results["batch_0"] = [[sample_text, details] for sample_text, details in batch_0]
tokens = manager.inspect.inspect_sample_by_id(sample_id=5)
results["token_table"] = [
    f"{token_id:8d} | {tokenizer.decode([token_id])!r}" for token_id in tokens[0][:20]
]
multi = []
for sample_id in range(20):
    _, doc_details = manager.inspect.inspect_sample_by_id(
        sample_id=sample_id, return_doc_details=True
    )
    if doc_details["doc_index_f"] != doc_details["doc_index_l"]:
        multi.append(sample_id)
results["multi_doc"] = multi
results["total_tokens_5"] = sum(len(segment) for segment in tokens)

# tutorial 03: sampling methods and policies
sample_indices = [0, 5, 10, 25, 50]
tokenized = manager.sample.get_samples_by_indices(indices=sample_indices)
results["by_indices"] = [[segment.tolist() for segment in sample] for sample in tokenized]
results["texts"] = manager.sample.get_samples_by_indices(
    indices=sample_indices, return_detokenized=True, tokenizer=tokenizer
)
batches = manager.sample.get_batches_by_ids(
    batch_ids=[1, 3], batch_size=3, return_detokenized=True, return_doc_details=True,
    tokenizer=tokenizer,
)
results["batches_1_3"] = [[text for text, _ in batch] for batch in batches]


def random_sample_policy(num_samples, max_index, rng_seed=42):
    rng = np.random.default_rng(rng_seed)
    return rng.integers(0, max_index, size=num_samples).tolist()


def sparse_sample_policy(start_index, num_samples, step_size=10):
    return [start_index + i * step_size for i in range(num_samples)]


def stride_batch_policy(start_batch_id, num_batches, stride=5):
    return [start_batch_id + i * stride for i in range(num_batches)]


def length_based_sample_policy(dataset_manager, tokenizer_for_policy, target_lengths):
    selected = []
    for target_length in target_lengths:
        best_idx, best_diff = None, float("inf")
        for idx in range(30):
            try:
                text = dataset_manager.sample.get_samples_by_indices(
                    indices=[idx], return_detokenized=True, tokenizer=tokenizer_for_policy
                )[0]
                if abs(len(text) - target_length) < best_diff:
                    best_idx, best_diff = idx, abs(len(text) - target_length)
            except Exception:
                continue
        selected.append(best_idx)
    return selected


results["random"] = manager.sample.get_samples_by_policy(
    policy_fn=random_sample_policy, num_samples=5, max_index=200, rng_seed=42,
    return_detokenized=True, tokenizer=tokenizer,
)
sparse = manager.sample.get_samples_by_policy(
    policy_fn=sparse_sample_policy, start_index=50, num_samples=4, step_size=25,
    return_doc_details=True, return_detokenized=True, tokenizer=tokenizer,
)
results["sparse"] = [[text, details["doc_index_f"]] for text, details in sparse]
stride = manager.sample.get_batches_by_policy(
    policy_fn=stride_batch_policy, batch_size=2, start_batch_id=3, num_batches=3, stride=4,
    return_doc_details=True, return_detokenized=True, tokenizer=tokenizer,
)
results["stride"] = [[text for text, _ in batch] for batch in stride]
results["power"] = manager.sample.get_batches_by_policy(
    policy_fn=lambda max_power: [2**i for i in range(1, max_power + 1)],
    batch_size=2, max_power=4, return_detokenized=True, tokenizer=tokenizer,
)
results["squares"] = manager.sample.get_samples_by_policy(
    policy_fn=lambda max_idx: [i * i for i in range(1, int(max_idx**0.5) + 1)][:5],
    max_idx=100, return_detokenized=True, tokenizer=tokenizer,
)
results["length_based"] = manager.sample.get_samples_by_policy(
    policy_fn=length_based_sample_policy, dataset_manager=manager,
    tokenizer_for_policy=tokenizer, target_lengths=[50, 150], return_detokenized=True,
    tokenizer=tokenizer,
)
with open("results.json", "w", encoding="utf-8") as f:
    json.dump(results, f)
print("done")
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory, byte_bpe_tokenizer_path) -> dict:  # noqa: F811
    """A real-text dataset, its GPT-NeoX order (built and cached once) and the tokenizer."""
    tok = AutoTokenizer.from_pretrained(byte_bpe_tokenizer_path)
    root = tmp_path_factory.mktemp("tokensmith")
    prefix = str(root / "ds")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    for ids in tok(multilingual_text(300, seed=12), add_special_tokens=False)["input_ids"]:
        builder.add_document(np.asarray([*ids, tok.eos_token_id]))
    builder.finalize()
    index = str(root / "index" / "ds")
    ds = IndexedDataset(prefix)
    run = TrainingRun(
        seq_len=SEQ_LEN, seed=SEED, train_iters=ITERS, batch_size=BATCH, index_prefix=index
    )
    order = open_sample_order(ds, run)
    return {
        "prefix": prefix,
        "index": index,
        "tokenizer_path": str(byte_bpe_tokenizer_path),
        "tok": tok,
        "ds": ds,
        "order": order,
    }


def _header(data: dict) -> str:
    return (
        f"PREFIX, INDEX, TOKENIZER = {data['prefix']!r}, {data['index']!r}, "
        f"{data['tokenizer_path']!r}\nITERS, SEQ_LEN, SEED = {ITERS}, {SEQ_LEN}, {SEED}\n"
    )


def _reference_segments(ds: IndexedDataset, order, i: int) -> list[np.ndarray]:
    """TokenSmith's split of sample ``i``: the part of each document the window spans."""
    d = {k: int(v[0]) for k, v in order.doc_details(np.array([i])).items()}
    f, last, of, ol = d["doc_index_f"], d["doc_index_l"], d["offset_f"], d["offset_l"]

    def doc(pos: int) -> np.ndarray:
        return ds.sequence(int(order.doc_idx[pos]))

    if f == last:
        return [doc(f)[of : ol + 1]]
    return [doc(f)[of:], *(doc(p) for p in range(f + 1, last)), doc(last)[: ol + 1]]


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _check_tokensmith_run(folder: Path, data: dict) -> None:
    ds, order, tok = data["ds"], data["order"], data["tok"]

    def text(i: int) -> str:
        return tok.decode(order.windows(ds, np.array([i]))[0].tolist())

    def details(i: int) -> dict:
        return {k: int(v[0]) for k, v in order.doc_details(np.array([i])).items()}

    ex = folder / "exports"
    rows = _lines(ex / "batches_example.jsonl")
    assert [r["index"] for r in rows] == list(range(12))
    assert all(r["content"] == text(r["index"]) for r in rows)
    assert all(r["doc_details"] == details(r["index"]) for r in rows)
    with open(ex / "sequences_example.csv", newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["index", "content"]  # TokenSmith's columns exactly
    assert [(int(i), c) for i, c in table[1:]] == [(i, text(i)) for i in range(10)]
    assert [r["content"] for r in _lines(ex / "dataset_sample.jsonl")] == [
        text(i) for i in range(50)
    ]
    raw = _lines(ex / "raw_tokens_example.jsonl")
    assert [r["content"] for r in raw] == order.windows(ds, np.arange(5)).tolist()
    assert [list(r) for r in raw] == [["index", "content", "doc_details"]] * 5
    rows = _lines(ex / "sequence_range_example.jsonl")
    assert [(r["index"], r["content"]) for r in rows] == [(i, text(i)) for i in range(100, 150)]
    with open(ex / "batch_range_example.csv", newline="", encoding="utf-8") as f:
        by_name = list(csv.DictReader(f))
    assert [(int(r["index"]), int(r["batch_id"])) for r in by_name] == [
        (i, i // 4) for i in range(20, 40)
    ]
    assert all(r["content"] == text(int(r["index"])) for r in by_name)
    rows = _lines(ex / "dataset_range_example.jsonl")
    assert [r["index"] for r in rows] == list(range(200, 400))
    assert all(r["content"] == text(r["index"]) for r in rows[::17])
    assert sorted(p.name for p in ex.iterdir()) == sorted(  # one file each, no staging left
        [
            "batch_range_example.csv",
            "batches_example.jsonl",
            "dataset_range_example.jsonl",
            "dataset_sample.jsonl",
            "raw_tokens_example.jsonl",
            "sequence_range_example.jsonl",
            "sequences_example.csv",
        ]
    )

    got = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    want_0 = [s.tolist() for s in _reference_segments(ds, order, 0)]
    assert got["sample_0"] == {
        "type": "list",
        "segments": want_0,
        "first_shape": [len(want_0[0])],
        "first_10": want_0[0][:10],
    }
    assert got["text_0"] == text(0) and got["details_0"] == details(0)
    assert got["batch_0"] == [[text(i), details(i)] for i in range(4)]
    first = _reference_segments(ds, order, 5)[0][:20].tolist()
    assert got["token_table"] == [f"{t:8d} | {tok.decode([t])!r}" for t in first]
    assert got["total_tokens_5"] == SEQ_LEN + 1
    multi = [i for i in range(20) if details(i)["doc_index_f"] != details(i)["doc_index_l"]]
    assert got["multi_doc"] == multi
    ids = [0, 5, 10, 25, 50]
    assert got["by_indices"] == [
        [s.tolist() for s in _reference_segments(ds, order, i)] for i in ids
    ]
    for i, sample in zip(ids, got["by_indices"], strict=True):
        assert sum(sample, []) == order.windows(ds, np.array([i]))[0].tolist()
    assert got["texts"] == [text(i) for i in ids]
    assert got["batches_1_3"] == [[text(i) for i in range(3, 6)], [text(i) for i in range(9, 12)]]
    rng = np.random.default_rng(42)
    assert got["random"] == [text(i) for i in rng.integers(0, 200, size=5).tolist()]
    assert got["sparse"] == [[text(i), details(i)["doc_index_f"]] for i in (50, 75, 100, 125)]
    assert got["stride"] == [[text(2 * b), text(2 * b + 1)] for b in (3, 7, 11)]
    assert got["power"] == [[text(2 * b), text(2 * b + 1)] for b in (2, 4, 8, 16)]
    assert got["squares"] == [text(i) for i in (1, 4, 9, 16, 25)]
    assert len(got["length_based"]) == 2 and all(isinstance(t, str) for t in got["length_based"])


def test_tokensmith_code_as_an_unguarded_script(data, tmp_path):
    script = tmp_path / "tokensmith_style.py"
    script.write_text(_header(data) + TOKENSMITH_SCRIPT, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "done"
    _check_tokensmith_run(tmp_path, data)


def test_tokensmith_code_in_process(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(_header(data) + TOKENSMITH_SCRIPT, "tokensmith_style.py", "exec")
    namespace = {"__name__": "__main__"}
    exec(code, namespace)  # noqa: S102 - the user script under test, run as a notebook would
    namespace["manager"].close()
    _check_tokensmith_run(tmp_path, data)


# -- GPT-NeoX's golden data ----------------------------------------------------------------------
GOLDEN_CASES = [GOLDEN / name for name in ("case01_u16_packed", "case03_i32_empties")]


class CharTokenizer:
    """A tokenizer with only ``decode``: ids map to characters JSON and CSV must escape."""

    ALPHABET = ("a", "é", "東", "🚀", ",", '"', "\n", " ", "\\", "\t")

    def decode(self, ids: list[int]) -> str:
        return "".join(self.ALPHABET[i % len(self.ALPHABET)] for i in ids)


@pytest.mark.parametrize("folder", GOLDEN_CASES, ids=lambda p: p.name)
def test_golden_windows_segments_and_details(folder: Path, tmp_path):
    if not folder.is_dir():
        pytest.skip("golden GPT-NeoX data not found")
    p = json.loads((folder / "params.json").read_text())
    for ext in (".bin", ".idx"):
        shutil.copy(folder / f"ds{ext}", tmp_path / f"ds{ext}")
    shutil.copytree(folder / "index", tmp_path / "index")
    before = sorted(x.name for x in (tmp_path / "index").iterdir())
    manager = DatasetManager()
    manager.setup_edit_inspect_sample_export(
        str(tmp_path / "ds"),
        str(tmp_path / "index" / "ds"),  # TokenSmith's batch_info_save_prefix
        p["train_iters"],
        p["batch_size"],
        p["seq_len"],
        p["seed"],
        splits_string=p["splits"],
    )
    assert sorted(x.name for x in (tmp_path / "index").iterdir()) == before  # loaded, not built
    ids = np.load(folder / "window_ids_train.npy").tolist()
    windows = np.load(folder / "windows_train.npy")
    golden = json.loads((folder / "doc_details_train.json").read_text())
    samples = manager.sample.get_samples_by_indices(ids, return_doc_details=True)
    for row, (segments, details) in enumerate(samples):
        assert all(s.dtype == np.dtype(p["dtype"]) for s in segments)
        np.testing.assert_array_equal(np.concatenate(segments), windows[row])
        assert details == {k: golden[row][k] for k in details}
        assert len(segments) == details["doc_index_l"] - details["doc_index_f"] + 1
    batches = manager.sample.get_batches_by_ids([0, 3], p["batch_size"])
    for batch, first in zip(batches, (0, 3 * p["batch_size"]), strict=True):
        for k, segments in enumerate(batch):
            np.testing.assert_array_equal(np.concatenate(segments), windows[ids.index(first + k)])
    # a decode-only tokenizer: the text is exactly its decode of the GPT-NeoX window
    wrapper = CharTokenizer()
    summary = manager.export.export_sequences(
        ids, str(tmp_path / "golden.json"), tokenizer=wrapper, include_doc_details=True
    )
    assert summary["records"] == len(ids)
    rows = _lines(tmp_path / "golden.json")
    assert [r["content"] for r in rows] == [wrapper.decode(w.tolist()) for w in windows]
    n = p["len_dataset"]["train"]
    with pytest.raises(IndexError, match=f"there are {n} samples"):
        manager.inspect.inspect_sample_by_id(n)
    manager.close()


# -- tokenizers that only have decode -----------------------------------------------------------
@pytest.fixture()
def manager(data) -> DatasetManager:
    m = DatasetManager()
    m.setup_edit_inspect_sample_export(data["prefix"], data["index"], ITERS, BATCH, SEQ_LEN, SEED)
    yield m
    m.close()


class Wrapper:
    """The kind of object TokenSmith users pass: it holds a tokenizer and has ``decode``."""

    def __init__(self, tok) -> None:
        self.tok = tok

    def decode(self, ids: list[int]) -> str:
        assert isinstance(ids, list) and all(type(i) is int for i in ids)
        return "[" + self.tok.decode(ids) + "]"


def test_decode_only_tokenizer_everywhere(manager, data, tmp_path):
    ds, order, wrapper = data["ds"], data["order"], Wrapper(data["tok"])
    ids = [7, 0, 33]
    want = [wrapper.decode(w.tolist()) for w in order.windows(ds, np.array(ids))]
    sample = manager.sample
    assert sample.get_samples_by_indices(ids, return_detokenized=True, tokenizer=wrapper) == want
    assert manager.inspect.inspect_sample_by_id(33, False, True, wrapper) == want[2]
    batch = manager.inspect.inspect_sample_by_batch(
        1, BATCH, return_detokenized=True, tokenizer=wrapper
    )
    assert batch == [wrapper.decode(w.tolist()) for w in order.windows(ds, np.arange(4, 8))]
    ex = manager.export
    ex.export_sequences(ids, str(tmp_path / "w.jsonl"), tokenizer=wrapper)
    assert [r["content"] for r in _lines(tmp_path / "w.jsonl")] == want
    ex.export_sequences(ids, str(tmp_path / "w.csv"), format_type="csv", tokenizer=wrapper)
    with open(tmp_path / "w.csv", newline="", encoding="utf-8") as f:
        assert [r["content"] for r in csv.DictReader(f)] == want
    ex.export_batches([2], BATCH, str(tmp_path / "w.parquet"), "parquet", tokenizer=wrapper)
    import pyarrow.parquet as pq

    nested = pq.read_table(tmp_path / "w.parquet").to_pylist()
    assert [s["content"] for s in nested[0]["sequences"]] == [
        wrapper.decode(w.tolist()) for w in order.windows(ds, np.arange(8, 12))
    ]
    manifest = ex.export_sequences(ids, str(tmp_path / "dir") + "/", tokenizer=wrapper)
    assert manifest["files"] == 1
    params = json.loads((tmp_path / "dir" / "_manifest.json").read_text())["parameters"]
    assert params["tokenizer"] == "Wrapper"
    with pytest.raises(UserError, match="has no decode method"):
        sample.get_samples_by_indices([0], return_detokenized=True, tokenizer=object())


def test_decode_only_tokenizer_on_a_cluster(data, dask_client, tmp_path):
    class LocalChars:  # defined here: the workers get it by value
        def decode(self, ids):
            return "".join(chr(0x4E00 + i % 500) for i in ids)

    wrapper = LocalChars()
    with DatasetManager(client=dask_client) as m:
        m.setup_edit_inspect_sample_export(
            data["prefix"], data["index"], ITERS, BATCH, SEQ_LEN, SEED
        )
        m.export.export_sequence_range(
            0, 60, str(tmp_path / "c.jsonl"), tokenizer=wrapper, include_doc_details=True
        )
    windows = data["order"].windows(data["ds"], np.arange(60))
    assert [r["content"] for r in _lines(tmp_path / "c.jsonl")] == [
        wrapper.decode(w.tolist()) for w in windows
    ]


def test_decode_fallback_interface():
    fallback = DecodeFallback(CharTokenizer())
    tokens = np.array([0, 1, 2, 3, 6, 5], np.uint16)
    offsets = np.array([0, 2, 2, 6])
    texts = fallback.decode(tokens, offsets)
    assert texts == ["aé", "", '東🚀\n"']
    data, offs = fallback.decode_to_bytes(tokens, offsets)
    assert data.dtype == np.uint8 and offs.dtype == np.int64
    assert [data[a:b].tobytes().decode() for a, b in zip(offs[:-1], offs[1:], strict=True)] == texts

    class Special:
        def decode(self, ids, skip_special_tokens=False):
            return "skip" if skip_special_tokens else "keep"

    assert DecodeFallback(Special()).decode(tokens, offsets[:2]) == ["keep"]
    skipping = DecodeFallback(Special()).with_skip_special_tokens(True)
    assert skipping.decode(tokens, offsets[:2]) == ["skip"]
    with pytest.raises(UserError, match="does not take skip_special_tokens"):
        DecodeFallback(CharTokenizer(), skip_special_tokens=True).decode(tokens, offsets)
    with pytest.raises(ValueError, match="offsets"):
        fallback.decode(tokens, np.array([0, 9]))


# -- output names ---------------------------------------------------------------------------------
def test_any_output_name_is_one_file(manager, data, tmp_path):
    ex, tok = manager.export, data["tok"]
    want = [tok.decode(w.tolist()) for w in data["order"].windows(data["ds"], np.arange(3, 9))]
    for name in ("x.json", "x.txt", "x.JSONL", "run.v2", "x.csv"):
        ex.export_sequence_range(3, 9, str(tmp_path / name), tokenizer=tok)  # format_type jsonl
        assert (tmp_path / name).is_file(), name
        assert [r["content"] for r in _lines(tmp_path / name)] == want
    ex.export_sequence_range(3, 9, str(tmp_path / "t.json"), format_type="csv", tokenizer=tok)
    assert (tmp_path / "t.json").read_bytes().startswith(b"index,content\r\n")
    ex.export_sequence_range(3, 9, str(tmp_path / "z.json.gz"), tokenizer=tok)
    assert [
        orjson.loads(x)["content"]
        for x in gzip.decompress((tmp_path / "z.json.gz").read_bytes()).splitlines()
    ] == want
    ex.export_sequence_range(3, 9, str(tmp_path / "all"), tokenizer=tok)  # no extension: a file
    assert [r["content"] for r in _lines(tmp_path / "all")] == want
    (tmp_path / "existing").mkdir()
    for folder in ("parts/", "existing"):  # a trailing slash or a folder: a folder of parts
        ex.export_sequence_range(3, 9, f"{tmp_path}/{folder}", tokenizer=tok)
        assert (tmp_path / folder / "_manifest.json").is_file()
    assert not list(tmp_path.glob("*.dexport-parts"))
    # The command line keeps its rule: a known extension is one file, anything else a folder.
    assert TokenExport(prefix="p", out="x.json", selection_kind="all").single_file() is None
    assert TokenExport(prefix="p", out="x.csv.gz", selection_kind="all").single_file() == "csv"
    assert TokenExport(prefix="p", out="x", selection_kind="all", single=True).single_file() == (
        "jsonl"
    )
    spec = TokenExport(prefix="p", out="a.jsonl/", selection_kind="all", single=False)
    assert spec.single_file() is None


def test_cli_keeps_its_rule(data, tmp_path, capsys):
    run = ["tokens", data["prefix"], "--seq-len", str(SEQ_LEN), "--seed", str(SEED)]
    run += ["--train-iters", str(ITERS), "--batch-size", str(BATCH), "--index", data["index"]]
    assert main([*run, "--sequences", "1,2", "--out", str(tmp_path / "x.json")]) == 0
    assert (tmp_path / "x.json" / "_manifest.json").is_file()
    capsys.readouterr()
    n = len(data["order"])
    assert main([*run, "--sequences", f"1,{n}", "--out", str(tmp_path / "y.jsonl")]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("dexport: error")]
    assert errors == [
        f"dexport: error: sample {n} is out of range: there are {n} samples (0..{n - 1})"
    ]
    assert not (tmp_path / "y.jsonl").exists()


# -- out of range: IndexError as in TokenSmith, ValueError as before ------------------------------
def test_out_of_range_is_an_index_error(manager, data, tmp_path):
    n = len(data["order"])
    nb = n // BATCH  # full batches
    sample, inspect, ex, out = manager.sample, manager.inspect, manager.export, str(tmp_path / "o")
    calls = [
        lambda: sample.get_samples_by_indices([0, n]),
        lambda: sample.get_samples_by_indices([-1]),
        lambda: inspect.inspect_sample_by_id(n + 10),
        lambda: sample.get_batches_by_ids([nb], BATCH),
        lambda: inspect.inspect_sample_by_batch(nb, BATCH),
        lambda: sample.get_samples_by_policy(lambda: [n]),
        lambda: ex.export_sequences([n], out + ".jsonl", "jsonl", False),
        lambda: ex.export_batches([nb], BATCH, out + ".jsonl", "jsonl", False),
        lambda: ex.export_dataset_range(0, n + 1, out + ".jsonl", "jsonl", False),
        lambda: ex.export_batch_range(0, nb + 1, BATCH, out + ".csv", "csv", False),
    ]
    for call in calls:
        try:
            call()
        except IndexError as exc:  # how TokenSmith code catches an id past the end
            assert isinstance(exc, SelectionOutOfRange | UserError | ValueError)
            assert re.search(r"out of range|outside", str(exc))
        else:
            pytest.fail("no IndexError")
    assert not list(tmp_path.iterdir())  # refused before anything was written
    assert manager.sample.get_samples_by_indices([]) == []
    assert len(manager.sample.get_samples_by_indices([n - 1])) == 1


def test_return_types_and_argument_checks(manager, data):
    sample = manager.sample
    raw = sample.get_samples_by_indices([3])
    assert isinstance(raw, list) and isinstance(raw[0], list)
    assert all(isinstance(s, np.ndarray) and s.dtype == np.uint16 for s in raw[0])
    ((segments, details),) = sample.get_samples_by_indices([3], return_doc_details=True)
    assert all(type(v) is int for v in details.values())
    assert list(details) == ["doc_index_f", "doc_index_l", "offset_f", "offset_l"]
    batches = sample.get_batches_by_ids([1, 2], BATCH)
    assert [len(b) for b in batches] == [BATCH, BATCH]
    # TokenSmith's argument conventions: positional policy arguments follow batch_size
    by_args = sample.get_batches_by_policy(lambda a, b: [a, b], BATCH, 1, 2)
    assert all(
        np.array_equal(np.concatenate(x), np.concatenate(y))
        for bx, by in zip(by_args, batches, strict=True)
        for x, y in zip(bx, by, strict=True)
    )
    same = sample.get_samples_by_policy(
        lambda start, count: list(range(start, start + count)), 3, 1
    )
    assert np.array_equal(np.concatenate(same[0]), np.concatenate(segments))
    with pytest.raises(ValueError, match="policy_fn must be callable"):
        sample.get_samples_by_policy([1, 2])
    with pytest.raises(ValueError, match="must return a list"):
        sample.get_samples_by_policy(lambda: 3)
    with pytest.raises(ValueError, match="must be integers"):
        sample.get_samples_by_indices([1.5])
    with pytest.raises(ValueError, match="tokenizer must be provided"):
        sample.get_samples_by_indices([1], return_detokenized=True)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        sample.get_batches_by_ids([0], 0)


# -- what dexport does not do ---------------------------------------------------------------------
def test_edit_search_ingest_raise_one_clear_error(manager):
    calls = {
        "edit": lambda: manager.edit.inject_and_preview("text", None, 0),
        "search": lambda: manager.search.count([1, 2, 3]),
        "ingest": lambda: manager.ingest.ingest_jsonl("in.jsonl"),
        "setup_search": lambda: manager.setup_search("ds.bin", "idx", 2**16),
    }
    for name, call in calls.items():
        with pytest.raises(NotSupported) as info:
            call()
        assert isinstance(info.value, NotImplementedError | UserError), name
        message = str(info.value)
        assert "dexport, which exports, samples and inspects" in message, message
        assert "TokenSmith itself" in message, message
        assert "\n" not in message
        assert ("dexport encode" in message) == (name == "ingest")
    assert "TokenSmith" in repr(manager.edit)
    assert not hasattr(manager.search, "_private")  # introspection sees a plain object


# -- the README's and docs' API snippets run as written ------------------------------------------
def _snippet(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.S).group(1)


def test_readme_and_docs_api_snippets_run_as_written(tmp_path, monkeypatch, capsys):
    from pipeline.tokens.sample_data import make_token_dataset

    make_token_dataset(str(tmp_path / "try"), n_docs=400)  # the sample data both snippets name
    monkeypatch.chdir(tmp_path)
    for path, heading in (
        (REPO / "README.md", "### Python API"),
        (REPO / "docs" / "tokens.md", "## Python API"),
    ):
        namespace = {"__name__": "__main__"}
        exec(compile(_snippet(path, heading), path.name, "exec"), namespace)  # noqa: S102
        namespace["manager"].close()
    assert (tmp_path / "out" / "batches.jsonl").is_file()
    assert (tmp_path / "out" / "all" / "_manifest.json").is_file()
    assert (tmp_path / "out" / "api" / "first.json").is_file()
    assert "is out of range" in capsys.readouterr().out


def test_batch_id_comes_after_tokensmith_columns(manager, data, tmp_path):
    ex, tok = manager.export, data["tok"]
    ex.export_batches(
        [1, 2],
        4,
        str(tmp_path / "b.csv"),
        format_type="csv",
        tokenizer=tok,
        include_doc_details=True,
        flatten_batches=True,
    )
    header = (tmp_path / "b.csv").read_bytes().split(b"\r\n", 1)[0].decode()
    assert header == "index,content,doc_index_f,doc_index_l,offset_f,offset_l,batch_id"
    ex.export_batches(
        [1],
        4,
        str(tmp_path / "b.jsonl"),
        tokenizer=tok,
        include_doc_details=True,
        flatten_batches=True,
    )
    first = json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])
    assert list(first) == ["index", "content", "doc_details", "batch_id"]
