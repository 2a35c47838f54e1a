"""Compute backend selection: NumPy + pandas on CPU, CuPy + cuDF on a CUDA device.

Kernels are written once against an array namespace (``xp``) and a dataframe library (``df``);
the rest of the pipeline asks this module for them and never imports CuPy or cuDF itself.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from gpu.errors import BackendError

BACKEND_NAMES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Backend:
    """The libraries one run computes with, by module name.

    ``name`` is ``"cpu"`` or ``"gpu"`` (``auto`` is resolved before a Backend exists; tests
    name their own, e.g. ``strict`` for ``array_api_strict`` in NumPy's place), ``array`` the
    array namespace's module (``numpy`` or ``cupy``) and ``frame`` the dataframe library's
    (``pandas`` or ``cudf``). Modules are imported where they are first used: on the worker
    that runs a task, so a driver without GPU libraries can drive GPU workers, and pandas
    (which pulls in PyArrow) only when a dataframe is made.

    The driver resolves the user's ``--backend`` once and every task carries the Backend it
    got; where the tasks run checks that it can serve it (``pipeline.runtime.executor`` for this
    machine, ``cluster.client`` for a running cluster's workers).
    """

    name: str
    array: str = "numpy"
    frame: str = "pandas"

    @property
    def xp(self) -> ModuleType:
        """The array namespace (``numpy``, ``cupy``, ...)."""
        return _import(self.array)

    @property
    def df(self) -> ModuleType:
        """The dataframe library (``pandas`` or ``cudf``)."""
        return _import(self.frame)

    def asnumpy(self, x: Any) -> np.ndarray:
        """Return ``x`` as a NumPy array in host memory (copies from the device on GPU)."""
        if type(x).__module__.split(".")[0] == "cupy":
            return x.get()
        return np.asarray(x)

    def dataframe(self, columns: dict[str, Any]) -> Any:
        """A dataframe of this backend's library from 1-D columns (arrays of this backend, or
        lists): cuDF takes CuPy arrays as they are, pandas gets NumPy arrays."""
        if self.frame == "pandas":
            columns = {k: v if isinstance(v, list) else self.asnumpy(v) for k, v in columns.items()}
        return self.df.DataFrame(columns)

    @staticmethod
    def frame_to_host(x: Any) -> Any:
        """A dataframe or series as pandas in host memory (cuDF objects are copied)."""
        to_pandas = getattr(x, "to_pandas", None)
        return to_pandas() if to_pandas is not None else x

    def from_numpy(self, x: Any) -> Any:
        """Return ``x`` as an array of this backend (copies to the device on GPU; NumPy arrays
        stay as they are on the CPU backend)."""
        return self.xp.asarray(x)


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"this process cannot import {module} for the compute backend ({exc}); install "
            "dexport[gpu] where the tasks run, or use --backend cpu"
        ) from None


CPU = Backend(name="cpu")
GPU = Backend(name="gpu", array="cupy", frame="cudf")


def select_backend(name: str) -> Backend:
    """Return the backend for ``name`` (``cpu``, ``gpu`` or ``auto``).

    ``auto`` picks the GPU only when CuPy, cuDF and dask_cudf import and a CUDA device is
    visible; otherwise the CPU. Asking for ``gpu`` without them, or for an unknown name, raises
    :class:`~gpu.errors.BackendError`.
    """
    key = str(name).strip().lower()
    if key not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; use --backend auto, cpu or gpu")
    if key == "cpu":
        return CPU
    missing = gpu_missing()
    if not missing:
        return GPU
    if key == "auto":
        return CPU
    raise BackendError(
        "backend 'gpu' needs CuPy, cuDF, dask_cudf and a CUDA device (missing: "
        f"{', '.join(missing)}); "
        "install dexport[gpu] or use --backend cpu"
    )


def resolve_backend(choice: str | Backend) -> Backend:
    """The Backend a run computes with: a Backend as is; ``gpu`` without checking this machine
    (its tasks may run on a cluster's GPU workers: the executor checks where they run);
    ``cpu`` and ``auto`` through :func:`select_backend`. Jobs call this once on the driver and
    put the result into every task."""
    if isinstance(choice, Backend):
        return choice
    if str(choice).strip().lower() == "gpu":
        return GPU
    return select_backend(choice)


def gpu_available() -> bool:
    """True when the GPU backend can run here (libraries import and a device is visible)."""
    return not gpu_missing()


@functools.cache
def gpu_missing() -> tuple[str, ...]:
    """Names of what the GPU backend lacks on this machine; empty when it is usable.

    Cached: importing cuDF takes seconds and the answer does not change within a process.
    """
    missing: list[str] = []
    cupy = _try_import("cupy")
    if cupy is None:
        missing.append("CuPy")
    elif _device_count(cupy) < 1:
        missing.append("a CUDA device")
    # cuDF and dask_cudf are probed even when something is already missing, so the error
    # names everything the user has to fix in one go.
    if _try_import("cudf") is None:
        missing.append("cuDF")
    if _try_import("dask_cudf") is None:
        missing.append("dask_cudf")
    return tuple(missing)


def array_namespace(x: Any, *more: Any) -> ModuleType:
    """Return the array namespace of ``x`` (and of ``more``, which must share it).

    NumPy arrays give ``numpy``, CuPy arrays give ``cupy``; any other array-API array (e.g.
    ``array_api_strict``, used in tests to catch calls CuPy lacks) gives its own namespace.
    """
    namespaces = {_namespace_of(a) for a in (x, *more)}
    if len(namespaces) > 1:
        names = sorted(ns.__name__ for ns in namespaces)
        raise TypeError(f"arrays come from different namespaces: {', '.join(names)}")
    return namespaces.pop()


def _namespace_of(x: Any) -> ModuleType:
    if isinstance(x, np.ndarray | np.generic):
        return np
    # Checked by module name so that CuPy is never imported just to classify an array.
    if type(x).__module__.split(".")[0] == "cupy":
        return importlib.import_module("cupy")
    get_namespace = getattr(x, "__array_namespace__", None)
    if get_namespace is not None:
        return get_namespace()
    raise TypeError(f"expected a NumPy, CuPy or array-API array, got {type(x).__name__}")


def _try_import(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except Exception:
        # Not only ImportError: GPU libraries can raise CUDA or OS errors at import time when
        # the driver or runtime libraries are missing, which means the same thing here.
        return None


def _device_count(cupy: ModuleType) -> int:
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        # CUDARuntimeError when no driver or device is present: treated as zero devices.
        return 0
