"""The SeaweedFS S3 fixture behaves like S3 for what the pipeline does through s3fs."""

from __future__ import annotations

import hashlib
import os
import time

import fsspec
import psutil
import pytest
import s3fs

MiB = 1024 * 1024


def test_put_get_list(s3_bucket: str, s3_storage_options: dict) -> None:
    fs, root = fsspec.core.url_to_fs(s3_bucket, **s3_storage_options)
    assert isinstance(fs, s3fs.S3FileSystem)
    assert fs.ls(root) == []  # a new bucket per test
    fs.pipe_file(f"{root}/a.jsonl", b'{"text": "a"}\n')
    fs.pipe_file(f"{root}/sub/part-00000.jsonl", b"x" * 1000)
    fs.pipe_file(f"{root}/sub/part-00001.jsonl", b"")
    assert fs.cat_file(f"{root}/a.jsonl") == b'{"text": "a"}\n'
    assert fs.cat_file(f"{root}/sub/part-00000.jsonl", start=10, end=20) == b"x" * 10
    assert sorted(fs.ls(root, detail=False)) == [f"{root}/a.jsonl", f"{root}/sub"]
    assert fs.find(f"{root}/sub") == [
        f"{root}/sub/part-00000.jsonl",
        f"{root}/sub/part-00001.jsonl",
    ]
    assert fs.info(f"{root}/sub/part-00000.jsonl")["size"] == 1000
    fs.rm(f"{root}/a.jsonl")
    assert not fs.exists(f"{root}/a.jsonl")


def test_object_keys_lists_objects_only(s3_server, s3_bucket: str) -> None:
    fs = s3_server.filesystem()
    bucket = s3_bucket.removeprefix("s3://")
    fs.pipe({f"{bucket}/out/.progress/a.json": b"1", f"{bucket}/out/part-00000.jsonl": b"2"})
    fs.rm(f"{bucket}/out/.progress", recursive=True)
    # S3 semantics: the prefix is gone with its last object (SeaweedFS may still list the folder).
    assert s3_server.object_keys(f"{s3_bucket}/out/.progress") == []
    assert s3_server.object_keys(f"{s3_bucket}/out") == [f"{bucket}/out/part-00000.jsonl"]
    assert s3_server.object_keys(s3_bucket) == [f"{bucket}/out/part-00000.jsonl"]


def test_buckets_are_fresh_and_options_are_copies(s3_server) -> None:
    first, second = s3_server.new_bucket(), s3_server.new_bucket()
    assert first != second
    options = s3_server.storage_options
    options["client_kwargs"]["endpoint_url"] = "http://example.invalid"
    assert s3_server.storage_options["client_kwargs"]["endpoint_url"] == s3_server.endpoint_url


def test_wrong_secret_fails_fast_without_retries(
    s3_bucket: str, s3_storage_options_no_retry: dict
) -> None:
    options = {**s3_storage_options_no_retry, "secret": "not-the-secret"}
    assert options["config_kwargs"]["retries"]["max_attempts"] == 1
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    start = time.monotonic()
    with pytest.raises(PermissionError):
        fs.pipe_file(f"{s3_bucket[5:]}/denied.txt", b"no")
    with pytest.raises(PermissionError):
        fs.ls(s3_bucket[5:])
    assert time.monotonic() - start < 5


def test_anonymous_requests_are_refused(s3_server, s3_bucket: str) -> None:
    anon = s3fs.S3FileSystem(
        anon=True,
        skip_instance_cache=True,
        client_kwargs={"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"},
        config_kwargs={"retries": {"max_attempts": 1}},
    )
    with pytest.raises(PermissionError):
        anon.pipe_file(f"{s3_bucket[5:]}/anon.txt", b"no")


def test_multipart_upload(s3_server, s3_bucket: str, tmp_path) -> None:
    # 12 MiB written in 5 MiB blocks (the S3 minimum part size) -> a 3-part multipart upload.
    data = os.urandom(12 * MiB)
    fs = s3_server.filesystem()
    path = f"{s3_bucket[5:]}/big.bin"
    with fs.open(path, "wb", block_size=5 * MiB) as f:
        for i in range(0, len(data), MiB):
            f.write(data[i : i + MiB])
    info = fs.info(path)
    assert info["size"] == len(data)
    assert info["ETag"].strip('"').endswith("-3"), info["ETag"]  # multipart ETags end in -<parts>
    assert hashlib.sha256(fs.cat_file(path)).digest() == hashlib.sha256(data).digest()
    local = tmp_path / "big.bin"
    fs.get_file(path, str(local))
    assert local.read_bytes() == data


def test_machine_aws_configuration_is_hidden() -> None:
    assert os.environ["AWS_CONFIG_FILE"] == os.devnull
    assert os.environ["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert not {"AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL"} & os.environ.keys()


def test_server_listens_on_loopback_only(s3_server) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(s3_server.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "weed mini has no listening sockets"
    assert {addr.ip for addr in listening} == {"127.0.0.1"}
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
