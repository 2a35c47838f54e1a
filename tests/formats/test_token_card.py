"""Every token export folder opens with ``datasets.load_dataset(folder)``.

The folder's ``README.md`` (a dataset card with ``configs: data_files``) points Hugging Face
``datasets`` at the part files, so JSONL (plain or compressed), CSV and Parquet exports load as
one ``train`` split with the exported records, and ``_manifest.json`` is never read as data. NPZ
parts are NumPy-only: ``load_dataset`` stops with an error instead of loading the manifest.
Everything runs offline (``HF_DATASETS_OFFLINE``, a cache under ``tmp_path``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli import main
from pipeline.formats.indexed_dataset import IndexedDatasetBuilder

RUN = ["--seq-len", "8", "--seed", "1", "--num-samples", "40", "--splits", "100,0,0"]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("card")
    rng = np.random.default_rng(2)
    builder = IndexedDatasetBuilder(str(root / "ds"), np.uint16)
    for _ in range(30):
        builder.add_document(rng.integers(0, 3000, int(rng.integers(2, 30))))
    builder.finalize()
    return str(root / "ds")


@pytest.fixture
def load_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()

    def load(folder: Path):
        return datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf"))

    return load


def _export(prefix: str, out: Path, *args: str) -> dict:
    argv = ["tokens", prefix, *RUN, "--index", f"{out.parent}/index/", *args, "--out", str(out)]
    assert main(argv) == 0
    return json.loads((out / "_manifest.json").read_text())


@pytest.mark.parametrize(
    ("args", "columns"),
    [
        (["--all"], {"index", "content"}),
        (["--all", "--compression", "gzip"], {"index", "content"}),
        (["--all", "--compression", "zstd", "--format", "csv"], {"index", "content"}),
        (
            ["--batch-range", "0:3", "--batch-size", "4", "--doc-details", "--format", "csv"],
            {"index", "content", "batch_id", "doc_index_f", "doc_index_l", "offset_f", "offset_l"},
        ),
        (
            ["--batch-range", "0:3", "--batch-size", "4", "--doc-details", "--format", "parquet"],
            {"index", "content", "batch_id", "doc_details"},
        ),
        (["--batches", "2,0", "--batch-size", "4", "--nested"], {"batch_id", "sequences"}),
        (["--documents", "0:30", "--format", "parquet"], {"index", "content"}),
    ],
)
def test_load_dataset_reads_the_parts(prefix, tmp_path, load_dataset, args, columns) -> None:
    out = tmp_path / "export"
    manifest = _export(prefix, out, *args, "--chunk-size", "8")
    parts = [f for f in manifest["files"] if f["path"].startswith("part-")]
    assert len(parts) > 1 or "--nested" in args  # (nested: one part of 2 batches)
    card = next(f for f in manifest["files"] if f["path"] == "README.md")
    assert card["bytes"] == (out / "README.md").stat().st_size  # owned, listed, hashed
    ds = load_dataset(out)
    assert set(ds.column_names) == columns
    assert len(ds) == sum(f["rows"] for f in parts)
    first = ds[0]
    if "sequences" in columns:
        assert first["batch_id"] == 2 and len(first["sequences"]) == 4
    else:
        content = first["content"]
        tokens = json.loads(content) if isinstance(content, str) else content
        assert isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)


def test_card_front_matter_names_the_parts(prefix, tmp_path) -> None:
    out = tmp_path / "export"
    _export(prefix, out, "--all", "--compression", "gzip")
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "part-*.jsonl.gz"}]}
    ]
    assert str(out) not in text and str(Path(prefix).parent) not in text  # no absolute paths


def test_npz_folder_is_numpy_only(prefix, tmp_path, load_dataset) -> None:
    out = tmp_path / "export"
    _export(prefix, out, "--all", "--format", "npz")
    assert "np.load(" in (out / "README.md").read_text()
    with pytest.raises(Exception, match=r"(?i)no \(supported\) data files"):
        load_dataset(out)  # never the manifest as a one-row dataset
    part = np.load(out / "part-00000.npz", allow_pickle=False)
    assert part["tokens"].ndim == 2


def test_single_file_exports_have_no_card(prefix, tmp_path) -> None:
    argv = ["tokens", prefix, *RUN, "--index", f"{tmp_path}/index/", "--all"]
    assert main([*argv, "--out", str(tmp_path / "one.jsonl")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "one.jsonl"]
