"""Getting a client (cluster/client.py): embedded cluster, existing scheduler, passthrough."""

from __future__ import annotations

import importlib.util
import json
import operator
import os
import socket
import time

import dask.config
import psutil
import pytest
from distributed import Client, default_client
from distributed.core import Status

from cluster import dashboard_link, get_client
from cluster.client import ClusterError as UserError

LOCAL = "tcp://127.0.0.1:"


def test_embedded_cluster_is_local_and_closed_on_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default is one worker per core; pretending to have one core keeps the test cheap.
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    with get_client(threads_per_worker=2) as client:
        cluster = client.cluster
        workers = client.scheduler_info()["workers"]
        assert client.scheduler.address.startswith(LOCAL)
        assert len(workers) == 1
        assert all(address.startswith(LOCAL) for address in workers)
        assert [w["nthreads"] for w in workers.values()] == [2]
        link = dashboard_link(client)
        assert link is None or link.startswith("http://127.0.0.1:")
        assert client.submit(operator.add, 1, 2).result() == 3
        worker_pids = list(client.run(os.getpid).values())
        scheduler_port = int(client.scheduler.address.rsplit(":", 1)[1])
        # The default client while open, so distributed.wait and friends find it.
        assert default_client() is client
    assert client.status == "closed"
    assert cluster.status == Status.closed
    with pytest.raises(ValueError, match="No clients found"):
        default_client()  # the previous default (none) is back
    assert not _still_running(worker_pids), "worker processes outlived the embedded cluster"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", scheduler_port), timeout=1).close()


def test_connect_by_address_leaves_the_cluster_running(dask_client: Client) -> None:
    with get_client(scheduler=dask_client.scheduler.address) as client:
        assert client is not dask_client
        assert client.submit(operator.mul, 6, 7).result() == 42
        assert (
            client.scheduler_info()["workers"].keys()
            == dask_client.scheduler_info()["workers"].keys()
        )
        assert dashboard_link(client) == dask_client.dashboard_link
    assert client.status == "closed"
    assert dask_client.status == "running"
    assert dask_client.submit(operator.add, 2, 2).result() == 4


def test_connect_by_scheduler_file(dask_client: Client, tmp_path) -> None:
    # The same JSON a scheduler started with --scheduler-file writes.
    identity = dask_client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.identity())
    path = tmp_path / "scheduler.json"
    # skipkeys: right after a task ran, worker metrics hold tuple-keyed digests; a scheduler
    # writes its file at start, before any.
    path.write_text(json.dumps(identity, skipkeys=True))
    with get_client(scheduler_file=str(path)) as client:
        assert client.scheduler.address == dask_client.scheduler.address
        assert client.submit(operator.add, 1, 1).result() == 2
    assert dask_client.status == "running"


def test_session_clusters_are_separate(dask_client: Client, dask_client_1worker: Client) -> None:
    assert dask_client.scheduler.address != dask_client_1worker.scheduler.address
    assert len(dask_client.scheduler_info()["workers"]) == 2
    assert len(dask_client_1worker.scheduler_info()["workers"]) == 1
    # Neither fixture is dask's default scheduler, so neither changes how the other behaves.
    with pytest.raises(ValueError, match="No clients found"):
        default_client()


def test_set_as_default_false_leaves_the_default_alone(dask_client: Client) -> None:
    with get_client(scheduler=dask_client.scheduler.address, set_as_default=False) as client:
        assert client.submit(operator.add, 1, 2).result() == 3
        with pytest.raises(ValueError, match="No clients found"):
            default_client()


def test_client_passthrough_is_left_open(dask_client: Client) -> None:
    with get_client(client=dask_client) as client:
        assert client is dask_client
    assert dask_client.status == "running"


def test_missing_scheduler_file_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "nope.json"
    with dask.config.set({"distributed.comm.timeouts.connect": "0.3s"}):
        with pytest.raises(UserError, match=r"scheduler file .*nope\.json does not exist"):
            get_client(scheduler_file=path).__enter__()


def test_scheduler_file_without_address_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "scheduler.json"
    path.write_text('{"id": "Scheduler-1"}')
    with dask.config.set({"distributed.comm.timeouts.connect": "0.3s"}):
        with pytest.raises(UserError, match="holds no scheduler address"):
            get_client(scheduler_file=path).__enter__()


@pytest.mark.parametrize("address", ["localhost", "http://127.0.0.1:8786", "tcp://host:port"])
def test_malformed_scheduler_address_is_a_user_error(address: str) -> None:
    with pytest.raises(UserError, match=r"is not a Dask scheduler address .*tcp://HOST:PORT"):
        get_client(scheduler=address).__enter__()


def test_unreachable_scheduler_is_a_user_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        with pytest.raises(
            UserError, match=r"cannot connect to the Dask scheduler at 'tcp://127\.0\.0\.1:\d+'"
        ):
            get_client(scheduler=f"tcp://127.0.0.1:{port}").__enter__()
    assert time.monotonic() - start < 10


def test_a_dead_scheduler_address_fails_fast_with_the_retry_code() -> None:
    import socket

    from cluster.client import SchedulerUnreachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SchedulerUnreachable, match="cannot connect") as err:
        get_client(scheduler=f"tcp://127.0.0.1:{port}").__enter__()
    assert err.value.exit_code == 3


def test_conflicting_arguments_are_reported_together() -> None:
    with pytest.raises(UserError) as err:
        get_client(scheduler="tcp://127.0.0.1:1", scheduler_file="s.json", workers=0).__enter__()
    message = str(err.value)
    assert "--scheduler and --scheduler-file both given" in message
    assert "--workers must be at least 1" in message
    with pytest.raises(UserError, match="unknown backend 'tpu'"):
        get_client(backend="tpu").__enter__()


@pytest.mark.skipif(
    importlib.util.find_spec("dask_cuda") is not None, reason="dask_cuda is installed"
)
def test_gpu_backend_without_dask_cuda_is_a_user_error() -> None:
    with pytest.raises(
        UserError, match=r"dask_cuda.*install the gpu extra: pip install 'dexport\[gpu\]'"
    ):
        get_client(backend="gpu").__enter__()


def _still_running(pids: list[int], timeout: float = 10) -> list[int]:
    """The pids among ``pids`` that are still running after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if _running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
