"""``--overwrite`` and friends on the command line never touch what dexport did not write.

DESIGN.md: "``--overwrite`` replaces only an output that dexport wrote (it holds dexport's
manifest or progress marker); an output that equals, contains or lies inside an input is
refused", and exit 2 means "nothing written (or the output untouched)". Every refusal here is
checked the same way: exit 2, exactly one stderr line ``dexport: error: …``, and a byte-for-byte
snapshot of the whole test folder (inputs, a user's ``notes.txt``, empty folders) unchanged.

Commands run in-process (``pipeline.cli.main``) from inside the test folder, with relative
paths, as a user would type them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from corpus_helpers import sample
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401  (session fixture)

from pipeline.cli import main
from pipeline.formats.indexed_dataset import IndexedDatasetBuilder

NOTES = b"my own notes, not dexport's\n"
TOKENS = ["tokens", "data/ds", "--documents", "0:3"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def files_of(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(root).items() if v is not None}


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dexport: error: "), err
    return err[0]


def ok(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err


def refused(argv: list[str], root: Path, capsys: pytest.CaptureFixture[str], match: str) -> str:
    """Run ``argv``: exit 2, one error line matching ``match``, nothing under ``root`` changed."""
    capsys.readouterr()
    before = snapshot(root)
    rc = main(argv)
    line = error_line(capsys)
    assert rc == 2, line
    assert re.search(match, line), line
    assert snapshot(root) == before
    return line


@pytest.fixture(scope="module")
def input_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The input files of every test, made once: a token dataset and a small corpus."""
    root = tmp_path_factory.mktemp("inputs")
    builder = IndexedDatasetBuilder(str(root / "data" / "ds"), np.uint16)
    rng = np.random.default_rng(0)
    for _ in range(12):
        builder.add_document(rng.integers(1, 1000, int(rng.integers(3, 9))))
    builder.finalize()
    sample.generate(str(root / "in"), docs=12, seed=1, mean_words=12)
    return files_of(root)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, input_files: dict[str, bytes]) -> Path:
    """A user's folder: ``data/ds.{bin,idx}``, ``in/classified-0000.jsonl``, ``notes.txt``."""
    for relative, data in {**input_files, "notes.txt": NOTES}.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tok(project: Path, byte_bpe_tokenizer_path: Path) -> str:  # noqa: F811
    """A copy of a real tokenizer folder inside the project (so snapshots cover it)."""
    shutil.copytree(byte_bpe_tokenizer_path, project / "tok")
    return "tok"


def _own_folder(path: str) -> Path:
    """A folder holding only the user's notes.txt."""
    Path(path).mkdir(parents=True)
    (Path(path) / "notes.txt").write_bytes(NOTES)
    return Path(path)


# -- tokens ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("out", "relation"),
    [("data", "contains"), ("data/", "contains"), (".", "contains"), ("data/ds.idx", "is")],
)
@pytest.mark.parametrize("mode", [["--overwrite"], []])
def test_tokens_out_on_its_own_input_is_refused(project, capsys, out, relation, mode) -> None:
    refused(
        [*TOKENS, "--out", out, *mode],
        project,
        capsys,
        rf"--out {re.escape(out)} {relation} the input data/ds\.",
    )


@pytest.mark.parametrize("mode", [["--overwrite"], []])
def test_tokens_out_in_the_tokenizer_folder_is_refused(project, tok, capsys, mode) -> None:
    text = [*TOKENS, "--text", "--tokenizer", tok]
    refused([*text, "--out", "tok/export", *mode], project, capsys, "lies inside the input tok")
    refused([*text, "--out", "tok", *mode], project, capsys, "is the input tok")


def test_tokens_out_on_the_index_folder_is_refused(project, capsys) -> None:
    run = "--seq-len 4 --seed 1 --num-samples 6 --splits 100,0,0 --index idx/run".split()
    ok(["tokens", "data/ds", *run, "--all", "--out", "export"], capsys)  # builds the index cache
    assert any(Path("idx").glob("run_*_idx.npy"))
    refused(
        ["tokens", "data/ds", *run, "--all", "--out", "idx", "--overwrite"],
        project,
        capsys,
        "contains the input idx/run",
    )


