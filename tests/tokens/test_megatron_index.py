"""megatron-core GPTDataset sample order, compared with megatron-core itself.

Datasets are written with megatron-core's own ``IndexedDatasetBuilder``; the reference arrays,
windows and cache files come from ``BlendedMegatronDatasetBuilder(GPTDataset, ...)`` on CPU.
megatron-core is imported once per module (its import pulls in torch: tens of seconds).
"""

from __future__ import annotations

import importlib
import logging
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.tokens.megatron_cache import description_md5, megatron_description
from pipeline.tokens.megatron_index import (
    SPLITS,
    build_megatron_arrays,
    build_sample_index,
    megatron_num_samples,
    megatron_sample_order,
    megatron_split_bounds,
    megatron_split_matrix,
)

pytestmark = pytest.mark.megatron
KINDS = ("document_index", "sample_index", "shuffle_index")


class Tok:
    """The little of a tokenizer GPTDataset reads (no ``pad``: megatron-core pads with -1)."""

    def __init__(self, vocab_size: int, pad: int | None = None) -> None:
        self.vocab_size = vocab_size
        self.eod = 0
        if pad is not None:
            self.pad = pad
        self.unique_identifiers = {"class": "Tok", "vocab_size": vocab_size}


@pytest.fixture(scope="module")
def mc() -> types.SimpleNamespace:
    """megatron-core's dataset pieces, imported quietly."""
    pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("megatron.core")
        mods = {
            name: importlib.import_module(f"megatron.core.datasets.{name}")
            for name in (
                "helpers",
                "blended_megatron_dataset_builder",
                "blended_megatron_dataset_config",
                "gpt_dataset",
                "indexed_dataset",
                "utils",
            )
        }
    logging.getLogger("megatron").setLevel(logging.ERROR)
    config = mods["blended_megatron_dataset_config"]
    return types.SimpleNamespace(
        helpers=mods["helpers"],
        BlendedMegatronDatasetBuilder=mods[
            "blended_megatron_dataset_builder"
        ].BlendedMegatronDatasetBuilder,
        convert_split_vector_to_split_matrix=config.convert_split_vector_to_split_matrix,
        parse_and_normalize_split=config.parse_and_normalize_split,
        GPTDataset=mods["gpt_dataset"].GPTDataset,
        GPTDatasetConfig=mods["gpt_dataset"].GPTDatasetConfig,
        IndexedDatasetBuilder=mods["indexed_dataset"].IndexedDatasetBuilder,
        Split=mods["utils"].Split,
    )


def write_dataset(mc, prefix: Path, docs: list[list[int]], dtype, vocab: int, seed: int) -> None:
    """Documents given as lists of sequence lengths; random tokens."""
    rng = np.random.default_rng(seed)
    builder = mc.IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for lengths in docs:
        tokens = rng.integers(0, vocab, sum(lengths)).astype(np.int64)
        builder.add_document(tokens, lengths)  # a NumPy array: torch tensors warn on NumPy 2
    builder.finalize(f"{prefix}.idx")


