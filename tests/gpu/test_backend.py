"""Backend selection (gpu/backend.py): CPU everywhere, GPU only where it can run."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pandas as pd
import pytest

from gpu.backend import Backend, array_namespace, gpu_available, gpu_missing, select_backend
from gpu.errors import BackendError as UserError

needs_no_gpu = pytest.mark.skipif(gpu_available(), reason="this machine has a usable GPU backend")


def test_cpu_backend_is_numpy_and_pandas() -> None:
    backend = select_backend("cpu")
    assert backend == Backend(name="cpu", array="numpy", frame="pandas")
    assert backend.df is pd
    x = backend.from_numpy(np.arange(3, dtype=np.int32))
    assert isinstance(x, np.ndarray) and x.dtype == np.int32
    assert backend.asnumpy(x).tolist() == [0, 1, 2]


def test_backend_is_frozen() -> None:
    with pytest.raises(AttributeError):
        select_backend("cpu").name = "gpu"  # type: ignore[misc]


@needs_no_gpu
def test_auto_without_gpu_is_cpu() -> None:
    assert select_backend("auto") == select_backend("cpu")


@needs_no_gpu
def test_gpu_without_libraries_says_what_is_missing_and_what_to_do() -> None:
    with pytest.raises(UserError) as err:
        select_backend("gpu")
    message = str(err.value)
    assert message.startswith(
        "backend 'gpu' needs CuPy, cuDF, dask_cudf and a CUDA device (missing: "
    )
    assert message.endswith("; install dexport[gpu] or use --backend cpu")
    assert f"(missing: {', '.join(gpu_missing())})" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["tpu", "", "numpy"])
def test_unknown_backend_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match=r"unknown backend .*use --backend auto, cpu or gpu"):
        select_backend(name)


def test_array_namespace_numpy_and_array_api() -> None:
    assert array_namespace(np.zeros(2)) is np
    assert array_namespace(np.int64(3), np.ones(1)) is np
    strict = array_api_strict.asarray([1, 2])
    assert array_namespace(strict) is array_api_strict


def test_array_namespace_rejects_mixed_and_non_arrays() -> None:
    with pytest.raises(TypeError, match="different namespaces"):
        array_namespace(np.zeros(1), array_api_strict.asarray([1]))
    with pytest.raises(TypeError, match="got list"):
        array_namespace([1, 2])


@pytest.mark.gpu
def test_gpu_backend_uses_cupy_and_cudf() -> None:
    import cudf
    import cupy

    for name in ("gpu", "auto"):
        backend = select_backend(name)
        assert (backend.name, backend.xp, backend.df) == ("gpu", cupy, cudf)
    backend = select_backend("gpu")
    x = backend.from_numpy(np.arange(5, dtype=np.uint16))
    assert isinstance(x, cupy.ndarray)
    assert array_namespace(x) is cupy
    host = backend.asnumpy(x * 2)
    assert isinstance(host, np.ndarray) and host.dtype == np.uint16
    assert host.tolist() == [0, 2, 4, 6, 8]


def test_backend_pickles_as_module_names() -> None:
    import pickle

    strict = Backend(name="strict", array="array_api_strict", frame="pandas")
    for backend in (select_backend("cpu"), strict):
        data = pickle.dumps(backend)
        assert b"array_api_strict" in data or backend.xp is np
        assert pickle.loads(data) == backend


def test_resolve_backend_takes_names_and_backends() -> None:
    from gpu.backend import CPU, resolve_backend

    assert resolve_backend("cpu") is CPU
    assert resolve_backend("gpu").name == "gpu"  # checked where the tasks run, not here
    strict = Backend(name="strict", array="array_api_strict", frame="pandas")
    assert resolve_backend(strict) is strict
    with pytest.raises(UserError, match="unknown backend"):
        resolve_backend("cuda")
