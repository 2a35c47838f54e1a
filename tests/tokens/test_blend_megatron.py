"""Blended megatron-core runs, compared with megatron-core's own ``BlendedDataset``.

Each configuration is built by ``BlendedMegatronDatasetBuilder(GPTDataset, ...)`` on CPU from
datasets written with megatron-core's ``IndexedDatasetBuilder``; dexport must give the same
blending arrays and, for every position read, the window ``BlendedDataset[i]`` reads — when it
builds everything itself and when it loads megatron-core's cache files.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.tokens.blend import megatron_blend
from pipeline.tokens.blend_order import BlendOrder
from pipeline.tokens.megatron_index import SPLITS, megatron_num_samples
from pipeline.tokens.source import TrainingRun, open_sample_order
from tests.tokens.test_megatron_index import Tok, _docs, mc, write_dataset  # noqa: F401

pytestmark = pytest.mark.megatron

# name: (datasets as (documents, dtype), seq_len, seed, extra token, splits, blend, sizes)
# blend: ("shared", [w1, p1, w2, p2, ...]) for --data-path, or ("per_split", [train, valid,
# test] lists in the same syntax); prefixes are indexes into the datasets.
CONFIGS = {
    "two-u16": (
        [(_docs(1000, 1, 90, 1), np.uint16), (_docs(1000, 1, 120, 2), np.uint16)],
        32,
        1234,
        True,
        "969,30,1",
        ("shared", ["0.3", 0, "0.7", 1]),
        list(
            megatron_num_samples(60, 16).values()
        ),  # train_iters 60, global batch 16: 960 / 1600 / 1600
    ),
    "three-i32-epochs": (
        [
            (_docs(500, 1, 60, 3), np.int32),
            (_docs(40, 1, 20, 4), np.int32),  # small: its share needs many epochs
            (_docs(300, 1, 80, 5), np.int32),
        ],
        16,
        7,
        False,
        "90,8,2",
        ("shared", ["2", 0, "1", 1, "1", 2]),
        [1500, 300, 200],
    ),
    "per-split": (
        [
            (_docs(200, 1, 70, 6), np.uint16),
            (_docs(150, 1, 70, 7), np.uint16),
            (_docs(60, 1, 50, 8), np.uint16),
            (_docs(50, 1, 50, 9), np.uint16),
        ],
        24,
        42,
        True,
        None,
        ("per_split", [["0.6", 0, "0.4", 1], ["1", 2, "3", 3], [2]]),
        [700, 400, 150],
    ),
    "one-weighted": (  # --data-path 1 P: a BlendedDataset of one dataset (with the margin)
        [(_docs(150, 1, 60, 12), np.int32)],
        16,
        5,
        True,
        "90,5,5",
        ("shared", ["1", 0]),
        [400, 60, 60],
    ),
    "no-weights": (
        [(_docs(200, 1, 50, 10), np.uint16), (_docs(120, 1, 50, 11), np.uint16)],
        20,
        3,
        True,
        "80,10,10",
        ("shared", [0, 1]),
        [300, 50, 50],
    ),
}


@pytest.fixture(scope="module")
def one_rank(mc, tmp_path_factory):  # noqa: F811
    """A one-process gloo group: BlendedDataset asks torch.distributed for its rank when it
    writes its cache."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _paths(values: list, prefixes: list[str]) -> list[str]:
    return [prefixes[v] if isinstance(v, int) else v for v in values]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def built(request, mc, one_rank, tmp_path_factory) -> dict:  # noqa: F811
    datasets, seq_len, seed, extra, splits, (kind, spec), sizes = CONFIGS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    prefixes = []
    for k, (docs, dtype) in enumerate(datasets):
        prefix = folder / f"d{k}"
        write_dataset(mc, prefix, docs, dtype, 100000 if dtype == np.int32 else 50000, k)
        prefixes.append(str(prefix))
    from megatron.core.datasets.utils import get_blend_from_list

    if kind == "shared":
        mc_blend = {"blend": get_blend_from_list(_paths(spec, prefixes)), "split": splits}
        ours = megatron_blend(_paths(spec, prefixes))
    else:
        per = [get_blend_from_list(_paths(s, prefixes)) for s in spec]
        mc_blend = {"blend_per_split": per}
        ours = megatron_blend(**{s: _paths(v, prefixes) for s, v in zip(SPLITS, spec, strict=True)})
    config = mc.GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_len,
        path_to_cache=str(folder / "cache"),
        tokenizer=Tok(50000),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        add_extra_token_to_sequence=extra,
        **mc_blend,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = mc.BlendedMegatronDatasetBuilder(
            mc.GPTDataset, list(sizes), lambda: True, config
        ).build()
    return {
        "name": request.param,
        "folder": folder,
        "blend": ours,
        "reference": reference,
        "sizes": list(sizes),
        "run": {"seq_len": seq_len, "seed": seed, "extra_token": extra, "splits": splits or "1"},
    }