def test_tokens_overwrite_refuses_a_folder_of_the_users(project, capsys) -> None:
    _own_folder("out")
    refused(
        [*TOKENS, "--out", "out", "--overwrite"],
        project,
        capsys,
        r"not written by dexport \(it holds notes\.txt\)",
    )
    refused([*TOKENS, "--out", "out"], project, capsys, "already exists")


def test_tokens_overwrite_refuses_a_finished_output_holding_a_users_file(project, capsys) -> None:
    ok([*TOKENS, "--out", "out"], capsys)
    (project / "out" / "notes.txt").write_bytes(NOTES)
    (project / "out" / "mine").mkdir()
    refused(
        [*TOKENS, "--out", "out", "--overwrite"], project, capsys, r"did not write \(notes\.txt\)"
    )


def test_tokens_overwrite_replaces_its_own_output(project, capsys) -> None:
    ok([*TOKENS, "--out", "out", "--chunk-size", "1"], capsys)
    first = files_of(project / "out")
    parts = [f"part-0000{i}.jsonl" for i in range(3)]
    assert sorted(first) == ["README.md", "_manifest.json", *parts]
    refused(
        [*TOKENS, "--out", "out", "--chunk-size", "1"],
        project,
        capsys,
        "out already exists.*--overwrite",
    )
    ok([*TOKENS, "--out", "out", "--chunk-size", "1", "--overwrite"], capsys)
    assert files_of(project / "out") == first
    ok([*TOKENS, "--out", "out", "--overwrite"], capsys)  # one part now: the old ones are gone
    assert sorted(files_of(project / "out")) == ["README.md", "_manifest.json", "part-00000.jsonl"]
    assert (project / "notes.txt").read_bytes() == NOTES


def test_tokens_single_file_is_replaced_only_with_overwrite(project, capsys) -> None:
    ok([*TOKENS, "--out", "x.jsonl"], capsys)
    first = (project / "x.jsonl").read_bytes()
    assert len(first.splitlines()) == 3
    refused(
        [*TOKENS, "--out", "x.jsonl"], project, capsys, "x.jsonl already exists; pass --overwrite"
    )
    before = snapshot(project)
    ok([*TOKENS, "--out", "x.jsonl", "--overwrite"], capsys)
    assert snapshot(project) == before  # same bytes, no staging folder left


@pytest.mark.parametrize("mode", [["--overwrite"], []])
def test_tokens_single_file_naming_a_users_folder_is_refused(project, capsys, mode) -> None:
    _own_folder("f.jsonl")
    refused([*TOKENS, "--out", "f.jsonl", *mode], project, capsys, "f.jsonl is a folder")


@pytest.mark.parametrize("mode", [["--overwrite"], []])
def test_tokens_single_file_naming_an_empty_folder_is_refused(project, capsys, mode) -> None:
    Path("e.jsonl").mkdir()
    refused([*TOKENS, "--out", "e.jsonl", *mode], project, capsys, "e.jsonl is a folder")


