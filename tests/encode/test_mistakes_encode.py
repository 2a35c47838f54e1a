"""Catalogue of user mistakes and faults of ``dexport encode``.

One test per case, each with the documented exit status, exactly one stderr line starting
``dexport: error:`` (no traceback) and an output that is absent, untouched or kept on purpose
(exit 1: the dataset is written, the data failed its checks). Inputs and the output are checked
before the tokenizer is loaded: the cases below pass a tokenizer path that does not exist
wherever the mistake must be found first.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
from pathlib import Path

import pytest
import tokenizers_fixtures
import zstandard

from pipeline.cli import main

ERROR = "dexport: error: "


def jsonl(items: list) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in items)


def docs(n: int = 100, start: int = 0) -> list[dict]:
    return [{"id": i, "text": f"document {i} " * 5, "title": f"t{i}"} for i in range(start, n)]


def run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(ERROR)]
    assert len(errors) <= 1, err
    return code, errors[0] if errors else ""


def refused(capsys, code: int, *argv: str) -> str:
    got, line = run(capsys, *argv)
    assert got == code and line
    return line


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(docs()))
    return path


@pytest.fixture
def tokenizer(byte_bpe_tokenizer_path: Path) -> str:
    return str(byte_bpe_tokenizer_path)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


byte_bpe_tokenizer_path = tokenizers_fixtures.byte_bpe_tokenizer_path  # the session fixture
NO_TOKENIZER = "/nonexistent/tokenizer"  # loading it would fail: proves it is never reached


def test_field_no_record_has_is_exit_2_before_the_tokenizer(capsys, corpus, out) -> None:
    argv = ["encode", str(corpus), "--tokenizer", NO_TOKENIZER, "--out", str(out / "ds")]
    line = refused(capsys, 2, *argv, "--field", "content")
    assert "--field content: no record has a field 'content'" in line
    assert "id, text, title" in line and os.listdir(out) == []


def test_missing_input_is_reported_before_the_tokenizer(capsys, tmp_path, out) -> None:
    argv = ["encode", str(tmp_path / "nope.jsonl"), "--tokenizer", NO_TOKENIZER]
    line = refused(capsys, 2, *argv, "--out", str(out / "ds"))
    assert "does not exist" in line and "tokenizer" not in line


def test_existing_output_is_reported_before_the_tokenizer(capsys, corpus, out) -> None:
    (out / "ds.bin").write_bytes(b"old")
    argv = ["encode", str(corpus), "--tokenizer", NO_TOKENIZER, "--out", str(out / "ds")]
    assert "already exists" in refused(capsys, 2, *argv)
    assert os.listdir(out) == ["ds.bin"] and (out / "ds.bin").read_bytes() == b"old"


@pytest.mark.parametrize("prefix", ["sub/..", "sub/.", "sub/", "-"])
def test_out_that_is_not_a_prefix_is_exit_2(capsys, corpus, out, prefix: str) -> None:
    target = prefix if prefix == "-" else f"{out}/{prefix}"
    argv = ["encode", str(corpus), "--tokenizer", NO_TOKENIZER, "--out", target]
    assert "--out" in refused(capsys, 2, *argv)
    assert os.listdir(out) == [] and not Path("-").exists()


def test_truncated_zstd_input_is_exit_2_and_writes_nothing(
    capsys, tmp_path, out, tokenizer
) -> None:
    blob = zstandard.ZstdCompressor().compress(jsonl(docs(2000)))
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(blob[: len(blob) // 2])
    argv = ["encode", str(path), "--tokenizer", tokenizer]
    line = refused(capsys, 2, *argv, "--out", str(out / "ds"))
    assert f"{path} is truncated" in line and os.listdir(out) == []


def test_truncated_gzip_found_mid_run_leaves_nothing(capsys, tmp_path, out, tokenizer) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(jsonl(docs(300)))  # read first: the check passes
    blob = gzip.compress(jsonl(docs(3000)))
    (folder / "b.jsonl.gz").write_bytes(blob[: len(blob) - 100])
    argv = ["encode", str(folder), "--tokenizer", tokenizer]
    line = refused(capsys, 2, *argv, "--out", str(out / "ds"))
    assert "b.jsonl.gz is truncated" in line
    assert os.listdir(out) == []  # no shards, no staging folder: a fixed re-run is not refused


def test_every_record_rejected_is_exit_1_with_the_dataset_kept(
    capsys, tmp_path, out, tokenizer
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl([{"text": "   "}, {"text": 5}, {"text": ""}]))
    argv = ["encode", str(path), "--tokenizer", tokenizer]
    line = refused(capsys, 1, *argv, "--out", str(out / "ds"))
    assert "every record was rejected (3 of 3)" in line and "empty_text 2" in line
    assert sorted(os.listdir(out)) == ["ds.bin", "ds.idx", "ds.manifest.json", "ds.rejects.jsonl"]


def test_too_many_rejects_is_exit_1(capsys, tmp_path, out, tokenizer) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(docs(4)) + b"{not json\n" * 5)
    argv = ["encode", str(path), "--tokenizer", tokenizer]
    line = refused(capsys, 1, *argv, "--out", str(out / "ds"))
    assert "5 of 9 records were rejected" in line and "invalid_json 5" in line
    code, _ = run(capsys, *argv, "--out", str(out / "ok"), "--max-reject-fraction", "0.6")
    assert code == 0


def test_blank_input_is_exit_2(capsys, tmp_path, out) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\n \n\n")
    argv = ["encode", str(path), "--tokenizer", NO_TOKENIZER, "--out", str(out / "ds")]
    assert "hold no records" in refused(capsys, 2, *argv)
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b'{"text": "x", "d": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested_too_deep"),
        (b'{"text": "caf\xc3 au lait"}', "invalid_utf8"),
        (b'{"text": "nul \x00 byte"}', "invalid_json"),
        (b"42", "not_an_object"),
    ],
    ids=["nested", "invalid-utf8", "nul-byte", "number"],
)
def test_bad_record_is_a_reject(capsys, tmp_path, out, tokenizer, bad: bytes, reason: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(docs(5)) + bad + b"\n" + jsonl(docs(10, start=5)))
    argv = ["encode", str(path), "--tokenizer", tokenizer]
    assert run(capsys, *argv, "--out", str(out / "ds"))[0] == 0
    rejects = [json.loads(line) for line in (out / "ds.rejects.jsonl").open()]
    assert [(r["reason"], r["line"]) for r in rejects] == [(reason, 6)]
    manifest = json.loads((out / "ds.manifest.json").read_text())
    assert manifest["totals"]["documents"] == 10 and manifest["totals"]["records"] == 11


def test_unreachable_s3_output_is_exit_3_within_seconds(capsys, corpus) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
    }
    argv = ["encode", str(corpus), "--tokenizer", NO_TOKENIZER, "--out", "s3://bucket/ds"]
    started = time.monotonic()
    line = refused(capsys, 3, *argv, "--storage-options", json.dumps(options))
    assert "cannot reach the S3 endpoint" in line and time.monotonic() - started < 10


def test_wrong_s3_credentials_for_the_output_are_exit_2(capsys, corpus, s3_server, s3_bucket):
    options = s3_server.options(secret="wrong", config_kwargs={"retries": {"max_attempts": 1}})
    argv = ["encode", str(corpus), "--tokenizer", NO_TOKENIZER, "--out", f"{s3_bucket}/ds"]
    line = refused(capsys, 2, *argv, "--storage-options", json.dumps(options))
    assert "credentials" in line


def test_missing_s3_credentials_for_the_input_are_exit_2(capsys, out, s3_server, s3_bucket):
    options = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}
    argv = ["encode", f"{s3_bucket}/in.jsonl", "--tokenizer", NO_TOKENIZER]
    line = refused(
        capsys, 2, *argv, "--out", str(out / "ds"), "--storage-options", json.dumps(options)
    )
    assert "no S3 credentials found" in line
