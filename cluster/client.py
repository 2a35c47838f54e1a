"""One way to get a ``distributed.Client``.

Four sources, in order of precedence: a client the caller already has (Python API), an
existing scheduler by address (``--scheduler``) or scheduler file (``--scheduler-file``), or an
embedded cluster started here (``cluster.local``): a ``LocalCluster`` bound to 127.0.0.1 for
the CPU backend, a ``dask_cuda.LocalCUDACluster`` for the GPU backend, over TCP or UCX. Only
what was started here is closed here.

Jobs receive the client explicitly. A client created here is still the process's default
while it is open (``set_as_default=True``, restored on close) because distributed's own helpers
(``distributed.wait``, ``progress``, ``dask.compute`` of collections) look for the default
client; pass ``set_as_default=False`` to leave a caller's default untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed import Client
from distributed.comm.addressing import parse_address, parse_host_port
from distributed.comm.registry import get_backend
from distributed.deploy import Cluster

from cluster.errors import ClusterError, SchedulerUnreachable
from cluster.local import (
    PROTOCOLS,
    check_embedded,
    main_script_hidden,
    parse_pool_size,
    start_embedded,
)

__all__ = ["ClusterError", "SchedulerUnreachable", "dashboard_link", "get_client"]


@contextlib.contextmanager
def get_client(
    scheduler: str | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    backend: str = "cpu",
    threads_per_worker: int = 1,
    *,
    protocol: str | None = None,
    rmm_pool_size: str | int | float | None = None,
    client: Client | None = None,
    set_as_default: bool = True,
) -> Iterator[Client]:
    """Yield a connected ``Client``; on exit close only what this call started.

    - ``client``: yielded as is and left open (the caller owns it).
    - ``scheduler`` (address such as ``tcp://host:8786``) or ``scheduler_file``: connect to a
      running cluster; on exit the client closes, the cluster keeps running.
    - otherwise: start an embedded cluster on 127.0.0.1 with ``workers`` worker processes
      (default: one per core, or one per visible GPU for ``backend="gpu"``) of
      ``threads_per_worker`` threads each, and shut it down on exit.

    ``backend`` (``cpu``, ``gpu`` or ``auto``) chooses the kind of embedded cluster; with a
    scheduler, ``gpu`` checks that its workers can run the GPU backend. ``protocol`` (``tcp``,
    the default, or ``ucx``) and ``rmm_pool_size`` (bytes such as ``"16GB"`` or a fraction of
    each GPU's memory such as ``0.9``; GPU backend only) apply to the embedded cluster: a
    running cluster was set up by whoever started it. ``set_as_default`` applies to the clients
    this call creates (see the module docstring). Conflicting or invalid arguments, an
    unreachable scheduler (exit status 3) and a library or device the cluster needs but this
    machine lacks raise :class:`ClusterError` before any process starts; so do the workers of
    a running cluster that lack dexport, run another version of it, or (``backend="gpu"``)
    cannot run the GPU backend.
    """
    _check_arguments(
        scheduler, scheduler_file, workers, backend, threads_per_worker, client, protocol
    )
    pool = None if rmm_pool_size is None else parse_pool_size(rmm_pool_size)
    if pool is not None and (client is not None or scheduler or scheduler_file):
        raise ClusterError(
            "--rmm-pool-size only applies to the embedded GPU cluster; give it to the workers "
            "of a running cluster instead (dask cuda worker --rmm-pool-size 16GB)"
        )
    if pool is not None and backend == "cpu":
        raise ClusterError(
            "--rmm-pool-size is a memory pool on each GPU: it needs --backend gpu (or auto)"
        )
    if client is not None:
        yield client
    elif scheduler is not None or scheduler_file is not None:
        connected = _connect(scheduler, scheduler_file, set_as_default)
        try:
            _check_workers(connected, backend)
            yield connected
        finally:
            # Closing the client disconnects; it does not shut the remote cluster down.
            connected.close()
    else:
        protocol = protocol or "tcp"
        backend = check_embedded(backend, workers, protocol, pool)
        # The user's script stays hidden until the cluster is closed: see main_script_hidden.
        with main_script_hidden():
            cluster = start_embedded(backend, workers, threads_per_worker, protocol, pool)
            try:
                with Client(cluster, set_as_default=set_as_default) as started:
                    yield started
            finally:
                _close_cluster(cluster)


CLOSE_TIMEOUT_S = 20.0


def _close_cluster(cluster: Cluster) -> None:
    """Stop an embedded cluster, bounded in time.

    After workers were killed and their nannies are still restarting them, ``close`` can wait
    forever; past :data:`CLOSE_TIMEOUT_S` the worker processes are killed instead.
    """
    import multiprocessing

    try:
        cluster.close(timeout=CLOSE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - a cluster that will not stop is stopped by force
        for child in multiprocessing.active_children():
            child.kill()


def dashboard_link(client: Client) -> str | None:
    """Return the URL of the scheduler's dashboard, or None when it serves none."""
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError, OSError):
        # A remote scheduler without the dashboard service has no "dashboard" entry.
        return None
    return link or None


def _check_arguments(
    scheduler: str | None,
    scheduler_file: str | os.PathLike[str] | None,
    workers: int | None,
    backend: str,
    threads_per_worker: int,
    client: Client | None,
    protocol: str | None,
) -> None:
    problems = []
    if scheduler is not None and scheduler_file is not None:
        problems.append("--scheduler and --scheduler-file both given; pass only one")
    if client is not None and (scheduler is not None or scheduler_file is not None):
        problems.append("a client and a scheduler both given; pass only one")
    if workers is not None and (
        client is not None or scheduler is not None or scheduler_file is not None
    ):
        problems.append(
            "--workers only applies to the embedded cluster; drop it when connecting to a scheduler"
        )
    if workers is not None and workers < 1:
        problems.append(f"--workers must be at least 1 (got {workers})")
    if threads_per_worker < 1:
        problems.append(f"threads_per_worker must be at least 1 (got {threads_per_worker})")
    if backend not in ("cpu", "gpu", "auto"):
        problems.append(f"unknown backend {backend!r}; use --backend auto, cpu or gpu")
    if protocol is not None and protocol not in PROTOCOLS:
        problems.append(f"unknown protocol {protocol!r}; use --protocol tcp or ucx")
    elif protocol is not None and (
        client is not None or scheduler is not None or scheduler_file is not None
    ):
        problems.append(
            "--protocol only applies to the embedded cluster; a running cluster's protocol is "
            "part of its scheduler address (tcp://, ucxx://): drop --protocol"
        )
    if problems:
        raise ClusterError("; ".join(problems))


def _connect(
    scheduler: str | None, scheduler_file: str | os.PathLike[str] | None, set_as_default: bool
) -> Client:
    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    if scheduler_file is not None:
        # Client(scheduler_file=...) would wait forever for a file that never appears (a typo);
        # waiting as long as a connection attempt keeps the "scheduler still starting" case.
        scheduler = _read_scheduler_file(os.fspath(scheduler_file), timeout)
        source = f"scheduler file {os.fspath(scheduler_file)}"
    else:
        source = "--scheduler"
    _check_address(scheduler, source)
    _probe(scheduler, source, min(timeout, PROBE_TIMEOUT_S))
    try:
        return Client(scheduler, timeout=timeout, set_as_default=set_as_default)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SchedulerUnreachable(
            f"cannot connect to the Dask scheduler at {scheduler!r} ({reason}); "
            f"check {source} and that the scheduler is running"
        ) from None


PROBE_TIMEOUT_S = 5.0


def _probe(address: str, source: str, timeout: float) -> None:
    """One TCP connection attempt, so a dead address fails in seconds, not after retries."""
    import socket

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    host, port = parse_host_port(location)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SchedulerUnreachable(
            f"cannot connect to the Dask scheduler at {address!r} ({reason}); "
            f"check {source} and that the scheduler is running, then retry"
        ) from None


def _check_address(address: str, source: str) -> None:
    # Checked here because a Client that fails on a malformed address is left half open and
    # prints a traceback when garbage-collected, which would spoil the one-line error.
    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as exc:
        raise ClusterError(
            f"{address!r} is not a Dask scheduler address ({exc}); "
            f"check {source}: it must look like tcp://HOST:PORT"
        ) from None


def _read_scheduler_file(path: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                address = json.load(f)["address"]
            if isinstance(address, str) and address:
                return address
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError):
            # The scheduler may be writing the file right now; judge it only at the deadline.
            pass
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not os.path.exists(path):
        raise ClusterError(
            f"scheduler file {path} does not exist; start the scheduler with --scheduler-file "
            f"{path} or fix the path"
        )
    raise ClusterError(
        f"scheduler file {path} holds no scheduler address; pass the file written by 'dask "
        "scheduler --scheduler-file'"
    )


def worker_report(check_gpu: bool) -> dict[str, Any]:
    """What a worker says about itself: its dexport version and, when ``check_gpu``, what it
    lacks for the GPU backend. Run on every worker; that it runs at all shows that the worker
    can import dexport."""
    report: dict[str, Any] = {"version": dexport_version()}
    if check_gpu:
        from gpu.backend import gpu_missing

        report["gpu_missing"] = list(gpu_missing())
    return report


def dexport_version() -> str:
    """The installed dexport version (``0+unknown`` for a source tree that was not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dexport")
    except PackageNotFoundError:
        return "0+unknown"


def _check_workers(client: Client, backend: str) -> None:
    """Refuse a running cluster whose workers cannot run this job as asked.

    A worker without dexport cannot even load a task (Dask then waits on it forever), and one
    with another version could write other bytes; with ``--backend gpu`` every worker must be
    able to run the GPU backend.
    """
    try:
        reports = client.run(worker_report, backend == "gpu")
    except Exception as exc:  # noqa: BLE001 - the worker's error comes back wrapped
        if "No module named" not in str(exc):
            raise
        raise ClusterError(
            f"the Dask workers cannot import dexport ({exc}); install dexport {dexport_version()} "
            "(the version used here) on every worker"
        ) from None
    here = dexport_version()
    other = {w: r["version"] for w, r in reports.items() if r["version"] != here}
    if other:
        worker, version = sorted(other.items())[0]
        raise ClusterError(
            f"{len(other)} of {len(reports)} Dask workers run another dexport version ({worker} "
            f"has {version}, this machine {here}); install dexport {here} on every worker"
        )
    lacking = {w: r["gpu_missing"] for w, r in reports.items() if r.get("gpu_missing")}
    if lacking:
        worker, what = sorted(lacking.items())[0]
        raise ClusterError(
            f"--backend gpu: {len(lacking)} of {len(reports)} Dask workers cannot run the GPU "
            f"backend ({worker} lacks {', '.join(what)}); start GPU workers with 'dask cuda "
            f"worker' where dexport[gpu] is installed, or use --backend cpu"
        )


def _quiet_logs() -> None:
    """Keep distributed's own logs off the terminal unless ``DEXPORT_DEBUG`` is set.

    It logs every worker start and stop at INFO, and when workers are lost it logs a traceback
    for each nanny restart cancelled at shutdown; dexport says what happened in one line.
    """
    level = logging.DEBUG if os.environ.get("DEXPORT_DEBUG") else logging.CRITICAL
    for name in [*logging.root.manager.loggerDict, "distributed", "asyncio", "tornado"]:
        if name.split(".")[0] in ("distributed", "dask", "bokeh", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(level)


_quiet_logs()
