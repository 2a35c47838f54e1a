"""Token export end to end on a real 2-worker cluster: every selection × format, exactness
against the sample order and ``tokenizer.decode``, determinism, S3, resume, and the cases where
TokenSmith fails."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401
from transformers import AutoTokenizer

from pipeline.cli import main
from pipeline.formats.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
from pipeline.runtime.executor import LocalExecutor
from pipeline.tokens.job import TokenExport, run_token_export
from pipeline.tokens.source import TrainingRun, open_sample_order

SEQ_LEN, SEED, ITERS, BATCH = 32, 7, 20, 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, byte_bpe_tokenizer_path) -> tuple[str, str]:  # noqa: F811
    """A Megatron dataset of real text tokenized with the byte-level BPE (+ EOD)."""
    root = tmp_path_factory.mktemp("tokens")
    tok = AutoTokenizer.from_pretrained(byte_bpe_tokenizer_path)
    prefix = str(root / "ds")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    for ids in tok(multilingual_text(400, seed=3), add_special_tokens=False)["input_ids"]:
        builder.add_document(np.asarray([*ids, tok.eos_token_id]))
    builder.finalize()
    return prefix, str(byte_bpe_tokenizer_path)


def _run(prefix: str, **kw) -> TrainingRun:
    return TrainingRun(
        seq_len=SEQ_LEN, seed=SEED, train_iters=ITERS, batch_size=BATCH, splits="100,0,0", **kw
    )


def _reference(prefix: str, ids) -> np.ndarray:
    ds = IndexedDataset(prefix)
    order = open_sample_order(ds, _run(prefix))
    return order.windows(ds, np.asarray(ids))


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        return [orjson.loads(line) for line in fh]


def _parts(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith("part-"))


SELECTIONS = [
    ("sequences", [3, 5, 7, 0], [3, 5, 7, 0]),
    ("sequence_range", (10, 45), list(range(10, 45))),
    ("batches", [2, 0], [*range(16, 24), *range(0, 8)]),
    ("batch_range", (1, 4), list(range(8, 32))),
]


@pytest.mark.parametrize("kind,value,ids", SELECTIONS)
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "npz", "parquet"])
def test_tokens_every_selection_and_format(dataset, dask_client, tmp_path, kind, value, ids, fmt):
    prefix, _ = dataset
    spec = TokenExport(
        prefix=prefix,
        out=str(tmp_path / "out"),
        selection_kind=kind,
        selection_value=value,
        run=_run(prefix),
        doc_details=True,
        format=fmt,
        chunk_size=16,
    )
    summary = run_token_export(spec, dask_client, progress=False)
    expected = _reference(prefix, ids)
    got_ids, got_tokens, got_batch = [], [], []
    for part in _parts(tmp_path / "out"):
        if fmt == "jsonl":
            for r in _read_jsonl(part):
                got_ids.append(r["index"])
                got_tokens.append(r["content"])
                got_batch.append(r.get("batch_id"))
                assert set(r["doc_details"]) == {
                    "doc_index_f",
                    "doc_index_l",
                    "offset_f",
                    "offset_l",
                }
        elif fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(part.read_text(), newline="")))
            for r in rows:
                got_ids.append(int(r["index"]))
                got_tokens.append(json.loads(r["content"]))
                got_batch.append(int(r["batch_id"]) if "batch_id" in r else None)
            assert part.read_bytes().split(b"\r\n")[1].split(b",", 1)[1].startswith(b'"[')
        elif fmt == "npz":
            z = np.load(part, allow_pickle=False)
            got_ids += z["index"].tolist()
            got_tokens += z["tokens"].tolist()
            got_batch += z["batch_id"].tolist() if "batch_id" in z else [None] * len(z["index"])
            assert z["metadata"].ndim == 0 and json.loads(z["metadata"].item())["tool"] == "dexport"
        else:
            t = pq.read_table(part).to_pylist()
            got_ids += [r["index"] for r in t]
            got_tokens += [r["content"] for r in t]
            got_batch += [r.get("batch_id") for r in t]
    assert got_ids == ids  # the true sample ids, in the order asked
    assert np.array_equal(np.asarray(got_tokens), expected)
    if kind.startswith("batch"):
        assert got_batch == [i // BATCH for i in ids]
    assert summary["records"] == len(ids)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    parts = [p.name for p in _parts(tmp_path / "out")]
    assert [f["path"] for f in manifest["files"]] == ["README.md", *parts]  # + the dataset card
    assert sum(f["rows"] for f in manifest["files"]) == len(ids)


def test_text_equals_tokenizer_decode(dataset, dask_client, tmp_path):
    prefix, tok_path = dataset
    tok = AutoTokenizer.from_pretrained(tok_path)
    spec = TokenExport(
        prefix=prefix,
        out=str(tmp_path / "t.jsonl"),
        selection_kind="all",
        run=_run(prefix),
        content="text",
        tokenizer=tok_path,
        chunk_size=64,
    )
    run_token_export(spec, dask_client, progress=False)
    records = _read_jsonl(tmp_path / "t.jsonl")
    windows = _reference(prefix, [r["index"] for r in records])
    assert len(records) == len(windows) > 100
    for r, w in zip(records, windows, strict=True):
        assert r["content"] == tok.decode(w.tolist())


def test_csv_text_quoting_matches_csv_module(dataset, dask_client, tmp_path):
    prefix, tok_path = dataset
    tok = AutoTokenizer.from_pretrained(tok_path)
    spec = TokenExport(
        prefix=prefix,
        out=str(tmp_path / "t.csv"),
        selection_kind="sequence_range",
        selection_value=(0, 40),
        run=_run(prefix),
        content="text",
        tokenizer=tok_path,
        chunk_size=16,
    )
    run_token_export(spec, dask_client, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "t.csv", newline="", encoding="utf-8")))
    windows = _reference(prefix, range(40))
    assert [r["content"] for r in rows] == [tok.decode(w.tolist()) for w in windows]


def test_nested_batches_jsonl_and_parquet(dataset, dask_client, tmp_path):
    prefix, _ = dataset
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / f"n.{fmt}"
        spec = TokenExport(
            prefix=prefix,
            out=str(out),
            selection_kind="batch_range",
            selection_value=(0, 3),
            run=_run(prefix),
            nested=True,
            chunk_size=16,
        )
        run_token_export(spec, dask_client, progress=False)
        rows = _read_jsonl(out) if fmt == "jsonl" else pq.read_table(out).to_pylist()
        assert [r["batch_id"] for r in rows] == [0, 1, 2]
        assert [[s["index"] for s in r["sequences"]] for r in rows] == [
            list(range(b * BATCH, (b + 1) * BATCH)) for b in range(3)
        ]


def test_documents_round_trip_text(dataset, dask_client, tmp_path):
    prefix, tok_path = dataset
    tok = AutoTokenizer.from_pretrained(tok_path)
    spec = TokenExport(
        prefix=prefix,
        out=str(tmp_path / "docs"),
        selection_kind="documents",
        selection_value=(0, 50),
        content="text",
        tokenizer=tok_path,
        chunk_size=20,
    )
    run_token_export(spec, dask_client, progress=False)
    records = [r for p in _parts(tmp_path / "docs") for r in _read_jsonl(p)]
    texts = multilingual_text(400, seed=3)[:50]
    assert [r["index"] for r in records] == list(range(50))
    assert [r["content"] for r in records] == [t + tok.eos_token for t in texts]


def test_same_bytes_with_one_and_two_workers_and_compression(
    dataset, dask_client, dask_client_1worker, tmp_path
):
    prefix, tok_path = dataset
    outs = []
    for name, client in (("two", dask_client), ("one", dask_client_1worker)):
        spec = TokenExport(
            prefix=prefix,
            out=str(tmp_path / name),
            selection_kind="all",
            run=_run(prefix),
            content="text",
            tokenizer=tok_path,
            doc_details=True,
            compression="gzip",
            chunk_size=25,
        )
        run_token_export(spec, client, progress=False)
        outs.append({p.name: p.read_bytes() for p in (tmp_path / name).iterdir()})
    assert outs[0] == outs[1]
    assert len(outs[0]) > 3


def test_single_file_equals_parts_joined(dataset, dask_client, tmp_path):
    prefix, _ = dataset
    for fmt in ("jsonl", "csv", "npz", "parquet"):
        common = dict(
            prefix=prefix,
            selection_kind="sequence_range",
            selection_value=(0, 70),
            run=_run(prefix),
            doc_details=True,
            chunk_size=16,
        )
        run_token_export(
            TokenExport(out=str(tmp_path / f"one.{fmt}"), **common), dask_client, progress=False
        )
        run_token_export(
            TokenExport(out=str(tmp_path / f"dir-{fmt}"), format=fmt, **common),
            dask_client,
            progress=False,
        )
        assert not (tmp_path / f"one.{fmt}.dexport-parts").exists()
        if fmt == "npz":
            one = np.load(tmp_path / "one.npz", allow_pickle=False)
            assert one["tokens"].shape == (70, SEQ_LEN + 1)
            assert np.array_equal(one["tokens"], _reference(prefix, range(70)))
            assert one["index"].tolist() == list(range(70))
        elif fmt == "parquet":
            assert pq.read_table(tmp_path / "one.parquet").to_pylist() == [
                r for p in _parts(tmp_path / "dir-parquet") for r in pq.read_table(p).to_pylist()
            ]
        else:
            lines = (tmp_path / f"one.{fmt}").read_bytes().splitlines()
            joined = [
                ln for p in _parts(tmp_path / f"dir-{fmt}") for ln in p.read_bytes().splitlines()
            ]
            if fmt == "csv":
                joined = [joined[0]] + [ln for ln in joined if not ln.startswith(b"index,")]
            assert lines == joined


def test_resume_finishes_interrupted_run_with_same_bytes(dataset, dask_client, tmp_path):
    prefix, _ = dataset
    common = dict(
        prefix=prefix, selection_kind="all", run=_run(prefix), chunk_size=20, format="jsonl"
    )
    run_token_export(TokenExport(out=str(tmp_path / "full"), **common), dask_client, progress=False)
    # An interrupted run: parts 0-2 done and recorded, later parts and the manifest missing.
    interrupted = tmp_path / "cut"
    run_token_export(TokenExport(out=str(interrupted), **common), dask_client, progress=False)
    progress = interrupted / ".dexport-progress"
    progress.mkdir()
    (progress / "params.json").write_bytes(b"")  # replaced below by the real parameters
    from pipeline.runtime.output import canonical_json
    from pipeline.tokens.job import prepare_token_export

    prepared = prepare_token_export(TokenExport(out=str(interrupted), **common))
    (progress / "params.json").write_bytes(canonical_json(prepared.params))
    manifest = json.loads((interrupted / "_manifest.json").read_text())
    for f in manifest["files"][:3]:
        (progress / f"{f['path']}.json").write_bytes(canonical_json(f))
    first = (interrupted / "part-00000.jsonl").stat().st_mtime_ns
    for f in manifest["files"][3:]:
        (interrupted / f["path"]).unlink()
    (interrupted / "_manifest.json").unlink()
    run_token_export(
        TokenExport(out=str(interrupted), resume=True, **common), dask_client, progress=False
    )
    assert (interrupted / "part-00000.jsonl").stat().st_mtime_ns == first  # not redone
    assert {p.name: p.read_bytes() for p in interrupted.iterdir()} == {
        p.name: p.read_bytes() for p in (tmp_path / "full").iterdir()
    }


def test_s3_output_and_input_match_local(dataset, dask_client, tmp_path, s3_bucket, s3_server):
    prefix, _ = dataset
    fs = s3_server.filesystem()
    for ext in (".bin", ".idx"):
        fs.put(prefix + ext, f"{s3_bucket}/data/ds{ext}")
    opts = s3_server.storage_options
    local = TokenExport(
        prefix=prefix,
        out=str(tmp_path / "local"),
        selection_kind="all",
        run=_run(prefix),
        doc_details=True,
        chunk_size=30,
    )
    run_token_export(local, dask_client, progress=False)
    remote = TokenExport(
        prefix=f"{s3_bucket}/data/ds",
        out=f"{s3_bucket}/out",
        selection_kind="all",
        run=_run(prefix, index_prefix=str(tmp_path / "idx")),
        doc_details=True,
        chunk_size=30,
        storage_options=opts,
    )
    run_token_export(remote, dask_client, progress=False)
    for p in (tmp_path / "local").iterdir():
        remote_bytes = fs.cat_file(f"{s3_bucket}/out/{p.name}")
        if p.name == "_manifest.json":
            assert json.loads(remote_bytes)["files"] == json.loads(p.read_bytes())["files"]
        else:
            assert remote_bytes == p.read_bytes()
    assert s3_server.object_keys(f"{s3_bucket}/out/.dexport-progress") == []
    # one file on S3, assembled from the parts
    one = TokenExport(
        prefix=f"{s3_bucket}/data/ds",
        out=f"{s3_bucket}/one.jsonl",
        selection_kind="all",
        run=_run(prefix, index_prefix=str(tmp_path / "idx")),
        doc_details=True,
        chunk_size=30,
        storage_options=opts,
    )
    run_token_export(one, dask_client, progress=False)
    assert fs.cat_file(f"{s3_bucket}/one.jsonl") == b"".join(
        p.read_bytes() for p in _parts(tmp_path / "local")
    )


# -- command line and bad input ------------------------------------------------------------
def _cli(prefix: str, *args: str) -> list[str]:
    return [
        "tokens",
        prefix,
        "--seq-len",
        str(SEQ_LEN),
        "--seed",
        str(SEED),
        "--train-iters",
        str(ITERS),
        "--batch-size",
        str(BATCH),
        "--splits",
        "100,0,0",
        *args,
    ]


def test_cli_exports_batches_as_text(dataset, dask_client, tmp_path, capsys):
    prefix, tok_path = dataset
    addr = dask_client.scheduler.address
    rc = main(
        _cli(
            prefix,
            "--batch-range",
            "1:3",
            "--text",
            "--tokenizer",
            tok_path,
            "--doc-details",
            "--out",
            str(tmp_path / "b.jsonl"),
            "--scheduler",
            addr,
        )
    )
    assert rc == 0
    records = _read_jsonl(tmp_path / "b.jsonl")
    assert [r["index"] for r in records] == list(range(8, 24))
    assert all(isinstance(r["content"], str) and r["batch_id"] in (1, 2) for r in records)
    assert "tokens/s" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sequence-range", "0:99999"], "outside"),
        (["--batches", "5000"], "out of range"),
        (["--sequences", "1,x"], "not a list of integers"),
        (["--sequence-range", "9:3"], "is empty: the start must be below the end"),
        (["--all", "--text"], "needs --tokenizer"),
        (["--all", "--text", "--tokenizer", "/nonexistent/tok"], "tokenizer"),
        (["--all", "--format", "npz", "--compression", "gzip"], "compression applies"),
        (["--all", "--nested"], "nested"),
        (["--all", "--convention", "megatron", "--packing", "pack_until_overflow"], "packing"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line_and_no_output(
    dataset, tmp_path, capsys, args, message
):
    prefix, _ = dataset
    out = tmp_path / "never"
    rc = main(_cli(prefix, *args, "--out", str(out), "--workers", "1"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("dexport: error:") and message in err[0]
    assert not out.exists()


def test_cli_out_ending_in_a_slash_is_a_folder_whatever_its_extension(dataset, tmp_path):
    prefix, _ = dataset
    out = tmp_path / "x.jsonl"
    assert main(["tokens", prefix, "--documents", "0:30", "--out", f"{out}/", "-q"]) == 0
    assert out.is_dir() and (out / "_manifest.json").exists()
    assert (out / "part-00000.jsonl").read_bytes().count(b"\n") == 30


def test_cli_a_file_where_the_staging_folder_goes_is_one_line(dataset, tmp_path, capsys):
    prefix, _ = dataset
    out = tmp_path / "x.jsonl"
    (tmp_path / "x.jsonl.dexport-parts").write_bytes(b"the user's file")
    assert main(["tokens", prefix, "--documents", "0:30", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.jsonl.dexport-parts" in err[0] and "move it away" in err[0]
    assert (tmp_path / "x.jsonl.dexport-parts").read_bytes() == b"the user's file"
    assert not out.exists()


def test_cli_refuses_existing_output_and_corrupt_data(dataset, tmp_path, capsys):
    prefix, _ = dataset
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(_cli(prefix, "--all", "--out", str(out), "--workers", "1")) == 2
    assert "not written by dexport" in capsys.readouterr().err  # and --overwrite would not help
    assert (out / "keep.txt").exists()
    bad = tmp_path / "bad"
    Path(str(bad) + ".idx").write_bytes(b"NOTMAGIC" + bytes(40))
    Path(str(bad) + ".bin").write_bytes(b"")
    assert main(["tokens", str(bad), "--documents", "0:1", "--out", str(tmp_path / "o")]) == 2
    assert "bad magic" in capsys.readouterr().err
    short = tmp_path / "short"
    Path(str(short) + ".idx").write_bytes(Path(prefix + ".idx").read_bytes())
    Path(str(short) + ".bin").write_bytes(Path(prefix + ".bin").read_bytes()[:-10])
    assert main(["tokens", str(short), "--documents", "0:1", "--out", str(tmp_path / "o")]) == 2
    assert "do not belong together or one is truncated" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_python_module_entry_point(dataset, tmp_path):
    import subprocess
    import sys

    prefix, _ = dataset
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "inspect", prefix, "--document", "0"],
        capture_output=True,
        text=True,
        cwd=os.getcwd(),
    )
    assert res.returncode == 0, res.stderr
    assert "documents" in res.stdout and "== document 0" in res.stdout


def test_gpu_backend_without_device_is_a_clear_error(dataset, tmp_path, capsys):
    from gpu.backend import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    prefix, tok_path = dataset
    rc = main(
        [
            "tokens",
            prefix,
            "--documents",
            "0:3",
            "--text",
            "--tokenizer",
            tok_path,
            "--backend",
            "gpu",
            "--out",
            str(tmp_path / "g"),
        ]
    )
    assert rc == 2
    assert "backend 'gpu' needs" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


@pytest.mark.gpu
def test_gpu_backend_gives_the_same_bytes(dataset, dask_client, tmp_path):
    prefix, tok_path = dataset
    outs = []
    for backend in ("cpu", "gpu"):
        spec = TokenExport(
            prefix=prefix,
            out=str(tmp_path / f"{backend}.jsonl"),
            selection_kind="all",
            run=_run(prefix),
            content="text",
            tokenizer=tok_path,
            backend=backend,
            chunk_size=40,
        )
        run_token_export(spec, dask_client, progress=False)
        outs.append((tmp_path / f"{backend}.jsonl").read_bytes())
    assert outs[0] == outs[1]


def test_inspect_shows_facts_and_a_batch_as_text(dataset, capsys):
    prefix, tok_path = dataset
    tok = AutoTokenizer.from_pretrained(tok_path)
    args = [
        "inspect",
        prefix,
        "--seq-len",
        str(SEQ_LEN),
        "--seed",
        str(SEED),
        "--train-iters",
        str(ITERS),
        "--batch-size",
        str(BATCH),
        "--splits",
        "100,0,0",
    ]
    assert main([*args, "--batch", "1", "--tokenizer", tok_path]) == 0
    out = capsys.readouterr().out
    assert "samples" in out and "batches" in out and "epochs" in out
    windows = _reference(prefix, range(BATCH, 2 * BATCH))
    for sample_id, window in zip(range(BATCH, 2 * BATCH), windows, strict=True):
        assert f"== sample {sample_id} (" in out
        assert tok.decode(window.tolist()) in out
    assert main([*args, "--sequence", "999999"]) == 2
    assert "out of range" in capsys.readouterr().err


class PartFilesExecutor(LocalExecutor):
    """Threads of this process whose tasks hand over part files, as Dask workers do."""

    shares_memory = False


@pytest.mark.parametrize("staged", [False, True], ids=["in-memory", "staged-files"])
def test_single_file_joined_while_parts_finish_fails_cleanly_and_resumes(
    dataset, tmp_path, monkeypatch, staged
):
    """A one-file export joins parts as they finish (from memory on threads of this process,
    from staged part files otherwise): a run that fails midway leaves no file at the target,
    and ``--resume`` (on threads) re-uses what it joined and finishes with the bytes of a
    clean run."""
    from pipeline.runtime.output import JOINED
    from pipeline.tokens import job

    prefix, _ = dataset
    common = dict(prefix=prefix, selection_kind="all", run=_run(prefix), chunk_size=8)
    clean = tmp_path / "clean.jsonl"
    run_token_export(TokenExport(out=str(clean), **common), LocalExecutor(2), progress=False)

    real = job.export_chunk
    ran: list[int] = []
    fail = [True]

    def failing(task, *args):
        ran.append(task.part)
        if task.part == 5 and fail[0]:
            raise RuntimeError("disk on fire")
        return real(task, *args)

    out = tmp_path / "cut.jsonl"
    monkeypatch.setattr(job, "export_chunk", failing)
    executor = PartFilesExecutor(2) if staged else LocalExecutor(2)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_token_export(TokenExport(out=str(out), **common), executor, progress=False)
    executor.close()
    staging = tmp_path / "cut.jsonl.dexport-parts"
    assert not out.exists()
    assert not [p for p in staging.rglob("*") if p.name.endswith(".tmp")]
    joined = (staging / JOINED / "cut.jsonl").read_bytes()
    assert joined and clean.read_bytes().startswith(joined)  # kept for --resume
    journal = staging / JOINED / "cut.jsonl.parts.jsonl"
    in_file = [json.loads(line)["path"] for line in journal.open()]
    assert in_file and not [p for p in in_file if (staging / p).exists()]  # held once

    ran.clear()
    fail[0] = False
    executor = LocalExecutor(2)
    run_token_export(TokenExport(out=str(out), resume=True, **common), executor, progress=False)
    executor.close()
    assert out.read_bytes() == clean.read_bytes()
    assert not staging.exists()
    assert not {int(p[5:10]) for p in in_file} & set(ran)  # joined parts not exported again


@pytest.mark.parametrize("fmt,content", [("jsonl", "text"), ("csv", "text"), ("jsonl", "tokens")])
@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_single_file_from_memory_equals_joined_part_files(
    dataset, tmp_path, fmt, content, compression
):
    """Parts handed over in memory (threads of this process) give the bytes of part files
    joined by copy (worker processes)."""

    prefix, tok = dataset
    ext = f".{fmt}" + {None: "", "gzip": ".gz", "zstd": ".zst"}[compression]
    outs = []
    for processes in (False, True):
        out = tmp_path / f"{processes}{ext}"
        spec = TokenExport(
            prefix=prefix,
            out=str(out),
            selection_kind="sequence_range",
            selection_value=(0, 90),
            run=_run(prefix),
            content=content,
            tokenizer=tok if content == "text" else None,
            doc_details=True,
            compression=compression,
            chunk_size=16,
        )
        executor = LocalExecutor(2, processes=processes)
        run_token_export(spec, executor, progress=False)
        executor.close()
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 1000


def test_single_file_killed_while_tidying_up_names_resume(dataset, tmp_path, monkeypatch, capsys):
    """Killed after the file was renamed into place but before its staging folder was removed:
    a plain re-run names --resume (which only tidies up) and --overwrite."""
    from pipeline.cli import main
    from pipeline.runtime.output import OutputDir

    prefix, _ = dataset
    out = tmp_path / "x.jsonl"
    argv = ["tokens", prefix, "--documents", "0:40", "--chunk-size", "8", "--out", str(out)]
    real = OutputDir.discard

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(OutputDir, "discard", killed)
    with pytest.raises(KeyboardInterrupt):
        spec = TokenExport(
            out=str(out),
            prefix=prefix,
            selection_kind="documents",
            selection_value=(0, 40),
            chunk_size=8,
        )
        run_token_export(spec, LocalExecutor(2), progress=False)
    monkeypatch.setattr(OutputDir, "discard", real)
    written = out.read_bytes()
    assert (tmp_path / "x.jsonl.dexport-parts").exists()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0], err
    assert main([*argv, "--resume"]) == 0
    assert out.read_bytes() == written and not (tmp_path / "x.jsonl.dexport-parts").exists()


def test_single_file_overwrite_interrupted_midway_names_the_staging_folder(
    dataset, tmp_path, capsys
):
    """An --overwrite run interrupted midway leaves the earlier export at the target until
    its rename: a plain re-run says an interrupted export left its staging folder (not that
    the file there is written) and --resume finishes the new export."""
    from pipeline.cli import main
    from pipeline.tokens import job

    prefix, _ = dataset
    out = tmp_path / "x.jsonl"
    base = ["tokens", prefix, "--chunk-size", "8", "--out", str(out)]
    assert main([*base, "--documents", "0:16"]) == 0
    earlier = out.read_bytes()
    real = job.export_chunk

    def interrupted(task, *args):
        if task.part == 3:
            raise KeyboardInterrupt
        return real(task, *args)

    spec = TokenExport(
        out=str(out),
        prefix=prefix,
        selection_kind="documents",
        selection_value=(0, 80),
        chunk_size=8,
        overwrite=True,
    )
    job.export_chunk = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            run_token_export(spec, LocalExecutor(2), progress=False)
    finally:
        job.export_chunk = real
    assert out.read_bytes() == earlier  # kept until the new file is complete
    capsys.readouterr()
    argv = [*base, "--documents", "0:80"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.jsonl.dexport-parts" in err[0] and "--resume" in err[0], err
    assert main([*argv, "--resume"]) == 0
    clean = tmp_path / "clean.jsonl"
    assert main([*base[:-1], str(clean), "--documents", "0:80"]) == 0
    assert out.read_bytes() == clean.read_bytes()
    assert not (tmp_path / "x.jsonl.dexport-parts").exists()


def test_resume_after_the_tokenizer_files_changed_is_refused(dataset, tmp_path, monkeypatch):
    """The tokenizer is recorded by its files' sha256, not only its path: changed in place
    between an interrupted run and --resume, it would mix two tokenizers' text in one file."""
    import shutil

    from pipeline.errors import UserError
    from pipeline.tokens import job

    prefix, tokenizer = dataset
    tok = tmp_path / "tok"
    shutil.copytree(tokenizer, tok)
    spec = dict(
        out=str(tmp_path / "x.jsonl"),
        prefix=prefix,
        selection_kind="documents",
        selection_value=(0, 60),
        chunk_size=8,
        content="text",
        tokenizer=str(tok),
    )
    real = job.export_chunk

    def failing(task, *args):
        if task.part == 3:
            raise RuntimeError("power cut")
        return real(task, *args)

    monkeypatch.setattr(job, "export_chunk", failing)
    with pytest.raises(RuntimeError):
        run_token_export(TokenExport(**spec), LocalExecutor(2), progress=False)
    monkeypatch.setattr(job, "export_chunk", real)
    config = tok / "tokenizer_config.json"
    config.write_text(config.read_text() + "\n")  # the same tokenizer, other bytes
    with pytest.raises(UserError, match="tokenizer_sha256"):
        run_token_export(TokenExport(resume=True, **spec), LocalExecutor(2), progress=False)
    assert not (tmp_path / "x.jsonl").exists()
