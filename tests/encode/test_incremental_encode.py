"""Incremental encode (``--incremental``): new input files are appended as a new generation and
the grown ``.bin``/``.idx`` equal a from-scratch encode of the same files, byte for byte; old
document ids never change; a re-run with nothing new writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401  (session fixture)

from pipeline.cli import main
from pipeline.formats.indexed_dataset import IndexedDataset


def write_day(folder: Path, day: int, docs: int = 40, blank_text: int = 0) -> Path:
    path = folder / f"2026-02-{day:02d}.jsonl"
    rows = [
        {"text": f"day {day} text {i} " + "tokens and words " * (1 + i % 9)} for i in range(docs)
    ]
    rows += [{"text": "   "}] * blank_text
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def encode(inputs: Path, out: Path, tokenizer: Path, *extra: str) -> int:
    return main(
        [
            "encode",
            str(inputs),
            "--tokenizer",
            str(tokenizer),
            "--out",
            str(out),
            "--partition-size",
            "2KiB",
            "--append-eod",
            *extra,
        ]
    )


def files_of(prefix: Path) -> dict[str, bytes]:
    return {
        s: prefix.with_name(prefix.name + s).read_bytes()
        for s in (".bin", ".idx", ".rejects.jsonl")
        if prefix.with_name(prefix.name + s).exists()
    }


def test_incremental_encode_equals_from_scratch(
    tmp_path: Path,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
    capsys,
) -> None:
    days = tmp_path / "in"
    days.mkdir()
    write_day(days, 1, blank_text=1)
    write_day(days, 2)
    ds = tmp_path / "out" / "ds"
    assert encode(days, ds, byte_bpe_tokenizer_path, "--incremental") == 0
    first = IndexedDataset(str(ds))
    old_docs = [first.sequence(i) for i in range(len(first))]
    before = files_of(ds)
    manifest_before = ds.with_name("ds.manifest.json").read_bytes()
    capsys.readouterr()

    assert encode(days, ds, byte_bpe_tokenizer_path, "--incremental") == 0
    assert "is up to date" in capsys.readouterr().err
    assert files_of(ds) == before
    assert ds.with_name("ds.manifest.json").read_bytes() == manifest_before

    write_day(days, 3, blank_text=2)
    write_day(days, 4)
    report = tmp_path / "report.json"
    assert encode(days, ds, byte_bpe_tokenizer_path, "--incremental", "--report", str(report)) == 0
    step = json.loads(report.read_text())["steps"][0]
    assert (step["generation"], step["records_in"], step["records_out"]) == (1, 82, 80)

    full = tmp_path / "full" / "ds"
    assert encode(days, full, byte_bpe_tokenizer_path) == 0
    assert files_of(ds) == files_of(full)  # .bin, .idx and rejects, byte for byte
    grown = IndexedDataset(str(ds))
    assert len(grown) == 160
    for i, doc in enumerate(old_docs):  # old document ids keep their documents
        assert np.array_equal(grown.sequence(i), doc)
    manifest = json.loads(ds.with_name("ds.manifest.json").read_text())
    reference = json.loads(full.with_name("ds.manifest.json").read_text())
    assert manifest["totals"] == reference["totals"]
    assert manifest["shards"] == reference["shards"]
    assert [len(g["inputs"]) for g in manifest["incremental"]["generations"]] == [2, 2]
    assert not ds.with_name("ds.shards").exists()


def test_incremental_encode_refuses_changes_and_rebuilds(
    tmp_path: Path,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
    capsys,
) -> None:
    days = tmp_path / "in"
    days.mkdir()
    write_day(days, 1)
    ds = tmp_path / "ds"
    assert encode(days, ds, byte_bpe_tokenizer_path, "--incremental") == 0
    before = files_of(ds)
    capsys.readouterr()
    write_day(days, 1, docs=41)
    assert encode(days, ds, byte_bpe_tokenizer_path, "--incremental") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed" in err[0] and "--rebuild" in err[0], err
    assert files_of(ds) == before
    assert encode(days, ds, byte_bpe_tokenizer_path, "--incremental", "--rebuild") == 0
    assert len(IndexedDataset(str(ds))) == 41

    plain = tmp_path / "plain"
    assert encode(days, plain, byte_bpe_tokenizer_path) == 0
    capsys.readouterr()
    assert encode(days, plain, byte_bpe_tokenizer_path, "--incremental") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not written with --incremental" in err[0], err


def test_python_api_incremental_encode(tmp_path: Path, byte_bpe_tokenizer_path: Path) -> None:  # noqa: F811
    from pipeline import encode_corpus

    days = tmp_path / "in"
    days.mkdir()
    write_day(days, 1)
    out = tmp_path / "ds"
    args = {"tokenizer": str(byte_bpe_tokenizer_path), "incremental": True}
    assert encode_corpus(str(days), str(out), **args)["documents"] == 40
    assert encode_corpus(str(days), str(out), **args)["up_to_date"]
    write_day(days, 2)
    summary = encode_corpus(str(days), str(out), **args)
    assert summary["generation"] == 1 and summary["documents"] == 80


@pytest.mark.parametrize("fmt", ["npz"])
def test_incremental_npz_adds_shards(
    tmp_path: Path,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
    fmt: str,
) -> None:
    days = tmp_path / "in"
    days.mkdir()
    write_day(days, 1)
    out = tmp_path / "npz"
    assert encode(days, out, byte_bpe_tokenizer_path, "--incremental", "--format", fmt) == 0
    write_day(days, 2)
    assert encode(days, out, byte_bpe_tokenizer_path, "--incremental", "--format", fmt) == 0
    full = tmp_path / "full"
    assert encode(days, full, byte_bpe_tokenizer_path, "--format", fmt) == 0
    names = sorted(p.name for p in full.iterdir() if p.name != "_manifest.json")
    assert sorted(p.name for p in out.iterdir() if p.name != "_manifest.json") == names
    for name in names:
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
