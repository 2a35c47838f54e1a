"""Catalogue of user mistakes and faults on the corpus side (corpus, validate, stats, summary).

One test per case. Each ends with the documented exit status, exactly one stderr line starting
``dexport: error:`` (no traceback), and an output that is absent, untouched or resumable:

- 2: wrong usage or bad input (a truncated or fake compressed file, a field name no record
  has, empty inputs, a broken schema file, wrong S3 credentials…): nothing is written;
- 3: temporary (an S3 endpoint that cannot be reached, a full disk): re-run later;
- 1: the data failed its checks (every record rejected, too many rejected): the output is
  written and kept for inspection.

Record-level problems (deep nesting, invalid UTF-8, NUL bytes, a 50 MB line, JSON that is not
an object) are rejects with a reason, never a crash.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from pipeline.cli import main

ERROR = "dexport: error: "


def records(n: int = 200, start: int = 0) -> list[dict]:
    return [
        {"id": f"doc-{i}", "text": f"document {i} " + "words " * (i % 40 + 5), "title": f"t{i}"}
        for i in range(start, start + n)
    ]


def jsonl(items: list) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in items)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``dexport argv`` in this process: (status, the error line or "", all of stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith(ERROR)]
    assert len(errors) <= 1, captured.err
    return code, (errors[0] if errors else ""), captured.err


def refused(capsys, code: int, *argv: str) -> str:
    """Run, expect exit ``code`` with one error line; return that line."""
    got, line, err = run(capsys, *argv)
    assert got == code and line, err
    return line


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "good.jsonl"
    path.parent.mkdir()
    path.write_bytes(jsonl(records()))
    return path


# -- compressed inputs ----------------------------------------------------------------------
def test_truncated_gzip_input_is_exit_2_and_a_fixed_rerun_works(
    tmp_path: Path, capsys, dask_client
) -> None:
    data = jsonl(records(3000))
    blob = gzip.compress(data)
    path = tmp_path / "in" / "cut.jsonl.gz"
    path.parent.mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(jsonl(records(50, start=9000)))
    path.write_bytes(blob[: len(blob) * 3 // 4])
    out = tmp_path / "out"
    cluster = ["--scheduler", dask_client.scheduler.address]  # the failure comes from a worker
    line = refused(
        capsys, 2, "corpus", str(tmp_path / "in"), "--out", str(out), "--no-card", *cluster
    )
    assert f"{path} is truncated" in line and "byte" in line
    assert listing(out) == []  # no part, no .dexport-progress: the next run is not refused
    path.write_bytes(blob)
    assert run(capsys, "corpus", str(tmp_path / "in"), "--out", str(out), "--no-card")[0] == 0


def test_zstd_input_cut_in_half_is_exit_2_not_a_shorter_export(tmp_path: Path, capsys) -> None:
    blob = zstandard.ZstdCompressor().compress(jsonl(records(1000)))
    path = tmp_path / "half.jsonl.zst"
    path.write_bytes(blob[: len(blob) // 2])
    line = refused(capsys, 2, "corpus", str(path), "--out", str(tmp_path / "out"))
    assert f"{path} is truncated: the zstd stream ends at byte" in line
    assert not (tmp_path / "out").exists()


def test_plain_file_named_gz_is_exit_2(tmp_path: Path, capsys, good: Path) -> None:
    fake = tmp_path / "fake.jsonl.gz"
    shutil.copy(good, fake)
    line = refused(capsys, 2, "corpus", str(fake), "--out", str(tmp_path / "out"))
    assert "is not gzip data" in line and str(fake) in line


def test_gzip_with_trailing_garbage_is_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "tail.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(records(20))) + b"garbage after the stream")
    line = refused(capsys, 2, "corpus", str(path), "--out", str(tmp_path / "out"))
    assert "unexpected data after the gzip stream at byte" in line


def test_corrupt_parquet_input_is_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 100)
    line = refused(capsys, 2, "corpus", str(path), "--out", str(tmp_path / "out"))
    assert "bad.parquet" in line and "Parquet" in line


# -- record-level problems: rejects with a reason, never a crash ---------------------------
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b'{"text": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested_too_deep"),
        (b'{"text": "deep", "x": ' + b"[" * 300 + b"]" * 300 + b"}", "nested_too_deep"),
        (b'{"text": "caf\xc3"}', "invalid_utf8"),
        (b'{"text": "a\x00b"}', "invalid_json"),
        (b'{"text": "a\\u0000b"}', "nul_in_text"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
    ],
    ids=["nested-100k", "nested-300", "invalid-utf8", "nul-byte", "nul-escape", "list", "string"],
)
def test_bad_record_is_a_reject_with_its_reason(
    tmp_path: Path, capsys, bad: bytes, reason: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(records(10)) + bad + b"\n" + jsonl(records(10, start=10)))
    out = tmp_path / "out"
    assert run(capsys, "corpus", str(path), "--out", str(out), "--no-card")[0] == 0
    rejects = [json.loads(line) for line in (out / "rejects" / "part-00000.jsonl").open()]
    assert [r["reason"] for r in rejects] == [reason] and rejects[0]["line"] == 11
    stats = json.loads((out / "dataset_stats.json").read_text())
    assert stats["total_documents"] == 20 and stats["accounting"]["balanced"]


def test_a_50_mb_line_is_one_record(tmp_path: Path, capsys) -> None:
    path = tmp_path / "big.jsonl.gz"
    big = {"id": "big", "text": "word " * (10 << 20)}
    path.write_bytes(gzip.compress(jsonl([*records(5), big, *records(5, start=5)]), 1))
    out = tmp_path / "out"
    assert run(capsys, "corpus", str(path), "--out", str(out), "--no-card", "--split", "1")[0] == 0
    stats = json.loads((out / "dataset_stats.json").read_text())
    assert stats["total_documents"] == 11 and stats["text_length_stats"]["max"] == 50 << 20


# -- checks before the work ------------------------------------------------------------------
def test_split_key_no_record_has_is_exit_2_naming_the_fields(
    tmp_path: Path, capsys, good: Path
) -> None:
    out = tmp_path / "out"
    line = refused(capsys, 2, "corpus", str(good), "--out", str(out), "--split-key", "idd")
    assert "--split-key idd: no record has a field 'idd'" in line
    assert "id, text, title" in line
    assert not out.exists()


def test_schema_text_source_no_record_has_is_exit_2(tmp_path: Path, capsys, good: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("fields:\n  text: content\n  metadata.title: title\n")
    args = ["corpus", str(good), "--out", str(tmp_path / "out"), "--schema", str(schema)]
    line = refused(capsys, 2, *args)
    assert "the text field: no record has a field 'content'" in line


def test_every_record_rejected_is_exit_1_and_the_output_is_kept(tmp_path: Path, capsys) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b'{"text": "  ", "n": %d}\n' % i for i in range(30)))
    out = tmp_path / "out"
    line = refused(capsys, 1, "corpus", str(path), "--out", str(out), "--no-card")
    assert "every record was rejected (30 of 30)" in line and "empty_text 30" in line
    assert (out / "_manifest.json").exists() and (out / "rejects" / "part-00000.jsonl").exists()


def test_more_rejects_than_the_allowed_fraction_is_exit_1(tmp_path: Path, capsys) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(records(10)) + b"not json\n" * 4)
    out = tmp_path / "out"
    argv = ["corpus", str(path), "--out", str(out), "--no-card", "--max-reject-fraction", "0.2"]
    line = refused(capsys, 1, *argv)
    assert "4 of 14 records were rejected" in line and "--max-reject-fraction 0.2" in line
    assert (out / "_manifest.json").exists()


@pytest.mark.parametrize("content", [b"", b"\n  \n\n"], ids=["zero-bytes", "blank-lines"])
def test_empty_input_is_exit_2(tmp_path: Path, capsys, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    line = refused(capsys, 2, "corpus", str(path), "--out", str(tmp_path / "out"))
    assert "hold no" in line and not (tmp_path / "out").exists()


def test_out_dash_is_exit_2(tmp_path: Path, capsys, good: Path) -> None:
    assert "--out -" in refused(capsys, 2, "corpus", str(good), "--out", "-")
    assert not Path("-").exists()


# -- schema files ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- text\n- title\n", "is a list, not a mapping"),
        ("just a string\n", "is a string, not a mapping"),
        ("fields:\n  text: text\ncolour: blue\n", "unknown key 'colour'"),
        ("fields:\n  text: text\n  ../../etc/passwd: title\n", "holds '/'"),
        ("fields: [text, title]\n", "'fields' must be a mapping"),
    ],
    ids=["list", "string", "unknown-key", "path-traversal", "fields-list"],
)
def test_broken_schema_file_is_exit_2(
    tmp_path: Path, capsys, good: Path, text: str, message: str
) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(text)
    args = ["corpus", str(good), "--out", str(tmp_path / "out"), "--schema", str(schema)]
    assert message in refused(capsys, 2, *args)
    assert not (tmp_path / "out").exists()


def test_schema_file_that_is_not_text_is_exit_2(tmp_path: Path, capsys, good: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_bytes(b"\xff\xfe\x00binary")
    args = ["corpus", str(good), "--out", str(tmp_path / "out"), "--schema", str(schema)]
    assert "is not UTF-8 text" in refused(capsys, 2, *args)


# -- storage -----------------------------------------------------------------------------------
def test_storage_options_that_are_not_json_are_exit_2(tmp_path: Path, capsys, good: Path) -> None:
    args = ["corpus", str(good), "--out", str(tmp_path / "out"), "--storage-options", "{key: 1}"]
    assert "--storage-options is not valid JSON" in refused(capsys, 2, *args)


def _s3_input(s3_server, s3_bucket: str, good: Path) -> str:
    s3_server.filesystem().put(str(good), f"{s3_bucket.removeprefix('s3://')}/in/good.jsonl")
    return f"{s3_bucket}/in/good.jsonl"


def test_unknown_storage_option_is_exit_2(tmp_path, capsys, good, s3_server, s3_bucket) -> None:
    url = _s3_input(s3_server, s3_bucket, good)
    options = json.dumps({**s3_server.storage_options, "bogus": 1})
    line = refused(
        capsys, 2, "corpus", url, "--out", str(tmp_path / "o"), "--storage-options", options
    )
    assert "--storage-options: unknown option 'bogus'" in line


def test_missing_s3_credentials_are_exit_2(tmp_path, capsys, good, s3_server, s3_bucket) -> None:
    url = _s3_input(s3_server, s3_bucket, good)
    options = json.dumps({"client_kwargs": {"endpoint_url": s3_server.endpoint_url}})
    line = refused(
        capsys, 2, "corpus", url, "--out", str(tmp_path / "o"), "--storage-options", options
    )
    assert "no S3 credentials found" in line and "AWS_ACCESS_KEY_ID" in line


def test_wrong_s3_credentials_are_exit_2(tmp_path, capsys, good, s3_server, s3_bucket) -> None:
    url = _s3_input(s3_server, s3_bucket, good)
    options = json.dumps(
        s3_server.options(secret="wrong", config_kwargs={"retries": {"max_attempts": 1}})
    )
    line = refused(
        capsys, 2, "corpus", url, "--out", str(tmp_path / "o"), "--storage-options", options
    )
    assert "credentials" in line and ("permission" in line or "refused" in line)


def test_missing_bucket_is_exit_2(tmp_path, capsys, s3_server) -> None:
    options = json.dumps(s3_server.storage_options_no_retry)
    url = "s3://no-such-bucket-dexport/in/good.jsonl"
    line = refused(
        capsys, 2, "corpus", url, "--out", str(tmp_path / "o"), "--storage-options", options
    )
    assert "no-such-bucket-dexport" in line


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_s3_endpoint_is_exit_3_within_seconds(tmp_path, capsys, good) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    options = json.dumps({"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}})
    started = time.monotonic()
    line = refused(
        capsys, 3, "corpus", str(good), "--out", "s3://bucket/out", "--storage-options", options
    )
    assert time.monotonic() - started < 10
    assert f"cannot reach the S3 endpoint {endpoint}" in line


# -- the output cannot be written -----------------------------------------------------------
@contextlib.contextmanager
def tmpfs(folder: Path, size: str, *flags: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``folder`` (root with CAP_SYS_ADMIN only; else skip)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    opts = ",".join([f"size={size}", *flags])
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_output_folder_not_writable_is_exit_2(tmp_path: Path, capsys, good: Path) -> None:
    parent = tmp_path / "locked"
    if os.geteuid() != 0:  # a read-only folder stops anyone but root
        parent.mkdir()
        parent.chmod(0o555)
        mount = contextlib.nullcontext(parent)
    else:  # root ignores permissions: a read-only file system stops it too
        mount = tmpfs(parent, "1m", "ro")
    with mount:
        line = refused(capsys, 2, "corpus", str(good), "--out", str(parent / "out"))
        assert str(parent / "out") in line
        assert listing(parent) == []
    parent.chmod(0o755)


def test_full_disk_is_exit_3_and_resume_finishes_after_space_is_freed(
    tmp_path: Path, capsys
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for i in range(4):
        (source / f"p{i}.jsonl").write_bytes(jsonl(records(600, start=i * 600)) * 2)
    with tmpfs(tmp_path / "disk", "400k") as disk:
        out = disk / "out"
        flags = ["--no-card", "--chunk-size", "150k"]
        argv = ["corpus", str(source), "--out", str(out), *flags]
        line = refused(capsys, 3, *argv)
        assert "no space left" in line and "--resume" in line
        assert any(p.startswith(".dexport-progress") for p in listing(out))  # resumable
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert run(capsys, *argv, "--resume")[0] == 0
        fresh = tmp_path / "fresh"
        assert run(capsys, "corpus", str(source), "--out", str(fresh), *flags)[0] == 0
        for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "dataset_stats.json"):
            assert (out / name).read_bytes() == (fresh / name).read_bytes()


def test_no_space_while_writing_statistics_is_exit_3(tmp_path: Path, capsys, good: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    out = tmp_path / "out"
    assert run(capsys, "corpus", str(good), "--out", str(out), "--no-card")[0] == 0
    line = refused(capsys, 3, "stats", str(out), "--output", "/dev/full")
    assert "no space left" in line


# -- validate, stats, summary ------------------------------------------------------------------
def test_stats_on_a_garbage_file_is_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(b"\x00\x01 not json\n{broken\n")
    assert "holds no corpus records" in refused(capsys, 2, "stats", str(path))


def test_validate_reports_a_truncated_split_file_as_failed(tmp_path: Path, capsys, good) -> None:
    out = tmp_path / "out"
    argv = ["corpus", str(good), "--out", str(out), "--no-card", "--compression", "gzip"]
    assert run(capsys, *argv)[0] == 0
    train = out / "train.jsonl.gz"
    train.write_bytes(train.read_bytes()[:-20])
    capsys.readouterr()
    assert main(["validate", str(out)]) == 1
    report = capsys.readouterr().out
    assert "train.jsonl.gz" in report and "is truncated" in report
    assert "VALIDATION FAILED" in report


def test_summary_of_a_folder_with_a_truncated_file_is_exit_2(tmp_path: Path, capsys) -> None:
    stage = tmp_path / "stage1"
    stage.mkdir()
    blob = gzip.compress(jsonl(records(500)))
    (stage / "part.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    line = refused(capsys, 2, "summary", str(stage))
    assert "part.jsonl.gz is truncated" in line


def test_validate_with_a_schema_file_that_is_a_list_is_exit_2(tmp_path: Path, capsys, good) -> None:
    out = tmp_path / "out"
    assert run(capsys, "corpus", str(good), "--out", str(out), "--no-card")[0] == 0
    schema = tmp_path / "schema.yaml"
    schema.write_text("- a\n- b\n")
    assert "is a list" in refused(capsys, 2, "validate", str(out), "--schema", str(schema))


def test_an_input_file_whose_name_is_not_utf8(tmp_path: Path, capsys, good: Path) -> None:
    """Inputs are named in the UTF-8 JSON of manifests and statistics: a file name of other
    bytes, given or found in a folder, is one line and exit 2 before anything is written."""
    import os

    odd = os.fsdecode(os.fsencode(str(good.parent)) + b"/odd\xffname.jsonl")
    Path(odd).write_bytes(jsonl(records(5)))
    out = tmp_path / "out"
    for given in (odd, str(good.parent)):
        line = refused(capsys, 2, "corpus", given, "--out", str(out))
        assert "not valid UTF-8" in line and "rename it" in line
        assert listing(out) == []