def _run(b: dict, split: str, **kw) -> TrainingRun:
    i = SPLITS.index(split)
    return TrainingRun(
        convention="megatron",
        num_samples=b["sizes"][i],
        split=split,
        blend=b["blend"],
        **b["run"],
        **kw,
    )


def _reference_windows(ds, ids: np.ndarray) -> np.ndarray:
    """What ``BlendedDataset[i]`` reads: its dataset's raw window (pads as -1)."""
    if not hasattr(ds, "dataset_index"):  # one dataset: megatron-core's GPTDataset itself
        return np.stack([ds._query_document_sample_shuffle_indices(int(i))[0] for i in ids])
    out = []
    for i in ids.tolist():
        k, j = int(ds.dataset_index[i]), int(ds.dataset_sample_index[i])
        out.append(ds.datasets[k]._query_document_sample_shuffle_indices(j)[0])
    return np.stack(out)


def _check_split(b: dict, split: str, order: BlendOrder) -> None:
    ds = b["reference"][SPLITS.index(split)]
    assert len(order) == len(ds)
    if hasattr(ds, "dataset_index"):
        assert order.dataset_index.dtype == ds.dataset_index.dtype == np.int16
        np.testing.assert_array_equal(order.dataset_index, ds.dataset_index)
        np.testing.assert_array_equal(order.dataset_sample_index, ds.dataset_sample_index)
        assert [len(c.order) for c in order.components] == [len(d) for d in ds.datasets]
    n = len(ds)
    rng = np.random.default_rng(1)
    ids = np.unique(np.r_[np.arange(min(n, 600)), n - 1, rng.integers(0, n, 300)])
    np.testing.assert_array_equal(order.windows(None, ids), _reference_windows(ds, ids))
    for i in ids[:: max(len(ids) // 8, 1)].tolist():  # what the model receives
        item = ds[i]
        seen = item["tokens"].numpy()
        if b["run"]["extra_token"]:
            seen = np.r_[seen, item["labels"].numpy()[-1:]]
        window = order.windows(None, np.array([i]))[0]
        np.testing.assert_array_equal(np.where(window == -1, 0, window), seen)


def test_built_blend_equals_megatron(built: dict, tmp_path: Path) -> None:
    for split in SPLITS:
        order = open_sample_order(None, _run(built, split, index_prefix=str(tmp_path / split)))
        _check_split(built, split, order)
        assert all(s.built for s in order.source.components)
        assert not order.source.blend_loaded
        if built["name"] == "three-i32-epochs":  # the small dataset is read for many epochs
            assert order.components[1].epochs >= 10


def test_loads_megatron_cache(built: dict) -> None:
    cache = str(built["folder"] / "cache")
    for split in SPLITS:
        order = open_sample_order(None, _run(built, split, index_prefix=cache))
        assert not any(s.built for s in order.source.components)
        ds = built["reference"][SPLITS.index(split)]
        assert order.source.blend_loaded == hasattr(ds, "dataset_index")
        _check_split(built, split, order)


def test_saved_blend_reloads(built: dict, tmp_path: Path) -> None:
    run = _run(built, "train", index_prefix=str(tmp_path))
    first = open_sample_order(None, run)
    if not hasattr(built["reference"][0], "dataset_index"):
        return
    assert len(list(tmp_path.glob("*-BlendedDataset-train-*"))) == 3
    again = open_sample_order(None, run)
    assert again.source.blend_loaded and not any(s.built for s in again.source.components)
    np.testing.assert_array_equal(again.dataset_index, first.dataset_index)


def test_oversampled_blend_refused(mc, tmp_path: Path) -> None:  # noqa: F811
    write_dataset(mc, tmp_path / "a", _docs(50, 1, 30, 1), np.uint16, 5000, 1)
    write_dataset(mc, tmp_path / "b", _docs(50, 1, 30, 2), np.uint16, 5000, 2)
    blend = megatron_blend(["1", str(tmp_path / "a"), "1", str(tmp_path / "b")])
    run = TrainingRun(
        seq_len=8, seed=1, convention="megatron", num_samples=400, blend=blend, splits="1"
    )
    order = open_sample_order(None, run)
    assert len(order) == 400
    with pytest.raises(UserError, match="weights"):
        megatron_blend(["1", "a", "x", "b"]).check("train")