def megatron_build(mc, prefix: Path, cache: Path, sizes: list, *, tok: Tok, **kw) -> list:
    config = mc.GPTDatasetConfig(
        random_seed=kw["seed"],
        sequence_length=kw["seq_len"],
        blend=([str(prefix)], None),
        split=kw["splits"],
        path_to_cache=str(cache),
        tokenizer=tok,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        add_extra_token_to_sequence=kw["extra"],
        drop_last_partial_validation_sequence=kw.get("drop_last_valid", True),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mc.BlendedMegatronDatasetBuilder(mc.GPTDataset, sizes, lambda: True, config).build()


def split_tokens(sizes: np.ndarray, splits: str) -> list[int]:
    b = megatron_split_bounds(splits, len(sizes))
    return [int(sizes[b[i] : b[i + 1]].sum()) for i in range(3)]


def samples_for(kind: str, tokens: int, seq_len: int, extra: int) -> int | None:
    """A num_samples that exercises ``kind`` (checked against the build below)."""
    per_epoch = (tokens - extra) // seq_len
    return {
        "none": None,
        "partial": max(per_epoch // 3, 1),
        "sep": 2 * per_epoch + max(per_epoch // 4, 1),  # 3rd epoch 25 % used: shuffled apart
        "nosep": 2 * per_epoch + per_epoch * 9 // 10,  # 3rd epoch 90 % used: shuffled with the rest
    }[kind]


def _docs(n: int, low: int, high: int, seed: int, per_doc: int = 1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(low, high + 1, per_doc).tolist() for _ in range(n)]


# name: (documents as sequence lengths, dtype, vocab, seq_len, seed, splits, extra token,
#        num_samples kind per split, drop_last_partial_validation_sequence)
CASES = {
    "u16-extra": (
        _docs(2000, 1, 60, 1),
        np.uint16,
        50000,
        32,
        1234,
        "969,30,1",
        True,
        ("sep", "partial", "nosep"),
        True,
    ),
    "u16-noextra": (
        _docs(2000, 1, 60, 1),
        np.uint16,
        50000,
        32,
        1234,
        "969,30,1",
        False,
        ("nosep", "sep", "none"),
        True,
    ),
    "i32-tiny-extra": (
        _docs(600, 0, 4, 2),
        np.int32,
        100000,
        6,
        7,
        "8,1,1",
        True,
        ("sep", "nosep", "partial"),
        False,
    ),
    "i32-tiny-noextra": (
        _docs(600, 0, 4, 3),
        np.int32,
        100000,
        5,
        99,
        "0.7, 0.2, 0.1",
        False,
        ("partial", "sep", "nosep"),
        False,
    ),
    "multiseq-2splits": (
        _docs(300, 0, 30, 4, per_doc=3),
        np.uint16,
        1000,
        16,
        3,
        "90,10",
        True,
        ("none", "sep", "none"),
        True,
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request, mc, tmp_path_factory) -> dict:
    docs, dtype, vocab, seq_len, seed, splits, extra, kinds, drop_last_valid = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    prefix = folder / "data" / "ds"
    prefix.parent.mkdir()
    write_dataset(mc, prefix, docs, dtype, vocab, seed)
    ours = IndexedDataset(str(prefix))
    tokens = split_tokens(np.asarray(ours.sizes), splits)
    num = [
        samples_for(k, t, seq_len, int(extra)) if t else 1
        for k, t in zip(kinds, tokens, strict=True)
    ]
    kw = {
        "seq_len": seq_len,
        "seed": seed,
        "splits": splits,
        "extra": extra,
        "drop_last_valid": drop_last_valid,
    }
    datasets = megatron_build(mc, prefix, folder / "cache", num, tok=Tok(vocab), **kw)
    return {
        "prefix": prefix,
        "cache": folder / "cache",
        "ours": ours,
        "num": num,
        "kinds": kinds,
        "datasets": datasets,
        "tok": Tok(vocab),
        **kw,
    }


def _ours_kwargs(b: dict, i: int) -> dict:
    return {
        "split": SPLITS[i],
        "splits": b["splits"],
        "num_samples": b["num"][i],
        "seq_len": b["seq_len"],
        "seed": b["seed"],
    }


def _raw_windows(ds, ids) -> np.ndarray:
    return np.stack([ds._query_document_sample_shuffle_indices(int(i))[0] for i in ids])


def test_arrays_equal_megatron(built: dict) -> None:
    for i, ds in enumerate(built["datasets"]):
        if ds is None:  # weight 0: megatron-core builds nothing, we refuse with a clear error
            with pytest.raises(UserError, match="no sequences"):
                build_megatron_arrays(
                    built["ours"].sizes, **_ours_kwargs(built, i), add_extra_token=built["extra"]
                )
            continue
        arrays = build_megatron_arrays(
            built["ours"].sizes,
            **_ours_kwargs(built, i),
            add_extra_token=built["extra"],
            drop_last_partial_validation_sequence=built["drop_last_valid"],
        )
        for kind, got in zip(KINDS, arrays, strict=True):
            want = getattr(ds, kind)
            assert got.dtype == want.dtype and got.shape == want.shape, kind
            np.testing.assert_array_equal(got, want, err_msg=kind)
        # The configuration really exercised what its name says.
        n_docs = len(set(arrays[0].tolist()))
        epochs, kind = len(arrays[0]) // n_docs, built["kinds"][i]
        assert (epochs == 1) == (kind in ("none", "partial")), (kind, epochs)
        last_epoch_alone = len(set(arrays[0][-n_docs:].tolist())) == n_docs
        if epochs > 1 and n_docs >= 20:  # with few documents a global shuffle may look separate
            assert last_epoch_alone == (kind == "sep"), kind


def test_windows_equal_megatron(built: dict) -> None:
    rng = np.random.default_rng(0)
    for i, ds in enumerate(built["datasets"]):
        if ds is None:
            continue
        order = megatron_sample_order(
            built["ours"],
            **_ours_kwargs(built, i),
            add_extra_token=built["extra"],
            drop_last_partial_validation_sequence=built["drop_last_valid"],
        )
        assert len(order) == len(ds)
        n = len(ds)
        ids = np.arange(n) if n <= 3000 else np.unique(np.r_[0, n - 1, rng.integers(0, n, 3000)])
        want = _raw_windows(ds, ids)
        np.testing.assert_array_equal(order.windows(built["ours"], ids), want)
        if SPLITS[i] == "valid" and not built["drop_last_valid"]:  # its partial last sample
            assert (want == -1).any()
        # What the model receives: tokens (+ the labels' last token with the extra token).
        for k in ids[:: max(len(ids) // 20, 1)]:
            item = ds[int(k)]
            seen = (
                np.r_[item["tokens"].numpy(), item["labels"].numpy()[-1:]]
                if built["extra"]
                else item["tokens"].numpy()
            )
            window = order.windows(built["ours"], np.array([k]))[0]
            np.testing.assert_array_equal(np.where(window == -1, 0, window), seen)


def test_load_megatron_cache(built: dict) -> None:
    for i, ds in enumerate(built["datasets"]):
        if ds is None:
            continue
        order = megatron_sample_order(
            built["ours"],
            **_ours_kwargs(built, i),
            add_extra_token=built["extra"],
            drop_last_partial_validation_sequence=built["drop_last_valid"],
            cache_dir=str(built["cache"]),
            load_only=True,
        )
        assert isinstance(order.doc_idx, np.memmap)  # loaded, not rebuilt
        for kind, got in zip(
            KINDS, (order.doc_idx, order.sample_idx, order.shuffle_idx), strict=True
        ):
            want = getattr(ds, kind)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        ids = np.unique(np.r_[0, len(ds) - 1, np.arange(0, len(ds), 7)])
        np.testing.assert_array_equal(order.windows(built["ours"], ids), _raw_windows(ds, ids))


def test_cache_built_with_other_extra_token(mc, built: dict) -> None:
    """megatron-core's cache key ignores add_extra_token_to_sequence: a run with the other
    setting reuses the files and reads them its way (past document ends, for files built without
    the extra token); so do we."""
    flipped = {k: built[k] for k in ("seq_len", "seed", "splits", "drop_last_valid")} | {
        "extra": not built["extra"]
    }
    again = megatron_build(
        mc, built["prefix"], built["cache"], built["num"], tok=built["tok"], **flipped
    )
    for i, ds in enumerate(again):
        if ds is None:
            continue
        assert isinstance(ds.document_index, np.memmap)  # megatron-core reused the cache
        kwargs = _ours_kwargs(built, i) | {"cache_dir": str(built["cache"]), "load_only": True}
        kwargs["drop_last_partial_validation_sequence"] = built["drop_last_valid"]
        order = megatron_sample_order(built["ours"], add_extra_token=not built["extra"], **kwargs)
        assert len(order) == len(ds)
        ids = np.arange(len(ds))
        np.testing.assert_array_equal(order.windows(built["ours"], ids), _raw_windows(ds, ids))


def test_saved_cache_is_megatrons(mc, built: dict, tmp_path: Path) -> None:
    """Our saved files carry megatron-core's names and bytes, and megatron-core reuses them."""
    cache = tmp_path / "ours"
    for i, ds in enumerate(built["datasets"]):
        if ds is None:
            continue
        megatron_sample_order(
            built["ours"],
            **_ours_kwargs(built, i),
            add_extra_token=built["extra"],
            drop_last_partial_validation_sequence=built["drop_last_valid"],
            cache_dir=str(cache),
            save=True,
            tokenizer_identifiers=built["tok"].unique_identifiers,
        )
        assert (
            cache / f"{ds.unique_description_hash}-GPTDataset-{SPLITS[i]}-description.txt"
        ).read_text() == ds.unique_description
    theirs = {p.name: p.read_bytes() for p in built["cache"].iterdir()}
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == theirs
    again = megatron_build(
        mc,
        built["prefix"],
        cache,
        built["num"],
        tok=built["tok"],
        **{k: built[k] for k in ("seq_len", "seed", "splits", "extra", "drop_last_valid")},
    )
    assert all(isinstance(d.document_index, np.memmap) for d in again if d is not None)  # cache hit


# -- property tests against megatron-core's pieces ---------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    weights=st.lists(
        st.one_of(st.integers(0, 1000), st.sampled_from([0.5, 0.1, 0.001, 33.3, 2.25])),
        min_size=1,
        max_size=3,
    ),
    sep=st.sampled_from([",", ", ", "/", " "]),
    n=st.integers(0, 10**7),
)
def test_split_matrix_and_bounds(mc, weights: list, sep: str, n: int) -> None:
    assume(sum(weights) > 0)
    text = sep.join(str(w) for w in weights)
    want = mc.convert_split_vector_to_split_matrix(mc.parse_and_normalize_split(text))
    assert megatron_split_matrix(text) == want
    bounds = megatron_split_bounds(text, n)
    for i, bookend in enumerate(want):
        if bookend is not None:  # megatron-core's BlendedMegatronDatasetBuilder rounding
            assert bounds[i : i + 2] == [
                int(round(bookend[0] * float(n))),
                int(round(bookend[1] * float(n))),
            ]
        else:
            assert bounds[i] == bounds[i + 1]


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=40),
    epochs=st.integers(1, 3),
    seq_len=st.integers(2, 30),
    extra=st.integers(0, 1),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_sample_index_equals_cpp(mc, sizes, epochs, seq_len, extra, drop_last, seed) -> None:
    sizes = np.asarray(sizes, np.int32)
    tokens = int(sizes.sum())
    assume(tokens > 1)
    doc_idx = np.tile(np.arange(len(sizes), dtype=np.int32), epochs)
    np.random.RandomState(seed).shuffle(doc_idx)
    # megatron-core asserts on the negative offset a trailing empty document would give
    assume(drop_last or sizes[doc_idx[-1]] >= extra)
    want = mc.helpers.build_sample_idx(
        sizes, doc_idx, seq_len, epochs, tokens, drop_last, bool(extra)
    )
    got = build_sample_index(sizes, doc_idx, seq_len, extra, drop_last)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_sample_index_float32_count(mc) -> None:
    """Past 2**24 tokens the C++ partial-sequence count is computed in single precision."""
    sizes = np.array([2**23, 2**23 + 2], np.int32)
    doc_idx = np.array([0, 1], np.int32)
    want = mc.helpers.build_sample_idx(sizes, doc_idx, 4096, 1, int(sizes.sum()), False, True)
    got = build_sample_index(sizes, doc_idx, 4096, 1, drop_last=False)
    assert len(want) == 4096 + 1  # ceil(float32(2**24 + 1) / 4096) = 4096, not 4097
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 40), min_size=3, max_size=60),
    seq_len=st.integers(2, 24),
    seed=st.integers(0, 2**32 - 1),
    extra=st.booleans(),
    split=st.sampled_from(SPLITS),
    splits=st.sampled_from(["969,30,1", "1,1,1", "6,3,1", "1"]),
    request_frac=st.one_of(st.none(), st.floats(0.01, 4.0)),
)
def test_arrays_equal_gptdataset(
    mc, sizes, seq_len, seed, extra, split, splits, request_frac
) -> None:
    """GPTDataset itself on an in-memory low-level dataset: epochs, final-epoch rule, dtypes."""
    sizes = np.asarray(sizes, np.int32)
    i = SPLITS.index(split)
    b = megatron_split_bounds(splits, len(sizes))
    tokens = int(sizes[b[i] : b[i + 1]].sum())
    assume(tokens > 1)
    num = None if request_frac is None else max(int(request_frac * tokens / seq_len), 0)
    with tempfile.TemporaryDirectory() as cache:
        low = types.SimpleNamespace(sequence_lengths=sizes, path_prefix=cache)
        config = mc.GPTDatasetConfig(
            random_seed=seed,
            sequence_length=seq_len,
            blend=(["x"], None),
            split=splits,
            path_to_cache=cache,
            tokenizer=Tok(1000),
            reset_position_ids=False,
            reset_attention_mask=False,
            eod_mask_loss=False,
            add_extra_token_to_sequence=extra,
        )
        indices = np.arange(b[i], b[i + 1], dtype=np.int32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = mc.GPTDataset(low, "x", indices, num, getattr(mc.Split, split), config)
    got = build_megatron_arrays(
        sizes,
        split=split,
        splits=splits,
        num_samples=num,
        seq_len=seq_len,
        seed=seed,
        add_extra_token=extra,
    )
    for kind, arr in zip(KINDS, got, strict=True):
        want = getattr(ds, kind)
        assert arr.dtype == want.dtype and arr.shape == want.shape, kind
        np.testing.assert_array_equal(arr, want, err_msg=kind)


# -- arguments and errors ---------------------------------------------------------------------
def test_num_samples() -> None:
    assert megatron_num_samples(5000, 32) == {
        "train": 160000,
        "valid": (5 + 1) * 100 * 32,
        "test": 3200,
    }
    assert megatron_num_samples(10, 4, eval_interval=5, eval_iters=2) == {
        "train": 40,
        "valid": 24,
        "test": 8,
    }
    with pytest.raises(UserError, match="global_batch_size"):
        megatron_num_samples(10, 0)


@pytest.mark.parametrize("bad", ["", "a,b", "1,2,3,4", "0,0,0", "-1,2", "1..2,3"])
def test_bad_splits(bad: str) -> None:
    with pytest.raises(UserError, match="splits"):
        megatron_split_bounds(bad, 100)


def test_empty_split_and_no_tokens() -> None:
    sizes = np.full(100, 5, np.int32)
    with pytest.raises(UserError, match="no sequences"):
        build_megatron_arrays(
            sizes, split="test", splits="969,30,1", num_samples=10, seq_len=4, seed=1
        )
    sizes[:10] = 0
    with pytest.raises(UserError, match="no tokens"):
        build_megatron_arrays(
            sizes, split="train", splits="1,9,0", num_samples=10, seq_len=4, seed=1
        )
    with pytest.raises(UserError, match="seq_len.*seed"):
        build_megatron_arrays(sizes, split="train", splits="1", num_samples=10, seq_len=0, seed=-1)


def test_load_only_and_corrupt_cache(tmp_path: Path) -> None:
    from pipeline.formats.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(str(tmp_path / "ds"), np.uint16)
    rng = np.random.default_rng(5)
    for n in rng.integers(1, 40, 200):
        builder.add_document(rng.integers(0, 500, n))
    builder.finalize()
    ds = IndexedDataset(str(tmp_path / "ds"))
    kw = {"num_samples": 300, "seq_len": 16, "seed": 11, "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(UserError, match="no megatron-core GPTDataset index"):
        megatron_sample_order(ds, load_only=True, **kw)
    built = megatron_sample_order(ds, save=True, **kw)
    loaded = megatron_sample_order(ds, load_only=True, **kw)
    assert isinstance(loaded.sample_idx, np.memmap)
    np.testing.assert_array_equal(
        loaded.windows(ds, np.arange(len(built))), built.windows(ds, np.arange(len(built)))
    )
    # Our description is megatron-core's text; its md5 names the files.
    text = megatron_description(
        dataset_path=ds.prefix,
        split="train",
        splits="969,30,1",
        split_matrix=megatron_split_matrix("969,30,1"),
        num_samples=300,
        seq_len=16,
        seed=11,
        tokenizer_identifiers=None,
    )
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert (
        files[0] == f"{description_md5(text)}-GPTDataset-train-description.txt" and len(files) == 4
    )
    # A truncated array is reported, not used.
    sample = next((tmp_path / "cache").glob("*sample_index.npy"))
    sample.write_bytes(sample.read_bytes()[:-8])
    with pytest.raises(UserError, match="cannot be read|does not fit"):
        megatron_sample_order(ds, load_only=True, **kw)
    # An index of another dataset with the same file name and parameters is refused.
    np.save(sample, np.zeros((len(built.sample_idx), 2), np.int32))
    with pytest.raises(UserError, match="does not fit"):
        megatron_sample_order(ds, **kw)


def _small_dataset(folder: Path) -> IndexedDataset:
    from pipeline.formats.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(str(folder / "ds"), np.uint16)
    rng = np.random.default_rng(6)
    for n in rng.integers(1, 30, 120):
        builder.add_document(rng.integers(0, 500, n))
    builder.finalize()
    return IndexedDataset(str(folder / "ds"))


def test_cache_on_s3(tmp_path: Path, s3_bucket: str, s3_storage_options: dict) -> None:
    ds = _small_dataset(tmp_path)
    kw = {
        "splits": "9,1,0",
        "num_samples": 200,
        "seq_len": 8,
        "seed": 21,
        "cache_dir": f"{s3_bucket}/cache",
    }
    built = megatron_sample_order(ds, storage_options=s3_storage_options, save=True, **kw)
    loaded = megatron_sample_order(ds, storage_options=s3_storage_options, load_only=True, **kw)
    for a, b in zip(
        (built.doc_idx, built.sample_idx, built.shuffle_idx),
        (loaded.doc_idx, loaded.sample_idx, loaded.shuffle_idx),
        strict=True,
    ):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_unwritable_cache_dir(tmp_path: Path) -> None:
    ds = _small_dataset(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    kw = {
        "splits": "1",
        "num_samples": 10,
        "seq_len": 4,
        "seed": 1,
        "cache_dir": str(tmp_path / "file" / "sub"),
    }
    with pytest.raises(UserError, match="cannot write the megatron-core index"):
        megatron_sample_order(ds, save=True, **kw)
    assert len(megatron_sample_order(ds, **kw)) >= 10


def test_token_export_equals_megatron_windows(built: dict, dask_client, tmp_path: Path) -> None:
    """End to end: ``dexport tokens --convention megatron`` loads megatron-core's own cache and
    every exported window equals megatron-core's."""
    from pipeline.cli import main

    ds = built["datasets"][0]
    if ds is None:
        pytest.skip("no train dataset in this case")
    out = tmp_path / "all.npz"
    args = [
        "tokens",
        str(built["prefix"]),
        "--convention",
        "megatron",
        "--seq-len",
        str(built["seq_len"]),
        "--seed",
        str(built["seed"]),
        "--splits",
        built["splits"],
        "--index",
        str(built["cache"]),
        "--all",
        "--doc-details",
        "--out",
        str(out),
        "--chunk-size",
        "300",
        "--scheduler",
        dask_client.scheduler.address,
    ]
    if built["num"][0] is not None:  # else one epoch, as megatron-core builds without a count
        args += ["--num-samples", str(built["num"][0])]
    if not built["extra"]:
        args.append("--no-extra-token")
    assert main(args) == 0
    z = np.load(out, allow_pickle=False)
    np.testing.assert_array_equal(z["index"], np.arange(len(ds)))
    np.testing.assert_array_equal(z["tokens"], _raw_windows(ds, np.arange(len(ds))))
