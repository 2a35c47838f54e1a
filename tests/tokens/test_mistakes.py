"""Catalogue of user mistakes on the token side (``dexport tokens`` and ``dexport inspect``).

One test per mistake. Each checks what DESIGN promises: the documented exit status (2 for wrong
usage or bad input), exactly one line on stderr that starts with ``dexport: error:`` and says
what to do (or argparse's usage message, exit 2, for a malformed flag), no traceback, and an
output — and an index folder — that is absent or untouched.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.formats.indexed_dataset import HEADER_SIZE, IndexedDatasetBuilder

N_DOCS = 40
RUN = ["--seq-len", "8", "--seed", "1", "--num-samples", "40", "--splits", "100,0,0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a valid uint16 dataset ``ds`` (40 documents)."""
    root = tmp_path_factory.mktemp("mistakes")
    rng = np.random.default_rng(1)
    builder = IndexedDatasetBuilder(str(root / "ds"), np.uint16)
    for _ in range(N_DOCS):
        builder.add_document(rng.integers(0, 3000, int(rng.integers(2, 30))))
    builder.finalize()
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def fails(capsys: pytest.CaptureFixture, argv: list[str], match: str, code: int = 2) -> str:
    """Run ``dexport argv``: exit ``code``, stderr exactly one error line matching ``match``."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == code, captured.err
    assert "Traceback" not in captured.err
    assert len(lines) == 1 and lines[0].startswith("dexport: error: "), captured.err
    assert re.search(match, lines[0]), lines[0]
    assert captured.out == ""  # nothing half-printed on stdout either
    return lines[0]


def run(argv: list) -> int:
    """``dexport argv`` in this process (paths as strings)."""
    return main([str(a) for a in argv])


def usage_error(capsys: pytest.CaptureFixture, argv: list[str], match: str) -> None:
    """A malformed command line: one error line pointing at the command's help, exit 2."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dexport: error: "), err
    assert lines[0].endswith("; see 'dexport tokens --help'"), err
    assert re.search(match, lines[0]), err


def _copy(data: Path, tmp_path: Path) -> Path:
    """A copy of the dataset under ``tmp_path``; returns its prefix."""
    for ext in (".bin", ".idx"):
        (tmp_path / f"ds{ext}").write_bytes((data / f"ds{ext}").read_bytes())
    return tmp_path / "ds"


def _patch_idx(prefix: Path, offset: int, fmt: str, value: int) -> None:
    path = Path(f"{prefix}.idx")
    buf = bytearray(path.read_bytes())
    struct.pack_into(fmt, buf, offset, value)
    path.write_bytes(bytes(buf))


def _tokens(prefix: Path, out: Path, *extra: str) -> list[str]:
    return ["tokens", prefix, "--documents", "0:5", "--out", out, *extra]


