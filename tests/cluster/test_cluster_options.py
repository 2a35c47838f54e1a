"""Cluster options of every job: ``--backend gpu``, ``--protocol``, ``--rmm-pool-size``.

On a machine without what an option needs (a GPU, dask-cuda, RMM, distributed-ucxx) the
command ends with one line on stderr and exit status 2 before anything starts or is written;
tests that need the missing piece absent skip where it is installed.
"""

from __future__ import annotations

import importlib.util
import operator
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from cluster import get_client
from cluster.errors import ClusterError
from cluster.local import parse_pool_size
from gpu.backend import gpu_available
from pipeline.cli import main

needs_no_gpu = pytest.mark.skipif(gpu_available(), reason="a usable GPU backend is installed")
needs_no_ucx = pytest.mark.skipif(
    importlib.util.find_spec("distributed_ucxx") is not None, reason="distributed-ucxx installed"
)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "one document"}\n{"text": "another document"}\n')
    return path


def _fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture, out: Path) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not out.exists(), "an output was written despite the error"
    return err


def _corpus(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["corpus", str(corpus), "--out", str(out), *extra]


@needs_no_gpu
@pytest.mark.parametrize("where", [(), ("--workers", "1")], ids=["in-process", "embedded"])
def test_gpu_backend_without_a_gpu_is_one_line(corpus, tmp_path, capsys, where) -> None:
    out = tmp_path / "out"
    err = _fails_in_one_line(_corpus(corpus, out, "--backend", "gpu", *where), capsys, out)
    assert "backend 'gpu' needs" in err
    assert "use --backend cpu" in err


@needs_no_gpu
def test_gpu_backend_on_cpu_workers_of_a_running_cluster_is_one_line(
    corpus, tmp_path, capsys, dask_client: Client
) -> None:
    out = tmp_path / "out"
    argv = _corpus(corpus, out, "--backend", "gpu", "--scheduler", dask_client.scheduler.address)
    err = _fails_in_one_line(argv, capsys, out)
    assert "2 of 2 Dask workers cannot run the GPU backend" in err
    assert "dask cuda worker" in err
    assert dask_client.submit(operator.add, 1, 1).result() == 2  # the cluster is left alone


@pytest.fixture
def empty_cluster() -> Iterator[LocalCluster]:
    """A scheduler without workers: each test adds the worker it needs."""
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


def _start_worker(cluster: LocalCluster, *python_flags: str, **env: str) -> subprocess.Popen:
    command = [sys.executable, *python_flags, "-m", "distributed.cli.dask_worker"]
    worker = subprocess.Popen(
        [*command, cluster.scheduler_address, "--nthreads", "1", "--no-nanny", "--no-dashboard"],
        env={**os.environ, **env},
        cwd="/",  # not the source tree, which would make dexport importable
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not cluster.scheduler.workers:
        assert worker.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, "the worker did not join"
        time.sleep(0.1)
    return worker


def test_workers_without_dexport_are_one_line(corpus, tmp_path, capsys, empty_cluster) -> None:
    # -S: no site-packages .pth files, so no dexport; distributed itself stays importable.
    site_packages = sysconfig.get_paths()["purelib"]
    worker = _start_worker(empty_cluster, "-S", PYTHONPATH=site_packages)
    try:
        out = tmp_path / "out"
        argv = _corpus(corpus, out, "--scheduler", empty_cluster.scheduler_address)
        err = _fails_in_one_line(argv, capsys, out)
        assert "the Dask workers cannot import dexport" in err
        assert "install dexport" in err
    finally:
        worker.kill()
        worker.wait()


def test_workers_with_another_dexport_version_are_one_line(
    corpus, tmp_path, capsys, empty_cluster
) -> None:
    # Metadata found first on the worker's path: the worker reports that version.
    meta = tmp_path / "meta" / "dexport-9.9.9.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: dexport\nVersion: 9.9.9\n")
    worker = _start_worker(empty_cluster, PYTHONPATH=str(meta.parent))
    try:
        out = tmp_path / "out"
        argv = _corpus(corpus, out, "--scheduler", empty_cluster.scheduler_address)
        err = _fails_in_one_line(argv, capsys, out)
        assert "1 of 1 Dask workers run another dexport version" in err
        assert "has 9.9.9" in err
    finally:
        worker.kill()
        worker.wait()


@needs_no_ucx
def test_ucx_protocol_without_distributed_ucxx_is_one_line(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    err = _fails_in_one_line(_corpus(corpus, out, "--protocol", "ucx"), capsys, out)
    assert "distributed-ucxx" in err
    assert "--protocol tcp" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--rmm-pool-size", "16GB"), "needs --backend gpu"),
        (("--rmm-pool-size", "lots", "--backend", "gpu"), "must be a size such as 16GB"),
        (("--rmm-pool-size", "1.5", "--backend", "gpu"), "must be a size such as 16GB"),
        (
            ("--rmm-pool-size", "16GB", "--backend", "gpu", "--scheduler", "tcp://127.0.0.1:1"),
            "dask cuda worker --rmm-pool-size",
        ),
        (("--protocol", "ucx", "--scheduler", "tcp://127.0.0.1:1"), "drop --protocol"),
    ],
    ids=["cpu-backend", "not-a-size", "fraction-above-one", "running-cluster", "protocol+addr"],
)
def test_misused_cluster_options_are_one_line(corpus, tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "out"
    assert message in _fails_in_one_line(_corpus(corpus, out, *extra), capsys, out)


def test_explicit_tcp_protocol_runs_on_the_embedded_cluster(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(_corpus(corpus, out, "--protocol", "tcp", "--workers", "1", "--no-card")) == 0
    assert (out / "_manifest.json").exists()
    with get_client(workers=1, protocol="tcp") as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert client.submit(operator.add, 2, 3).result() == 5


@pytest.mark.parametrize(
    ("given", "parsed"),
    [("16GB", 16 * 10**9), ("16GiB", 16 * 2**30), ("0.9", 0.9), (1, 1), (2**34, 2**34)],
)
def test_pool_sizes_are_bytes_or_a_fraction(given, parsed) -> None:
    assert parse_pool_size(given) == parsed


@pytest.mark.parametrize("given", ["", "abc", "0", "-1GB", "1.5", True, 0.0])
def test_bad_pool_sizes_are_refused(given) -> None:
    with pytest.raises(ClusterError, match="--rmm-pool-size must be a size"):
        parse_pool_size(given)


@pytest.mark.gpu
def test_more_gpu_workers_than_visible_devices_is_one_line(
    corpus, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = tmp_path / "out"
    argv = _corpus(corpus, out, "--backend", "gpu", "--workers", "2")
    assert "CUDA_VISIBLE_DEVICES makes visible (1)" in _fails_in_one_line(argv, capsys, out)
