"""GPT-NeoX blended runs against the golden cases made with GPT-NeoX's own code.

``shared/golden/neox-blend/`` holds three blends (train/valid/test each) built by GPT-NeoX's
``build_train_valid_test_data_loaders``: the blending arrays, windows ``blend[i]["text"]``
(including positions that read a dataset at or past its length), every index file it cached
and DataLoader batches. dexport must reproduce all of them, building in an empty folder, and
give the same windows when it loads GPT-NeoX's cache files instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.tokens.blend import neox_blend
from pipeline.tokens.blend_order import BlendOrder
from pipeline.tokens.source import TrainingRun, open_sample_order

GOLDEN = Path(__file__).resolve().parents[3] / "shared" / "golden" / "neox-blend"
CASES = ("blend01", "blend02", "blend03")
SPLITS = ("train", "valid", "test")

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason="golden cases not present")


@pytest.fixture(scope="module", params=CASES)
def case(request, tmp_path_factory) -> dict:
    """The case's data copied to a fresh folder (GPT-NeoX reuses whatever cache it finds)."""
    source = GOLDEN / request.param
    folder = tmp_path_factory.mktemp(request.param)
    for path in source.iterdir():
        if path.suffix in (".bin", ".idx"):
            shutil.copy(path, folder / path.name)
    spec = json.loads((source / "case.json").read_text())
    config = spec["config"]
    blend = neox_blend(
        {s: [str(folder / p) for p in config[f"{s}_data_paths"]] for s in SPLITS},
        {s: config[f"{s}_data_weights"] for s in SPLITS},
    )
    return {
        "name": request.param,
        "source": source,
        "folder": folder,
        "spec": spec,
        "config": config,
        "blend": blend,
        "expected": np.load(source / "expected.npz"),
    }


def _run(case: dict, split: str, index: Path) -> TrainingRun:
    config = case["config"]
    return TrainingRun(
        seq_len=config["seq_length"],
        seed=config["seed"],
        train_iters=config["train_iters"],
        batch_size=config["train_batch_size"],
        split=split,
        blend=case["blend"],
        index_prefix=str(index),
        # `split` is given in the configs but GPT-NeoX's blended path never reads it.
        splits=config["split"],
    )


def _check_windows(case: dict, split: str, order: BlendOrder) -> None:
    expected = case["expected"]
    windows = expected[f"{split}_windows"]
    np.testing.assert_array_equal(order.windows(None, np.arange(len(windows))), windows)
    extra_ids = expected[f"{split}_extra_ids"]
    np.testing.assert_array_equal(
        order.windows(None, extra_ids), expected[f"{split}_extra_windows"]
    )


def test_builds_what_gpt_neox_builds(case: dict, tmp_path: Path) -> None:
    index = tmp_path / "index"
    for split in SPLITS:
        spec, expected = case["spec"]["splits"][split], case["expected"]
        order = open_sample_order(None, _run(case, split, index))
        assert all(source.built for source in order.source.components)
        assert [c.num_samples for c in order.components] == spec["num_samples_per_dataset"]
        assert [len(c.order) for c in order.components] == [
            c["len_dataset"] for c in spec["components"]
        ]
        assert len(order) == spec["len_blend"]
        assert [c.weight.hex() for c in order.components] == [
            float.fromhex(h).hex() for h in spec["weights_passed_hex"]
        ]
        for name in ("dataset_index", "dataset_sample_index"):
            got, want = getattr(order, name), expected[f"{split}_{name}"]
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        _check_windows(case, split, order)
    # Every cache file, by GPT-NeoX's name (component k of a split is "{split}_{k}"), byte for byte.
    golden = sorted(p.name for p in (case["source"] / "index").iterdir())
    assert sorted(p.name for p in index.iterdir()) == golden
    for name in golden:
        assert (index / name).read_bytes() == (case["source"] / "index" / name).read_bytes(), name


def test_loader_batches(case: dict, tmp_path: Path) -> None:
    expected, batch = case["expected"], case["config"]["train_batch_size"]
    order = open_sample_order(None, _run(case, "train", tmp_path))
    for b in (0, 3):
        ids = np.arange(b * batch, (b + 1) * batch)
        np.testing.assert_array_equal(order.windows(None, ids), expected[f"train_loader_batch{b}"])
    for split in ("valid", "test"):
        order = open_sample_order(None, _run(case, split, tmp_path))
        np.testing.assert_array_equal(
            order.windows(None, np.arange(batch)), expected[f"{split}_loader_batch0"]
        )


def test_loads_gpt_neox_cache(case: dict, tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(case["source"] / "index", index)
    before = {p.name: p.stat().st_mtime_ns for p in index.iterdir()}
    for split in SPLITS:
        order = open_sample_order(None, _run(case, split, index))
        assert not any(source.built for source in order.source.components)
        files = [f for source in order.source.components for f in source.files]
        assert {Path(f).name for f in files} <= set(before)
        _check_windows(case, split, order)
    assert {p.name: p.stat().st_mtime_ns for p in index.iterdir()} == before  # nothing written


def test_provenance_and_doc_details(case: dict, tmp_path: Path) -> None:
    """Records name the dataset and the sample id GPT-NeoX asked of it; doc details refer to
    that dataset's documents (past its end: the sample GPT-NeoX's retry reads)."""
    expected = case["expected"]
    order = open_sample_order(None, _run(case, "train", tmp_path))
    ids = np.r_[np.arange(50), expected["train_extra_ids"]]
    names, sample_ids = order.provenance(ids)
    prefixes = [str(case["folder"] / p) for p in case["config"]["train_data_paths"]]
    assert names.tolist() == [prefixes[k] for k in expected["train_dataset_index"][ids]]
    np.testing.assert_array_equal(sample_ids, expected["train_dataset_sample_index"][ids])
    details = order.doc_details(ids)
    for row in range(0, len(ids), max(len(ids) // 12, 1)):
        k = int(expected["train_dataset_index"][ids[row]])
        read = order._read_ids(k, sample_ids[row : row + 1])
        assert read[0] == sample_ids[row] % len(order.components[k].order) or read[0] == len(
            order.components[k].order
        )
        single = order.components[k].order.doc_details(read)
        assert {key: int(v[row]) for key, v in details.items()} == {
            key: int(v[0]) for key, v in single.items()
        }
