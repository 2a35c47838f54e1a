"""GPT-NeoX sample order: golden data made by GPT-NeoX itself, and a property test against a
line-by-line Python transcription of GPT-NeoX's builders (the C++ ``build_sample_idx`` loop and
the ``pack_until_overflow`` loop)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
from pipeline.tokens.neox_build import sample_idx_dtype, shuffle_idx_dtype
from pipeline.tokens.neox_index import (
    KINDS,
    SPLITS,
    build_neox_arrays,
    neox_index_filenames,
    neox_num_samples,
    neox_sample_order,
    split_doc_bounds,
)

# shared/ lies beside the clone
GOLDEN = Path(__file__).resolve().parents[3] / "shared" / "golden" / "neox"
CASES = sorted(GOLDEN.glob("case*")) if GOLDEN.is_dir() else []
pytestmark = pytest.mark.skipif(not CASES, reason="golden GPT-NeoX data not found")


def _settings(params: dict) -> dict:
    """Keyword arguments of the golden run (v1.0 has no allow_chopped: its default is True)."""
    return {
        "splits": params["splits"],
        "seq_len": params["seq_len"],
        "seed": params["seed"],
        "packing": params["packing_impl"],
        "allow_chopped": True if params["allow_chopped"] is None else params["allow_chopped"],
        "version": params["version"],
    }


@pytest.fixture(params=CASES, ids=lambda p: p.name)
def case(request: pytest.FixtureRequest) -> tuple[Path, dict]:
    return request.param, json.loads((request.param / "params.json").read_text())


def _copy_dataset(folder: Path, into: Path) -> IndexedDataset:
    for ext in (".bin", ".idx"):
        shutil.copy(folder / f"ds{ext}", into / f"ds{ext}")
    return IndexedDataset(str(into / "ds"))


# -- golden: GPT-NeoX's own files ---------------------------------------------------------------
def test_golden_params(case: tuple[Path, dict]) -> None:
    folder, p = case
    assert (
        neox_num_samples(p["train_iters"], p["batch_size"], p["eval_interval"], p["eval_iters"])
        == p["num_samples"]
    )
    assert split_doc_bounds(p["splits"], p["n_documents"]) == p["split_doc_bounds"]


def test_golden_rebuild_in_empty_folder(case: tuple[Path, dict], tmp_path: Path) -> None:
    folder, p = case
    ds = _copy_dataset(folder, tmp_path)
    kw = _settings(p)
    for split in SPLITS:
        n = p["num_samples"][split]
        if split in p["index_files"]:
            order = neox_sample_order(ds, split=split, num_samples=n, **kw)
            names = neox_index_filenames(
                "ds",
                split,
                n,
                kw["seq_len"],
                kw["seed"],
                kw["packing"],
                kw["allow_chopped"],
                kw["version"],
            )
            assert names == p["index_files"][split]
            for kind, array in zip(
                KINDS, (order.doc_idx, order.sample_idx, order.shuffle_idx), strict=True
            ):
                golden = np.load(folder / "index" / names[kind])
                assert (array.dtype, array.shape) == (golden.dtype, golden.shape), kind
                np.testing.assert_array_equal(array, golden)
                # np.save of the same array: the cache files are byte-identical to GPT-NeoX's.
                assert (tmp_path / names[kind]).read_bytes() == (
                    folder / "index" / names[kind]
                ).read_bytes()
            assert len(order) == p["len_dataset"][split]
        elif p["len_dataset"][split] is None:
            assert build_neox_arrays(ds.sizes, split=split, num_samples=n, **kw) is None
            with pytest.raises(UserError, match=f"split '{split}' has no documents with splits"):
                neox_sample_order(ds, split=split, num_samples=n, **kw)
        else:
            assert (
                len(neox_sample_order(ds, split=split, num_samples=n, save=False, **kw))
                == p["len_dataset"][split]
            )
    written = sorted(f.name for f in tmp_path.glob("*.npy"))
    assert written == sorted(name for files in p["index_files"].values() for name in files.values())


def _check_windows(folder: Path, ds: IndexedDataset, order) -> None:
    ids = np.load(folder / "window_ids_train.npy")
    np.testing.assert_array_equal(order.windows(ds, ids), np.load(folder / "windows_train.npy"))
    details = order.doc_details(ids)
    for row, want in enumerate(json.loads((folder / "doc_details_train.json").read_text())):
        assert want["id"] == ids[row]
        assert {k: int(v[row]) for k, v in details.items()} == {k: want[k] for k in details}


def test_golden_windows_of_rebuilt_index(case: tuple[Path, dict], tmp_path: Path) -> None:
    folder, p = case
    ds = IndexedDataset(str(folder / "ds"))
    order = neox_sample_order(
        ds,
        num_samples=p["num_samples"]["train"],
        index_prefix=str(tmp_path / "ds"),
        save=False,
        **_settings(p),
    )
    assert not list(tmp_path.iterdir())  # save=False writes nothing
    _check_windows(folder, ds, order)


@pytest.mark.parametrize("prefix", ["index/ds", "index", "index/"])
def test_golden_cached_files_are_loaded(case: tuple[Path, dict], prefix: str) -> None:
    folder, p = case
    ds = IndexedDataset(str(folder / "ds"))
    kw = {**_settings(p), "version": "auto"}  # current names first, then the v1.0 names
    order = neox_sample_order(
        ds,
        num_samples=p["num_samples"]["train"],
        index_prefix=f"{folder}/{prefix}",
        save=False,
        **kw,
    )
    assert isinstance(order.sample_idx, np.memmap)  # loaded, not rebuilt
    _check_windows(folder, ds, order)


# -- property: vectorized builders == transcription of GPT-NeoX's loops -----------------------
def _ref_num_epochs(tokens: int, seq_len: int, num_samples: int) -> int:
    epochs, total = 0, 0
    while True:
        epochs += 1
        total += tokens
        if (total - 1) // seq_len >= num_samples:
            return epochs


def _ref_packed(sizes, start, stop, num_samples, seq_len, seed, version):
    documents = np.arange(start, stop, dtype=np.int32)
    tokens = int(np.sum(sizes[documents]))
    epochs = _ref_num_epochs(tokens, seq_len, num_samples)
    rng = np.random.RandomState(seed=seed)
    doc_idx = np.mgrid[0:epochs, 0 : len(documents)][1]
    doc_idx[:] = documents
    doc_idx = doc_idx.reshape(-1).astype(np.int32)
    rng.shuffle(doc_idx)
    # helpers.cpp build_sample_idx, with Python ints
    n = (epochs * tokens - 1) // seq_len
    rows = [(0, 0)]
    d = off = 0
    while len(rows) <= n:
        remaining = seq_len + 1
        while remaining != 0:
            length = int(sizes[doc_idx[d]]) - off
            remaining -= length
            if remaining <= 0:
                off += remaining + length - 1
                remaining = 0
            else:
                d += 1
                off = 0
        rows.append((d, off))
    approx = (epochs * tokens - 1) / seq_len
    wide = version == "head" and not 2 * (approx + 1) < np.iinfo(np.int32).max
    sample_idx = np.array(rows, np.int64).astype(np.int64 if wide else np.int32)
    shuffle_idx = np.arange(len(rows) - 1, dtype=np.uint32)
    rng.shuffle(shuffle_idx)
    return doc_idx, sample_idx, shuffle_idx


def _ref_pack_until_overflow(sizes, n_docs, num_samples, seq_len, seed, allow_chopped):
    rng = np.random.RandomState(seed=seed)
    shuffle_idx = np.arange(num_samples)
    rng.shuffle(shuffle_idx)
    sample_idx, doc_idx = [], []
    temp = np.arange(n_docs)
    rng.shuffle(temp)
    running = cur = 0
    while len(sample_idx) < num_samples:
        if not allow_chopped and sizes[temp[cur]] > seq_len + 1:  # IndexError past the end
            cur += 1
            continue
        length = sizes[temp[cur]]
        if running == 0:
            sample_idx.append(np.array([len(doc_idx), 0]))
            doc_idx.append(temp[cur])
            running += length
        else:
            if running + length > seq_len + 1:
                running = length
                sample_idx.append(np.array([len(doc_idx), 0]))
            else:
                running += length
            doc_idx.append(temp[cur])
        cur += 1
        if cur == n_docs:
            cur = 0
            rng.shuffle(temp)
    sample_idx.append(np.array([len(doc_idx), 0]))
    return np.asarray(doc_idx), np.asarray(sample_idx), shuffle_idx


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.one_of(st.just(0), st.integers(0, 40)), min_size=1, max_size=40),
    splits=st.sampled_from(["100,0,0", "80,15,5", "969,30,1", "1,1,1", "0.5/0.5", "3"]),
    split=st.sampled_from(SPLITS),
    num_samples=st.integers(1, 60),
    seq_len=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["head", "v1.0", "overflow", "overflow-no-chop"]),
)
def test_builders_match_reference_loops(
    sizes, splits, split, num_samples, seq_len, seed, mode
) -> None:
    sizes = np.asarray(sizes, np.int32)
    packing = "packed" if mode in ("head", "v1.0") else "pack_until_overflow"
    allow_chopped = mode != "overflow-no-chop"
    kw = dict(
        split=split,
        splits=splits,
        num_samples=num_samples,
        seq_len=seq_len,
        seed=seed,
        packing=packing,
        allow_chopped=allow_chopped,
        version="v1.0" if mode == "v1.0" else "head",
    )
    bounds = split_doc_bounds(splits, len(sizes))
    start, stop = bounds[SPLITS.index(split)], bounds[SPLITS.index(split) + 1]
    if stop <= start:
        assert build_neox_arrays(sizes, **kw) is None
        return
    if sizes[start:stop].sum() == 0:
        with pytest.raises(UserError, match="holds no tokens"):
            build_neox_arrays(sizes, **kw)
        return
    try:
        if packing == "packed":
            want = _ref_packed(sizes, start, stop, num_samples, seq_len, seed, kw["version"])
        else:
            want = _ref_pack_until_overflow(
                sizes, stop - start, num_samples, seq_len, seed, allow_chopped
            )
    except IndexError:  # GPT-NeoX itself fails: we say so
        with pytest.raises(UserError, match="GPT-NeoX fails"):
            build_neox_arrays(sizes, **kw)
        return
    got = build_neox_arrays(sizes, **kw)
    for kind, g, w in zip(KINDS, got, want, strict=True):
        assert (g.dtype, g.shape) == (w.dtype, w.shape), kind
        np.testing.assert_array_equal(g, w, err_msg=kind)


@pytest.mark.parametrize("packing", ["packed", "pack_until_overflow"])
def test_builders_match_reference_on_a_larger_corpus(packing: str) -> None:
    rng = np.random.default_rng(5)
    sizes = np.where(rng.random(3000) < 0.1, 0, rng.integers(1, 300, 3000)).astype(np.int32)
    for seed, num_samples in ((0, 4000), (99, 40_000)):  # 1 and ~10 epochs
        kw = dict(
            split="train",
            splits="969,30,1",
            num_samples=num_samples,
            seq_len=64,
            seed=seed,
            packing=packing,
        )
        if packing == "packed":
            want = _ref_packed(sizes, 0, 2907, num_samples, 64, seed, "head")
        else:
            want = _ref_pack_until_overflow(sizes, 2907, num_samples, 64, seed, True)
        for g, w in zip(build_neox_arrays(sizes, **kw), want, strict=True):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


def test_dtype_rules() -> None:
    # int32 while 2 * ((epochs * tokens - 1) / L + 1) < 2**31 - 1, as GPT-NeoX HEAD decides
    assert sample_idx_dtype(1, 1_073_741_823, 1, "head") == np.int32
    assert sample_idx_dtype(1, 1_073_741_824, 1, "head") == np.int64
    assert sample_idx_dtype(3, 2**40, 7, "v1.0") == np.int32  # v1.0 has only the int32 helper
    assert shuffle_idx_dtype(2**32 - 3) == np.uint32
    assert shuffle_idx_dtype(2**32 - 2) == np.int64


# -- arguments, cache files, errors -------------------------------------------------------------
def test_split_doc_bounds_forms() -> None:
    assert split_doc_bounds("969,30,1", 512) == [0, 496, 511, 512]
    assert split_doc_bounds("969/30/1", 512) == [0, 496, 511, 512]
    assert split_doc_bounds("0.9,0.1,0", 100) == [0, 90, 100, 100]
    assert split_doc_bounds("100", 7) == [0, 7, 7, 7]
    assert split_doc_bounds(" 98 , 1 , 1 ", 300) == [0, 294, 297, 300]
    assert split_doc_bounds("1,1,1,5", 3) == [0, 1, 2, 3]  # extra weights ignored, like GPT-NeoX


@pytest.mark.parametrize("bad", ["", "a,b", "0,0,0", "-1,2,0", "nan", "inf,1", "1,,1"])
def test_split_doc_bounds_rejects(bad: str) -> None:
    with pytest.raises(UserError, match="splits") as err:
        split_doc_bounds(bad, 100)
    assert "\n" not in str(err.value)


def test_split_bounds_gpt_neox_cannot_use() -> None:
    with pytest.raises(UserError, match="cannot use"):
        split_doc_bounds("0,1,1", 3)  # rounding fix-up gives [0, -1, 1, 3]


def _tiny_dataset(tmp_path: Path, lengths=(5, 0, 9, 3, 12, 7, 1, 4, 8, 6)) -> IndexedDataset:
    builder = IndexedDatasetBuilder(str(tmp_path / "tiny"), np.uint16)
    for i, n in enumerate(lengths):
        builder.add_document(np.arange(n, dtype=np.uint16) + 100 * i)
    builder.finalize()
    return IndexedDataset(str(tmp_path / "tiny"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"packing": "bogus"}, "unknown packing 'bogus'"),
        ({"packing": "unpacked"}, "packing 'unpacked' is not supported"),
        ({"packing": "pack_until_overflow", "version": "v1.0"}, "v1.0 only has packing 'packed'"),
        ({"split": "validation"}, "unknown split 'validation'"),
        ({"version": "v2"}, "unknown version 'v2'"),
        ({"num_samples": 0}, "num_samples must be"),
        ({"seq_len": 0}, "seq_len must be"),
        ({"seed": -1}, "seed must be"),
        ({"splits": "x"}, "is not a list of numbers"),
        (
            {"split": "valid", "splits": "100,0,0"},
            "split 'valid' has no documents with splits '100,0,0'; choose another split or splits "
            "string",
        ),
    ],
)
def test_user_errors(tmp_path: Path, change: dict, match: str) -> None:
    ds = _tiny_dataset(tmp_path)
    kw = {"num_samples": 10, "seq_len": 4, "seed": 1, **change}
    with pytest.raises(UserError, match=match) as err:
        neox_sample_order(ds, **kw)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("*.npy"))


def test_split_without_tokens(tmp_path: Path) -> None:
    ds = _tiny_dataset(tmp_path, lengths=(5, 6, 0))
    with pytest.raises(UserError, match="holds no tokens"):
        neox_sample_order(ds, split="test", splits="2,0,1", num_samples=4, seq_len=4, seed=1)


def test_pack_until_overflow_where_gpt_neox_fails(tmp_path: Path) -> None:
    ds = _tiny_dataset(tmp_path, lengths=(50, 60))  # nothing fits 5 tokens without chopping
    with pytest.raises(UserError, match="GPT-NeoX fails"):
        neox_sample_order(
            ds,
            splits="100,0,0",
            num_samples=4,
            seq_len=4,
            seed=1,
            packing="pack_until_overflow",
            allow_chopped=False,
        )


def test_build_save_then_load(tmp_path: Path) -> None:
    ds = _tiny_dataset(tmp_path)
    kw = {"splits": "100,0,0", "num_samples": 30, "seq_len": 4, "seed": 3}
    built = neox_sample_order(ds, index_prefix=str(tmp_path / "cache") + "/", **kw)
    names = neox_index_filenames("tiny", "train", 30, 4, 3)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(names.values())
    loaded = neox_sample_order(ds, index_prefix=str(tmp_path / "cache"), **kw)
    assert isinstance(loaded.doc_idx, np.memmap)
    ids = np.arange(len(built))
    np.testing.assert_array_equal(loaded.windows(ds, ids), built.windows(ds, ids))
    # v1.0 names are found by version="auto" and only then
    for kind, name in names.items():
        (tmp_path / "cache" / name).rename(
            tmp_path
            / "cache"
            / neox_index_filenames("tiny", "train", 30, 4, 3, version="v1.0")[kind]
        )
    assert isinstance(
        neox_sample_order(ds, index_prefix=str(tmp_path / "cache/"), save=False, **kw).doc_idx,
        np.memmap,
    )
    assert not isinstance(
        neox_sample_order(
            ds, index_prefix=str(tmp_path / "cache/"), save=False, version="head", **kw
        ).doc_idx,
        np.memmap,
    )


def test_cache_of_other_parameters_is_rejected(tmp_path: Path) -> None:
    ds = _tiny_dataset(tmp_path)
    kw = {"splits": "100,0,0", "num_samples": 30, "seq_len": 4, "seed": 3}
    names = neox_index_filenames("tiny", "train", 30, 4, 3)
    other = build_neox_arrays(
        ds.sizes, split="train", splits="50,50,0", num_samples=30, seq_len=4, seed=3
    )
    for kind, array in zip(KINDS, other, strict=True):
        np.save(tmp_path / names[kind], array)
    with pytest.raises(UserError, match="corrupt or belongs to another dataset"):
        neox_sample_order(ds, **kw)
    (tmp_path / names["doc_idx"]).write_bytes(b"not a numpy file")
    with pytest.raises(UserError, match="is unreadable"):
        neox_sample_order(ds, **kw)


def test_index_prefix_on_s3(tmp_path: Path, s3_bucket: str, s3_storage_options: dict) -> None:
    ds = _tiny_dataset(tmp_path)
    kw = {
        "splits": "100,0,0",
        "num_samples": 30,
        "seq_len": 4,
        "seed": 3,
        "packing": "pack_until_overflow",
    }
    prefix = f"{s3_bucket}/runs/tiny"
    built = neox_sample_order(ds, index_prefix=prefix, storage_options=s3_storage_options, **kw)
    loaded = neox_sample_order(
        ds, index_prefix=prefix, storage_options=s3_storage_options, save=False, **kw
    )
    for a, b in zip(
        (built.doc_idx, built.sample_idx, built.shuffle_idx),
        (loaded.doc_idx, loaded.sample_idx, loaded.shuffle_idx),
        strict=True,
    ):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_unwritable_index_prefix(tmp_path: Path) -> None:
    ds = _tiny_dataset(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="cannot write the GPT-NeoX index"):
        neox_sample_order(
            ds,
            splits="100,0,0",
            num_samples=10,
            seq_len=4,
            seed=1,
            index_prefix=str(tmp_path / "file" / "sub" / "tiny"),
        )
    neox_sample_order(
        ds,
        splits="100,0,0",
        num_samples=10,
        seq_len=4,
        seed=1,
        index_prefix=str(tmp_path / "file" / "sub" / "tiny"),
        save=False,
    )


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_token_export_equals_golden_windows(case: str, tmp_path: Path, dask_client) -> None:
    """End to end: ``dexport tokens`` on a copy of the golden dataset, index rebuilt from
    scratch, exports exactly GPT-NeoX's windows and doc details for the golden ids."""
    from pipeline.cli import main

    folder = GOLDEN / case
    params = json.loads((folder / "params.json").read_text())
    for ext in (".bin", ".idx"):
        shutil.copy(folder / f"ds{ext}", tmp_path / f"ds{ext}")
    ids = np.load(folder / "window_ids_train.npy")
    args = [
        "tokens",
        str(tmp_path / "ds"),
        "--seq-len",
        str(params["seq_len"]),
        "--seed",
        str(params["seed"]),
        "--splits",
        params["splits"],
        "--train-iters",
        str(params["train_iters"]),
        "--batch-size",
        str(params["batch_size"]),
        "--sequences",
        ",".join(map(str, ids.tolist())),
        "--doc-details",
        "--out",
        str(tmp_path / "w.npz"),
        "--scheduler",
        dask_client.scheduler.address,
    ]
    if params["packing_impl"] and params["packing_impl"] != "packed":
        args += ["--packing", params["packing_impl"]]
    assert main(args) == 0
    z = np.load(tmp_path / "w.npz", allow_pickle=False)
    np.testing.assert_array_equal(z["index"], ids)
    np.testing.assert_array_equal(
        z["tokens"], np.load(folder / "window_ids_train.npy".replace("window_ids", "windows"))
    )
    details = json.loads((folder / "doc_details_train.json").read_text())
    for key in ("doc_index_f", "doc_index_l", "offset_f", "offset_l"):
        assert z[key].tolist() == [d[key] for d in details]