# -- corrupt dataset files ---------------------------------------------------------------------
def test_empty_idx(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    Path(f"{prefix}.idx").write_bytes(b"")
    fails(capsys, _tokens(prefix, tmp_path / "out"), r"ds\.idx is empty, too short")
    assert not (tmp_path / "out").exists()


def test_empty_bin(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    Path(f"{prefix}.bin").write_bytes(b"")
    fails(capsys, ["inspect", prefix], r"ds\.bin has 0 bytes but .* describes \d+")


def test_idx_is_a_folder(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    Path(f"{prefix}.idx").unlink()
    Path(f"{prefix}.idx").mkdir()
    fails(capsys, _tokens(prefix, tmp_path / "out"), r"ds\.idx is a folder, not a file")
    assert not (tmp_path / "out").exists()


def test_bin_is_a_folder(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    Path(f"{prefix}.bin").unlink()
    Path(f"{prefix}.bin").mkdir()
    fails(capsys, ["inspect", prefix], r"ds\.bin is a folder, not a file")


@pytest.mark.parametrize("n_seq", [2**47, 2**64 - 1, N_DOCS + 1])
def test_header_count_larger_than_the_file(data, tmp_path, capsys, n_seq) -> None:
    prefix = _copy(data, tmp_path)
    _patch_idx(prefix, 18, "<Q", n_seq)
    fails(capsys, ["inspect", prefix], rf"truncated or corrupt .*counts {n_seq} sequences")


def test_document_count_larger_than_the_file(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    _patch_idx(prefix, 26, "<Q", 2**40)
    fails(capsys, ["inspect", prefix], r"truncated or corrupt")


@pytest.mark.parametrize("code", [0, 6, 7, 9, 255])
def test_wrong_dtype_code(data, tmp_path, capsys, code) -> None:
    prefix = _copy(data, tmp_path)
    _patch_idx(prefix, 17, "<B", code)
    fails(capsys, ["inspect", prefix], rf"dtype code {code}, which is not an integer token type")


def test_bad_magic(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    _patch_idx(prefix, 0, "<B", ord("X"))
    fails(capsys, ["inspect", prefix], r"not a Megatron index file \(bad magic\)")


def test_wrong_version(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    _patch_idx(prefix, 9, "<Q", 2)
    fails(capsys, ["inspect", prefix], r"index version 2, only version 1 is supported")


def test_truncated_idx(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    idx = Path(f"{prefix}.idx")
    idx.write_bytes(idx.read_bytes()[:-9])
    fails(capsys, ["inspect", prefix], r"truncated or corrupt")


def test_idx_shorter_than_its_header(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    idx = Path(f"{prefix}.idx")
    idx.write_bytes(idx.read_bytes()[: HEADER_SIZE - 3])
    fails(capsys, ["inspect", prefix], r"only 31 bytes, too short for a Megatron index header")


def test_bin_longer_than_the_idx_says(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    with open(f"{prefix}.bin", "ab") as handle:
        handle.write(b"\0\0")
    fails(capsys, ["inspect", prefix], r"do not belong together or one is truncated")


def test_offsets_disagree_with_lengths(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    _patch_idx(prefix, HEADER_SIZE + 4 * N_DOCS + 8 * 3, "<q", 7)  # pointers[3]
    fails(capsys, ["inspect", prefix], r"byte offsets disagree with sequence lengths")


def test_negative_sequence_length(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    _patch_idx(prefix, HEADER_SIZE + 4 * 5, "<i", -3)  # sizes[5]
    fails(capsys, ["inspect", prefix], r"index is corrupt.*negative sequence lengths")


def test_document_boundaries_out_of_order(data, tmp_path, capsys) -> None:
    prefix = _copy(data, tmp_path)
    _patch_idx(prefix, HEADER_SIZE + 12 * N_DOCS + 8 * 4, "<q", 10**6)  # doc_idx[4]
    fails(capsys, ["inspect", prefix], r"document boundaries do not run upwards")


# -- paths ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".bin", ".idx"])
def test_prefix_given_with_its_suffix(data, tmp_path, capsys, ext) -> None:
    line = fails(capsys, _tokens(f"{data}/ds{ext}", tmp_path / "out"), rf"without {ext}")
    assert f"({data}/ds)" in line
    assert not (tmp_path / "out").exists()


def test_missing_dataset(tmp_path, capsys) -> None:
    fails(capsys, ["inspect", tmp_path / "nothing"], r"nothing\.idx not found")


def test_out_dash_is_refused_and_no_folder_named_dash(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(capsys, ["tokens", data / "ds", "--documents", "0:2", "--out", "-"], r"--out '-'")
    assert not (tmp_path / "-").exists()


def test_out_inside_the_index_folder(data, tmp_path, capsys) -> None:
    index = tmp_path / "index"
    argv = ["tokens", data / "ds", *RUN, "--index", f"{index}/", "--all"]
    fails(capsys, [*argv, "--out", index / "x"], r"lies inside the input")
    assert _snapshot(index) == {}


def test_existing_output_is_untouched(data, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    fails(capsys, _tokens(data / "ds", out), r"already exists and is not empty.*pick another --out")
    assert _snapshot(out) == {"mine.txt": b"keep"}


# -- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value"),
    [("--seq-len", "eight"), ("--seed", "1.5"), ("--num-samples", "1e3"), ("--chunk-size", "x")],
)
def test_non_numeric_argument(data, tmp_path, capsys, flag, value) -> None:
    argv = ["tokens", data / "ds", *RUN, "--all", "--out", tmp_path / "out", flag, value]
    usage_error(capsys, argv, rf"argument {flag}: invalid int value: '{re.escape(value)}'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["1,x", "one", "2.5"])
def test_non_numeric_sequence_ids(data, tmp_path, capsys, value) -> None:
    argv = ["tokens", data / "ds", *RUN, "--sequences", value, "--out", tmp_path / "out"]
    fails(capsys, argv, r"not a list of integers")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("selection", "match"),
    [
        (["--sequence-range", "0:100000"], r"outside"),
        (["--sequence-range", "9:3"], r"9:3 is empty: the start must be below the end"),
        (["--batches", "5000"], r"out of range"),
        (["--batch-range", "0:999"], r"outside"),
        (["--sequences", "3,99999"], r"99999 is out of range"),
        (["--sequences", "-1"], r"sample -1 is out of range"),
        (["--documents", "0:1000"], r"outside"),
    ],
)
def test_range_out_of_bounds(data, tmp_path, capsys, selection, match) -> None:
    index = tmp_path / "index"
    argv = ["tokens", data / "ds", *RUN, "--batch-size", "4", "--index", f"{index}/"]
    fails(capsys, [*argv, *selection, "--out", tmp_path / "out"], match)
    assert not (tmp_path / "out").exists()
    assert _snapshot(index) == {}  # the order was built but, refused, not saved


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--seq-len", "0"], r"--seq-len must be a positive integer"),
        (["--seq-len", "-8"], r"--seq-len must be a positive integer"),
        (["--num-samples", "0"], r"--num-samples must be positive"),
        (["--chunk-size", "0"], r"--chunk-size must be positive"),
        (["--seed", "-1"], r"seed must be an integer 0\.\."),
    ],
)
def test_zero_or_negative_value(data, tmp_path, capsys, args, match) -> None:
    argv = ["tokens", data / "ds", *RUN, *args, "--all", "--out", tmp_path / "out"]
    fails(capsys, argv, match)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--train-iters", "5", "--batch-size", "-3"], r"--batch-size must be a positive integer"),
        (["--train-iters", "0", "--batch-size", "4"], r"--train-iters must be a positive integer"),
    ],
)
def test_training_run_counts_must_be_positive(data, tmp_path, capsys, args, match) -> None:
    argv = ["tokens", data / "ds", "--seq-len", "8", "--seed", "1", *args, "--all"]
    fails(capsys, [*argv, "--out", tmp_path / "out"], match)
    assert not (tmp_path / "out").exists()


def test_seed_missing(data, tmp_path, capsys) -> None:
    argv = ["tokens", data / "ds", "--seq-len", "8", "--num-samples", "40", "--all"]
    fails(capsys, [*argv, "--out", tmp_path / "out"], r"needs the run's data seed; pass --seed")
    assert not (tmp_path / "out").exists()


def test_training_order_selection_without_a_run(data, tmp_path, capsys) -> None:
    argv = ["tokens", data / "ds", "--all", "--out", tmp_path / "out"]
    fails(capsys, argv, r"training-order selection needs --seq-len and --seed")


def test_train_iters_without_batch_size(data, tmp_path, capsys) -> None:
    argv = ["tokens", data / "ds", "--seq-len", "8", "--seed", "1", "--train-iters", "5", "--all"]
    fails(capsys, [*argv, "--out", tmp_path / "out"], r"--train-iters needs --batch-size")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([*RUN, "--out", "o"], r"one of the arguments --all .* is required"),
        ([*RUN, "--all", "--batches", "1", "--out", "o"], r"not allowed with argument"),
        ([*RUN, "--all", "--packing", "unpacked", "--out", "o"], r"invalid choice: 'unpacked'"),
        ([*RUN, "--all", "--split", "dev", "--out", "o"], r"invalid choice: 'dev'"),
        ([*RUN, "--all", "--format", "txt", "--out", "o"], r"invalid choice: 'txt'"),
    ],
)
def test_unknown_selection_combination_or_choice(data, tmp_path, capsys, argv, match) -> None:
    usage_error(capsys, ["tokens", data / "ds", *argv], match)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--all", "--nested"], r"--nested applies to batch selections"),
        (["--all", "--text"], r"--text needs --tokenizer"),
        (["--all", "--format", "npz", "--compression", "gzip"], r"--compression applies to"),
        (["--all", "--convention", "megatron", "--packing", "pack_until_overflow"], r"packing"),
        (["--all", "--format", "csv", "--out", "x.jsonl"], r"--format csv disagrees"),
    ],
)
def test_flags_that_do_not_go_together(data, tmp_path, capsys, monkeypatch, args, match) -> None:
    monkeypatch.chdir(tmp_path)
    out = [] if "--out" in args else ["--out", "o"]
    fails(capsys, ["tokens", data / "ds", *RUN, *args, *out], match)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ("{not json", r"--storage-options is not valid JSON"),
        ('["anon"]', r"--storage-options must be a JSON object"),
    ],
)
def test_bad_storage_options(data, tmp_path, capsys, options, match) -> None:
    argv = _tokens(data / "ds", tmp_path / "out", "--storage-options", options)
    fails(capsys, argv, match)
    assert not (tmp_path / "out").exists()


def test_sample_count_too_large_to_build(data, tmp_path, capsys) -> None:
    index = tmp_path / "index"
    run = ["--seq-len", "8", "--seed", "1", "--num-samples", str(10**15), "--splits", "100,0,0"]
    argv = ["inspect", data / "ds", *run, "--index", f"{index}/"]
    fails(capsys, argv, r"building the GPT-NeoX order needs about [\d,.]+ GiB of memory")
    assert _snapshot(index) == {}


# -- the training order: loaded, built, or refused ---------------------------------------------
@pytest.mark.parametrize("convention", ["neox", "megatron"])
def test_index_for_other_parameters_names_the_closest(data, tmp_path, capsys, convention):
    index = tmp_path / "index"
    base = ["--convention", convention, "--index", f"{index}/"]
    assert run(["inspect", data / "ds", *RUN, *base]) == 0
    built = capsys.readouterr().err
    assert "training order built as" in built and f"saved to {index}" in built
    before = _snapshot(index)
    assert run(["inspect", data / "ds", *RUN, *base]) == 0
    assert "training order loaded from" in capsys.readouterr().err
    other = [a if a != "8" else "16" for a in RUN]  # --seq-len 16: not the run's
    out = tmp_path / "out"
    line = fails(capsys, ["tokens", data / "ds", *other, *base, "--all", "--out", out], "closest")
    assert "seq_len=8 (not 16)" in line and "--build-index" in line
    assert _snapshot(index) == before and not out.exists()
    # --build-index builds it anyway, and says where it saved it
    assert run(["tokens", data / "ds", *other, *base, "--all", "--out", out, "--build-index"]) == 0
    err = capsys.readouterr().err
    name = "GPT-NeoX" if convention == "neox" else "megatron-core"
    assert f"training order built as {name}" in err
    assert len(_snapshot(index)) > len(before)


def test_inspect_document_out_of_range(data, capsys) -> None:
    fails(capsys, ["inspect", data / "ds", "--document", str(N_DOCS)], r"document 40 is out of")


def test_inspect_batch_without_batch_size(data, capsys) -> None:
    fails(capsys, ["inspect", data / "ds", *RUN, "--batch", "0"], r"--batch needs --batch-size")


def test_inspect_batch_out_of_range(data, tmp_path, capsys) -> None:
    index = tmp_path / "index"
    argv = ["inspect", data / "ds", *RUN, "--batch-size", "4", "--index", f"{index}/"]
    fails(capsys, [*argv, "--batch", "1000"], r"batch 1000 is out of range: \d+ samples make")
    assert _snapshot(index) == {}


def test_inspect_sequence_without_training_run(data, capsys) -> None:
    fails(capsys, ["inspect", data / "ds", "--sequence", "1"], r"need the training run")


def test_inspect_into_a_closed_pipe_exits_quietly(data, tmp_path) -> None:
    import subprocess
    import sys

    argv = [sys.executable, "-m", "pipeline", "inspect", str(data / "ds"), *RUN]
    argv += ["--batch-size", "40", "--batch", "0", "--index", f"{tmp_path}/"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(20)
    proc.stdout.close()  # like `| head -c 20`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err and "Error" not in err


def test_documents_export_folder_is_a_dataset_card_owner(data, tmp_path, capsys) -> None:
    """Not a mistake: --overwrite replaces an export with its card (the card is dexport's)."""
    out = tmp_path / "out"
    assert run(_tokens(data / "ds", out)) == 0
    assert run(_tokens(data / "ds", out, "--overwrite")) == 0
    capsys.readouterr()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["README.md", "part-00000.jsonl"]


def test_a_prefix_whose_name_is_not_utf8(data, tmp_path, capsys) -> None:
    """A file name of other bytes (Python carries it as lone surrogates) cannot be recorded in
    the UTF-8 JSON of manifests and progress records: one line, exit 2, nothing written."""
    import os

    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffname")
    for ext in (".bin", ".idx"):
        (Path(odd + ext)).write_bytes((data / f"ds{ext}").read_bytes())
    out = tmp_path / "out"
    fails(capsys, ["tokens", odd, "--documents", "0:3", "--out", out], r"not valid UTF-8.*rename")
    assert not out.exists()
