"""An S3 endpoint that cannot be reached, on the token side: whether the output, the dataset,
a blend's dataset or the index folder is on S3, ``dexport tokens`` and ``dexport inspect`` end
with one line and exit 3 (a temporary failure: retry), the Python API raises the same
StorageUnreachable, and nothing is written."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from pipeline import DatasetManager
from pipeline.errors import StorageUnreachable, TemporaryFailure
from pipeline.formats.indexed_dataset import IndexedDatasetBuilder
from tests.tokens.test_mistakes import fails

RUN = ["--seq-len", "8", "--seed", "1", "--num-samples", "40", "--splits", "100,0,0"]


def _closed_port() -> int:
    """A local port nothing listens on (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def endpoint() -> str:
    return f"http://127.0.0.1:{_closed_port()}"


@pytest.fixture
def local(tmp_path: Path) -> str:
    """A valid local dataset prefix (40 short documents)."""
    prefix = str(tmp_path / "ds")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    rng = np.random.default_rng(0)
    for _ in range(40):
        builder.add_document(rng.integers(0, 3000, int(rng.integers(2, 30))))
    builder.finalize()
    return prefix


def _options(endpoint: str) -> dict:
    return {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}}


@pytest.mark.parametrize(
    "case",
    [
        "tokens --out on S3",
        "tokens --documents --out on S3",
        "tokens PREFIX on S3",
        "tokens a blend's dataset on S3",
        "tokens --index on S3",
        "inspect PREFIX on S3",
        "inspect --index on S3",
    ],
)
def test_cli_is_one_line_exit_3(
    case: str, local: str, endpoint: str, tmp_path: Path, capsys
) -> None:
    remote, out = "s3://bucket/data/corpus", tmp_path / "out"
    command, *_ = case.split()
    prefix = remote if "PREFIX on S3" in case else local
    argv = [command]
    if "blend" in case:
        argv += ["--train-data-paths", local, remote, "--valid-data-paths", local]
        argv += ["--test-data-paths", local]
    else:
        argv.append(prefix)
    if "--documents" in case:
        argv += ["--documents", "0:3"]
    else:
        argv += RUN + (["--sequences", "1"] if command == "tokens" else ["--sequence", "1"])
    if "--index" in case:
        argv += ["--index", "s3://bucket/idx/"]
    if command == "tokens":
        argv += ["--out", "s3://bucket/x" if "--out on S3" in case else out]
    before = sorted(tmp_path.iterdir())
    line = fails(
        capsys,
        [*argv, "--storage-options", json.dumps(_options(endpoint))],
        f"cannot reach the S3 endpoint {endpoint}",
        code=3,
    )
    assert "then retry" in line
    assert sorted(tmp_path.iterdir()) == before  # no output, no index files


def test_api_raises_storage_unreachable(local: str, endpoint: str, tmp_path: Path) -> None:
    options = _options(endpoint)
    with DatasetManager(storage_options=options) as manager:
        with pytest.raises(StorageUnreachable, match=f"cannot reach the S3 endpoint {endpoint}"):
            manager.setup_edit_inspect_sample_export("s3://bucket/data/corpus", None, 5, 8, 8, 1)
    with DatasetManager(storage_options=options) as manager:
        with pytest.raises(TemporaryFailure, match="cannot reach the S3 endpoint"):
            manager.setup_edit_inspect_sample_export(local, "s3://bucket/idx/", 5, 8, 8, 1)
    with DatasetManager(storage_options=options) as manager:
        manager.setup_edit_inspect_sample_export(local, str(tmp_path / "idx"), 5, 8, 8, 1)
        with pytest.raises(StorageUnreachable, match="cannot reach the S3 endpoint"):
            manager.export.export_sequences([0, 1], "s3://bucket/out.jsonl", "jsonl", False)
