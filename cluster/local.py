"""The embedded cluster: a ``LocalCluster`` for the CPU backend, ``dask_cuda.LocalCUDACluster``
(one worker per visible GPU) for the GPU backend, over TCP or UCX.

Everything such a cluster needs is checked by :func:`check_embedded` before any process
starts, so a missing library or a device that is not there ends in one line (exit 2) instead
of a worker traceback. While it runs, :func:`main_script_hidden` keeps its worker processes
from running the user's script again (the Python API from an unguarded script).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

from dask.utils import parse_bytes
from distributed import LocalCluster
from distributed.deploy import Cluster

from cluster.errors import GPU_EXTRA_FIX, ClusterError

LOCALHOST = "127.0.0.1"
PROTOCOLS = ("tcp", "ucx")
# The address scheme of each --protocol: distributed's own "ucx" comm was removed with UCX-Py;
# UCX now comes from the distributed-ucxx package, which registers the "ucxx" scheme.
SCHEMES = {"tcp": "tcp", "ucx": "ucxx"}
UCX_FIX = (
    "--protocol ucx needs the UCX comm backend (distributed-ucxx), which is not installed; "
    "pip install distributed-ucxx-cu12 (or -cu13 for CUDA 13), or use --protocol tcp"
)


def parse_pool_size(value: str | int | float) -> int | float:
    """An RMM pool size: bytes (``16GB``, ``17179869184``) or a fraction of device memory
    (``0.9``), as dask-cuda takes it. Raises :class:`ClusterError` for anything else."""
    problem = ClusterError(
        f"--rmm-pool-size must be a size such as 16GB or a fraction of each GPU's memory such "
        f"as 0.9 (got {value!r})"
    )
    if isinstance(value, bool):
        raise problem
    if isinstance(value, int | float):
        number: float = value
    else:
        text = str(value).strip()
        if not text:
            raise problem
        try:
            number = float(text)
        except ValueError:
            try:
                number = parse_bytes(text)
            except (ValueError, TypeError):
                raise problem from None
    if not number > 0 or (number > 1 and number != int(number)):
        raise problem
    return number if number <= 1 else int(number)


def visible_devices() -> list[str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` names (indices or UUIDs), or None when it is unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [device.strip() for device in value.split(",") if device.strip()]


def check_embedded(
    backend: str, workers: int | None, protocol: str, rmm_pool_size: int | float | None
) -> str:
    """Check that this machine can run the embedded cluster asked for; return the backend it
    will use (``auto`` resolved to ``cpu`` or ``gpu``). Raises :class:`ClusterError` (exit 2)
    naming what is missing and how to get it."""
    if protocol == "ucx" and importlib.util.find_spec("distributed_ucxx") is None:
        raise ClusterError(UCX_FIX)
    if backend == "cpu":
        return backend
    from gpu.backend import gpu_missing

    missing = list(gpu_missing())  # CuPy, cuDF, dask_cudf, a visible device
    if backend == "auto" and missing:
        return "cpu"
    if importlib.util.find_spec("dask_cuda") is None:
        missing.append("dask_cuda")
    if rmm_pool_size is not None and importlib.util.find_spec("rmm") is None:
        missing.append("rmm (for --rmm-pool-size)")
    if missing:
        raise ClusterError(
            "backend 'gpu' needs CuPy, cuDF, dask_cudf, dask_cuda and a CUDA device (missing: "
            f"{', '.join(missing)}); {GPU_EXTRA_FIX}, or use --backend cpu"
        )
    devices = visible_devices()
    if workers is not None and devices is not None and workers > len(devices):
        raise ClusterError(
            f"--workers {workers} asks for more GPU workers than CUDA_VISIBLE_DEVICES makes "
            f"visible ({len(devices)}); the GPU cluster runs one worker per GPU: use --workers "
            f"{len(devices)} or fewer, or leave --workers out"
        )
    return "gpu"


def start_embedded(
    backend: str,
    workers: int | None,
    threads_per_worker: int,
    protocol: str,
    rmm_pool_size: int | float | None,
) -> Cluster:
    """Start the embedded cluster on 127.0.0.1; ``backend`` is ``cpu`` or ``gpu`` (resolved)."""
    common = {
        "threads_per_worker": threads_per_worker,
        "host": LOCALHOST,
        "protocol": f"{SCHEMES[protocol]}://",
        # Port 0: a free port, so several runs (and tests) on one machine never collide.
        "dashboard_address": f"{LOCALHOST}:0",
        "silence_logs": logging.DEBUG if os.environ.get("DEXPORT_DEBUG") else logging.CRITICAL,
    }
    if backend == "gpu":
        from dask_cuda import LocalCUDACluster

        devices = visible_devices()
        with _children_ignore_sigint():
            # n_workers=None: one worker per visible GPU; each worker sees only its own GPU.
            return LocalCUDACluster(
                CUDA_VISIBLE_DEVICES=None if devices is None else ",".join(devices),
                n_workers=workers,
                rmm_pool_size=rmm_pool_size,
                **common,
            )
    with _children_ignore_sigint():
        return LocalCluster(processes=True, n_workers=workers or os.cpu_count() or 1, **common)


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (inherited across fork and exec).

    Ctrl-C in a terminal signals the whole process group: without this every worker would
    print its own KeyboardInterrupt traceback while the driver cancels the run and exits 130.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# The attributes by which multiprocessing's "spawn" finds the main module to re-run in a child.
_MAIN_ATTRIBUTES = ("__file__", "__spec__")
_hidden_lock = threading.Lock()
_hidden_users = 0
_hidden_module: object = None
_hidden_saved: dict[str, object] = {}


@contextlib.contextmanager
def main_script_hidden() -> Iterator[None]:
    """While open, worker processes started by this process do not re-run its ``__main__``.

    The "spawn" start method, which distributed's nannies use (the default of
    ``distributed.worker.multiprocessing-method``; dask_cuda's nannies are the same class),
    re-runs the parent's main module in every child, by path (``__main__.__file__``) or, after
    ``python -m``, by name (``__main__.__spec__``). A user's script without an ``if __name__ ==
    "__main__":`` guard would then call dexport again in every worker, which starts workers
    again: the run hangs. dexport's tasks are functions of its own modules, pickled by
    reference, so its workers never need ``__main__``; for as long as the embedded cluster
    lives (a nanny replacing a lost worker spawns again), ``__main__`` has neither attribute.
    Other threads of this process see it so meanwhile. Uses may nest or overlap (several
    clusters open at once): the last one to close restores both attributes.
    """
    global _hidden_users, _hidden_module
    with _hidden_lock:
        if _hidden_users == 0:
            main = sys.modules.get("__main__")
            _hidden_module = main
            _hidden_saved.clear()
            for name in _MAIN_ATTRIBUTES:
                if main is not None and name in vars(main):
                    _hidden_saved[name] = vars(main)[name]
            if "__file__" in _hidden_saved:
                del main.__file__
            if "__spec__" in _hidden_saved:
                main.__spec__ = None  # spawn reads __main__.__spec__ unguarded: keep the name
        _hidden_users += 1
    try:
        yield
    finally:
        with _hidden_lock:
            _hidden_users -= 1
            if _hidden_users == 0:
                for name, value in _hidden_saved.items():
                    setattr(_hidden_module, name, value)
                _hidden_saved.clear()
                _hidden_module = None