def _foreign_file(name: str) -> None:
    """A user's file named ``name``: readable as its format, but not a dexport export."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    if name.endswith(".parquet"):
        pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), name)
    elif name.endswith(".npz"):
        np.savez(name, index=np.arange(3), metadata=np.array('{"tool": "mine"}'))
    elif name.endswith(".jsonl.gz"):
        Path(name).write_bytes(gzip.compress(b'{"id": 0, "content": [1, 2]}\n', mtime=0))
    elif name.endswith(".csv"):
        Path(name).write_bytes(b"index,text\r\n0,hello\r\n")
    else:
        Path(name).write_bytes(NOTES)


USER_FILES = ["u.jsonl", "u.jsonl.gz", "u.csv", "u.parquet", "u.npz", "v.parquet", "v.npz"]


@pytest.mark.parametrize("name", USER_FILES)
def test_tokens_single_file_of_the_users_is_never_replaced(project, capsys, name) -> None:
    if name.startswith("u."):
        _foreign_file(name)  # the right format, another tool's fields
    else:
        Path(name).write_bytes(NOTES)  # not even the format
    stem = re.escape(name)
    for mode in ("--overwrite", "--resume"):
        refused(
            [*TOKENS, "--out", name, mode],
            project,
            capsys,
            rf"^dexport: error: {mode} refused: {stem} was not written by dexport; "
            "remove it yourself or pick another --out$",
        )
    line = refused([*TOKENS, "--out", name], project, capsys, rf"{stem} already exists")
    assert "--overwrite" not in line and "pick another --out" in line


@pytest.mark.parametrize(
    "name", ["x.jsonl", "x.jsonl.zst", "x.csv.gz", "x.parquet", "x.npz", "nested.parquet"]
)
def test_tokens_overwrite_replaces_its_own_single_file(project, capsys, name) -> None:
    argv = [*TOKENS, "--out", name]
    if name.startswith("nested"):
        argv = ["tokens", "data/ds", "--seq-len", "4", "--seed", "1", "--num-samples", "8"]
        argv += ["--batch-size", "2", "--batches", "0,1", "--nested", "--out", name]
    ok(argv, capsys)
    before = snapshot(project)
    ok([*argv, "--overwrite"], capsys)
    assert snapshot(project) == before  # replaced by the same bytes, no staging folder left
    refused(
        [*argv, "--resume"],
        project,
        capsys,
        rf"{re.escape(name)} is a finished dexport export .*pass --overwrite",
    )


def test_tokens_summary_rate_counts_only_this_runs_work(project, capsys) -> None:
    from pipeline.commands.tokens import print_summary

    ok([*TOKENS, "--out", "out"], capsys)
    rc = main([*TOKENS, "--out", "out", "--resume"])  # finished: nothing exported by this run
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "tokens/s" not in err and re.search(r"^tokens +\d", err, re.M), err
    summary = {"records": 3, "tokens": 18, "files": 1, "bytes": 9, "seconds": 0.5, "out": "o"}
    print_summary({**summary, "tokens_per_s": 36})
    assert re.search(r"^tokens/s +36$", capsys.readouterr().err, re.M)


# -- circular hints: every "what to do" names a way out that works -----------------------------
def test_tokens_resume_on_a_users_folder_says_to_pick_another_out(project, capsys) -> None:
    _own_folder("out")
    line = refused([*TOKENS, "--out", "out", "--resume"], project, capsys, "no interrupted")
    assert "--overwrite" not in line and "pick another --out" in line


# -- corpus ------------------------------------------------------------------------------------
CORPUS_IN = "in/classified-0000.jsonl"


@pytest.mark.parametrize("mode", [[], ["--resume"], ["--incremental"]])
def test_corpus_hints_on_a_users_folder_say_to_pick_another_out(project, capsys, mode) -> None:
    _own_folder("out")
    line = refused(["corpus", CORPUS_IN, "--out", "out", *mode], project, capsys, "out")
    assert "--overwrite" not in line and "--rebuild" not in line, line
    assert "pick another --out" in line
    if mode == ["--incremental"]:
        refused(
            ["corpus", CORPUS_IN, "--out", "out", "--incremental", "--rebuild"],
            project,
            capsys,
            r"--rebuild refused: out was not written by dexport",
        )


def test_corpus_incremental_on_its_own_plain_output_hints_rebuild(project, capsys) -> None:
    ok(["corpus", CORPUS_IN, "--out", "out", "--no-card"], capsys)
    refused(
        ["corpus", CORPUS_IN, "--out", "out", "--incremental", "--no-card"],
        project,
        capsys,
        "not written with --incremental; pass --rebuild",
    )
    ok(["corpus", CORPUS_IN, "--out", "out", "--incremental", "--rebuild", "--no-card"], capsys)


@pytest.mark.parametrize(
    ("inputs", "out", "match"),
    [
        ([CORPUS_IN], "in", "--out in contains the input in/classified-0000.jsonl"),
        (["in"], "in", "--out in is the input in"),
        (["in/"], ".", "--out . contains the input in/"),
        (["in/*.jsonl"], "in", "input .*in/classified-0000.jsonl lies inside the output in"),
    ],
)
def test_corpus_overwrite_on_its_own_input_is_refused(project, capsys, inputs, out, match) -> None:
    refused(["corpus", *inputs, "--out", out, "--overwrite", "--no-card"], project, capsys, match)


@pytest.mark.parametrize("out", ["in/export", "in/a/b"])
@pytest.mark.parametrize("mode", [["--overwrite"], []])
def test_corpus_out_inside_its_input_folder_is_refused(project, capsys, out, mode) -> None:
    refused(
        ["corpus", "in", "--out", out, *mode],
        project,
        capsys,
        f"--out {out} lies inside the input in",
    )


def test_corpus_out_inside_its_tokenizer_folder_is_refused(project, tok, capsys) -> None:
    argv = ["corpus", CORPUS_IN, "--tokenizer", tok, "--out", "tok/stats", "--overwrite"]
    refused(argv, project, capsys, "lies inside the input tok")


def test_corpus_overwrite_refuses_folders_with_a_users_files(project, capsys) -> None:
    _own_folder("out")
    refused(
        ["corpus", CORPUS_IN, "--out", "out", "--overwrite"],
        project,
        capsys,
        "not written by dexport",
    )
    refused(["corpus", CORPUS_IN, "--out", "out"], project, capsys, "already exists")
    ok(["corpus", CORPUS_IN, "--out", "done", "--no-card"], capsys)
    (project / "done" / "notes.txt").write_bytes(NOTES)
    refused(
        ["corpus", CORPUS_IN, "--out", "done", "--overwrite", "--no-card"],
        project,
        capsys,
        r"did not write \(notes\.txt\)",
    )


def test_corpus_overwrite_replaces_its_own_output(project, capsys) -> None:
    ok(["corpus", CORPUS_IN, "--out", "out"], capsys)  # with the dataset card and its images
    first = files_of(project / "out")
    assert {"README.md", "_manifest.json", "dataset_stats.json", "train.jsonl"} <= set(first)
    assert any(name.startswith("card/") for name in first)
    refused(
        ["corpus", CORPUS_IN, "--out", "out"], project, capsys, "out already exists.*--overwrite"
    )
    ok(["corpus", CORPUS_IN, "--out", "out", "--overwrite"], capsys)
    assert files_of(project / "out") == first


# -- encode ------------------------------------------------------------------------------------
def test_encode_out_prefix_inside_its_inputs_is_refused(project, tok, capsys) -> None:
    encode = ["encode", "--tokenizer", tok]
    for mode in (["--overwrite"], []):
        refused(
            [*encode, "in", "--out", "in/ds", *mode],
            project,
            capsys,
            "--out in/ds.bin lies inside the input in",
        )
        refused(
            [*encode, CORPUS_IN, "--out", "tok/ds", *mode],
            project,
            capsys,
            "lies inside the input tok",
        )
        refused(
            [*encode, "in", "--out", "in/sub/ds", *mode],
            project,
            capsys,
            "lies inside the input in",
        )


def test_encode_overwrite_refuses_a_dataset_dexport_did_not_write(project, tok, capsys) -> None:
    encode = ["encode", CORPUS_IN, "--tokenizer", tok, "--out", "o/ds"]
    Path("o").mkdir()
    Path("o/ds.bin").write_bytes(b"someone else's tokens")
    refused([*encode, "--overwrite"], project, capsys, r"ds\.bin was not written by dexport encode")
    refused(encode, project, capsys, r"already exists \(ds\.bin\)")
    Path("o/ds.bin").unlink()
    _own_folder("o/ds.shards")
    refused([*encode, "--overwrite"], project, capsys, "not written by dexport")


@pytest.mark.parametrize(
    "mode", [[], ["--resume"], ["--incremental"], ["--incremental", "--rebuild"]]
)
def test_encode_on_a_users_prefix_says_to_pick_another_out(project, tok, capsys, mode) -> None:
    Path("o").mkdir()
    Path("o/ds.bin").write_bytes(b"someone else's tokens")
    encode = ["encode", CORPUS_IN, "--tokenizer", tok, "--out", "o/ds", *mode]
    line = refused(encode, project, capsys, r"ds\.bin was not written by dexport encode")
    assert "--overwrite" not in line and "--rebuild" not in line, line
    assert "pick another --out" in line


@pytest.mark.parametrize("mode", [[], ["--resume"], ["--incremental"]])
def test_encode_npz_on_a_users_folder_says_to_pick_another_out(project, tok, capsys, mode) -> None:
    _own_folder("mine")
    encode = ["encode", CORPUS_IN, "--tokenizer", tok, "--format", "npz", "--out", "mine", *mode]
    line = refused(encode, project, capsys, "mine")
    assert "--overwrite" not in line and "--rebuild" not in line, line
    assert "pick another --out" in line


def test_encode_overwrite_replaces_its_own_dataset_and_nothing_beside_it(
    project, tok, capsys
) -> None:
    encode = ["encode", CORPUS_IN, "--tokenizer", tok, "--out", "o/ds", "--append-eod"]
    ok(encode, capsys)
    first = files_of(project / "o")
    assert sorted(first) == ["ds.bin", "ds.idx", "ds.manifest.json"]
    refused(encode, project, capsys, r"already exists \(ds\.bin\)")
    (project / "o" / "notes.txt").write_bytes(NOTES)  # beside the prefix: not part of it
    ok([*encode, "--overwrite"], capsys)
    assert files_of(project / "o") == {**first, "notes.txt": NOTES}


@pytest.mark.parametrize(
    ("inputs", "out", "match"),
    [
        ([CORPUS_IN], "in", "--out in contains the input in/classified-0000.jsonl"),
        (["in"], "in", "--out in is the input in"),
        (["in"], "in/npz", "--out in/npz lies inside the input in"),
    ],
)
@pytest.mark.parametrize("mode", [["--overwrite"], []])
def test_encode_npz_out_on_its_own_input_is_refused(
    project, tok, capsys, inputs, out, match, mode
) -> None:
    argv = ["encode", *inputs, "--tokenizer", tok, "--format", "npz", "--out", out, *mode]
    refused(argv, project, capsys, match)


def test_encode_npz_overwrite_refuses_folders_with_a_users_files(project, tok, capsys) -> None:
    encode = ["encode", CORPUS_IN, "--tokenizer", tok, "--format", "npz"]
    _own_folder("mine")
    refused(
        [*encode, "--out", "mine", "--overwrite"],
        project,
        capsys,
        r"not written by dexport \(it holds notes\.txt\)",
    )
    refused([*encode, "--out", "mine"], project, capsys, "already exists")
    ok([*encode, "--out", "n"], capsys)
    (project / "n" / "notes.txt").write_bytes(NOTES)
    refused(
        [*encode, "--out", "n", "--overwrite"], project, capsys, r"did not write \(notes\.txt\)"
    )


def test_encode_npz_overwrite_replaces_its_own_output(project, tok, capsys) -> None:
    encode = ["encode", CORPUS_IN, "--tokenizer", tok, "--format", "npz", "--out", "n"]
    ok(encode, capsys)
    first = files_of(project / "n")
    assert sorted(first) == ["_manifest.json", "part-00000.npz"]
    refused(encode, project, capsys, "already exists.*--overwrite")
    ok([*encode, "--overwrite"], capsys)
    assert files_of(project / "n") == first


def test_encode_npz_overwrite_refuses_an_output_holding_its_globbed_inputs(
    project, tok, capsys
) -> None:
    ok(["corpus", CORPUS_IN, "--out", "c", "--no-card"], capsys)
    argv = ["encode", "c/*.jsonl", "--tokenizer", tok, "--format", "npz", "--out", "c"]
    argv.append("--overwrite")
    refused(argv, project, capsys, "lies inside the output c|contains the input")


# -- demo --------------------------------------------------------------------------------------
def test_demo_refuses_a_folder_it_did_not_make(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("myproject/src").mkdir(parents=True)
    Path("myproject/src/notes.txt").write_bytes(NOTES)
    Path("afile").write_bytes(NOTES)
    refused(
        ["demo", "--out", "myproject"],
        tmp_path,
        capsys,
        "--out myproject is not empty and was not made by dexport demo",
    )
    refused(["demo", "--out", "myproject/src"], tmp_path, capsys, "not made by dexport demo")
    refused(["demo", "--out", "afile"], tmp_path, capsys, "--out afile is a file")


def test_demo_twice_replaces_only_its_own_files(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    ok(["demo", "--out", "fresh"], capsys)
    first = files_of(tmp_path / "fresh")
    assert ".dexport-demo" in first and "export/batches-5-10.jsonl" in first
    (tmp_path / "fresh" / "notes.txt").write_bytes(NOTES)  # the user's, added afterwards
    (tmp_path / "beside.txt").write_bytes(NOTES)
    ok(["demo", "--out", "fresh"], capsys)
    assert files_of(tmp_path / "fresh") == {**first, "notes.txt": NOTES}
    assert (tmp_path / "beside.txt").read_bytes() == NOTES


# -- S3 ----------------------------------------------------------------------------------------
def test_tokens_overwrite_on_s3_replaces_only_dexports_output(
    project, capsys, s3_server, s3_bucket
) -> None:
    options = ["--storage-options", json.dumps(s3_server.storage_options)]
    fs = s3_server.filesystem()
    fs.pipe_file(f"{s3_bucket}/mine/notes.txt", NOTES)
    refused(
        [*TOKENS, "--out", f"{s3_bucket}/mine", "--overwrite", *options],
        project,
        capsys,
        "not written by dexport",
    )
    assert s3_server.object_keys(s3_bucket) == [f"{s3_bucket.removeprefix('s3://')}/mine/notes.txt"]
    ok([*TOKENS, "--out", f"{s3_bucket}/out", "--chunk-size", "1", *options], capsys)
    first = {k: fs.cat_file(k) for k in s3_server.object_keys(f"{s3_bucket}/out")}
    assert len(first) == 5  # 3 parts, the dataset card, the manifest
    ok([*TOKENS, "--out", f"{s3_bucket}/out", "--chunk-size", "1", "--overwrite", *options], capsys)
    assert {k: fs.cat_file(k) for k in s3_server.object_keys(f"{s3_bucket}/out")} == first
    fs.pipe_file(f"{s3_bucket}/out/notes.txt", NOTES)
    refused(
        [*TOKENS, "--out", f"{s3_bucket}/out", "--overwrite", *options],
        project,
        capsys,
        r"did not write \(notes\.txt\)",
    )
    assert fs.cat_file(f"{s3_bucket}/out/notes.txt") == NOTES
    assert len(s3_server.object_keys(f"{s3_bucket}/out")) == 6


def test_tokens_single_file_on_s3_is_replaced_only_when_dexports(
    project, capsys, s3_server, s3_bucket
) -> None:
    options = ["--storage-options", json.dumps(s3_server.storage_options)]
    fs = s3_server.filesystem()
    fs.pipe_file(f"{s3_bucket}/u.parquet", NOTES)
    for mode in ("--overwrite", "--resume"):
        refused(
            [*TOKENS, "--out", f"{s3_bucket}/u.parquet", mode, *options],
            project,
            capsys,
            f"{mode} refused: .*u.parquet was not written by dexport",
        )
    assert fs.cat_file(f"{s3_bucket}/u.parquet") == NOTES
    ok([*TOKENS, "--out", f"{s3_bucket}/x.npz", *options], capsys)
    first = fs.cat_file(f"{s3_bucket}/x.npz")
    ok([*TOKENS, "--out", f"{s3_bucket}/x.npz", "--overwrite", *options], capsys)
    assert fs.cat_file(f"{s3_bucket}/x.npz") == first
