"""The one task runner: order, bounded in flight, resume skipping, shared payloads, failures."""

from __future__ import annotations

import io
import os
import signal
import time

import pytest

from pipeline.errors import TemporaryFailure, UserError
from pipeline.runtime.executor import DaskExecutor, LocalExecutor, open_executor
from pipeline.runtime.progress import Progress
from pipeline.runtime.runner import Task, run_tasks


def square_after(x: int, delay: float, offset: int = 0) -> int:
    time.sleep(delay)
    return x * x + offset


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise UserError(f"record {x} is bad")
    time.sleep(0.01)
    return x


class Counting:
    """A payload that counts how often it is pickled (sent to a worker)."""

    sent = 0

    def __reduce__(self):
        Counting.sent += 1
        return (Counting, ())


def uses_payload(x: int, payload: Counting) -> int:
    assert isinstance(payload, Counting)
    return x


@pytest.fixture(params=["local", "local-processes", "dask"])
def executor(request, dask_client):
    if request.param.startswith("local"):
        ex = LocalExecutor(2, processes=request.param == "local-processes")
        yield ex
        ex.close()
    else:
        yield DaskExecutor(dask_client)


def test_results_in_task_order_whatever_finishes_first(executor):
    # Later tasks finish first: results still come back in task order.
    tasks = [Task(f"t{i}", (i, 0.05 * (5 - i))) for i in range(6)]
    assert run_tasks(executor, square_after, tasks) == [i * i for i in range(6)]


def test_finished_tasks_are_not_run_again(executor):
    tasks = [Task(f"t{i}", (i, 0.0)) for i in range(5)]
    assert run_tasks(executor, square_after, tasks, finished={"t1": -1, "t3": -3}) == [
        0,
        -1,
        4,
        -3,
        16,
    ]


def test_each_result_is_handed_over_as_it_arrives(executor):
    """``on_result`` sees every key once (finished ones too), on the calling thread, and what
    it returns is the task's result."""
    import threading

    seen: list[tuple[str, int, str]] = []

    def keep(key: str, value: int) -> str:
        seen.append((key, value, threading.current_thread().name))
        return f"{key}={value}"

    tasks = [Task(f"t{i}", (i, 0.03 * (4 - i))) for i in range(5)]
    got = run_tasks(executor, square_after, tasks, finished={"t2": -2}, on_result=keep)
    assert got == ["t0=0", "t1=1", "t2=-2", "t3=9", "t4=16"]
    squares = [0, 1, -2, 9, 16]
    assert sorted((k, v) for k, v, _ in seen) == [(f"t{i}", v) for i, v in enumerate(squares)]
    assert {name for _, _, name in seen} == {threading.current_thread().name}


def record_pull(i: int, pulled: list[int], seen: list[tuple[int, int]]) -> int:
    seen.append((i, len(pulled)))
    time.sleep(0.005)
    return i


def test_tasks_are_pulled_lazily_and_bounded():
    executor = LocalExecutor(2)
    pulled: list[int] = []
    seen: list[tuple[int, int]] = []

    def tasks():
        for i in range(40):
            pulled.append(i)
            yield Task(f"t{i}", (i, pulled, seen))

    assert run_tasks(executor, record_pull, tasks()) == list(range(40))
    executor.close()
    # When task i ran, the generator was never more than ``slots`` tasks ahead of it.
    assert max(n - i for i, n in seen) <= executor.slots


def test_first_error_is_raised_as_is(executor):
    tasks = [Task(f"t{i}", (i, 3)) for i in range(10)]
    with pytest.raises(UserError, match="record 3 is bad"):
        run_tasks(executor, fail_on, tasks)


def test_shared_payload_is_sent_once_not_per_task(dask_client):
    Counting.sent = 0
    tasks = [Task(f"t{i}", (i,)) for i in range(12)]
    assert run_tasks(DaskExecutor(dask_client), uses_payload, tasks, shared=(Counting(),)) == list(
        range(12)
    )
    assert Counting.sent <= 3  # scattered once (one pickle, maybe one per worker), not 12


def test_a_dask_cluster_without_workers_is_a_temporary_failure(monkeypatch):
    from distributed import Client, LocalCluster

    import pipeline.runtime.executor as executor_module

    monkeypatch.setattr(executor_module, "NO_WORKERS_TIMEOUT_S", 1.0)
    with LocalCluster(
        n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        with Client(cluster, set_as_default=False) as client:
            ex = DaskExecutor(client)
            ex.slots = 2
            t0 = time.monotonic()
            with pytest.raises(TemporaryFailure, match="--resume"):
                run_tasks(ex, square_after, [Task("t0", (1, 0.0))])
            assert time.monotonic() - t0 < 30


def pid_of_task(_: int) -> int:
    time.sleep(0.05)
    return os.getpid()


def die(_: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def test_forked_workers_run_tasks_outside_this_process():
    executor = LocalExecutor(2, processes=True)
    try:
        pids = set(run_tasks(executor, pid_of_task, [Task(f"t{i}", (i,)) for i in range(6)]))
    finally:
        executor.close()
    assert os.getpid() not in pids and len(pids) == 2


def test_a_killed_forked_worker_is_a_temporary_failure():
    executor = LocalExecutor(2, processes=True)
    try:
        with pytest.raises(TemporaryFailure, match="worker process of this run died.*--resume"):
            run_tasks(executor, die, [Task("t0", (0,))])
    finally:
        executor.close()


def test_small_jobs_run_in_process_and_clusters_when_asked():
    with open_executor(tasks=3) as ex:
        assert ex.name == "local"
    with open_executor(in_process=True, tasks=10_000) as ex:
        assert ex.name == "local"


def test_forked_workers_only_for_the_cpu_backend():
    with open_executor(tasks=3, processes=True) as ex:
        assert ex.processes
    # "auto" may pick a GPU, whose CUDA context a forked child could not use: threads.
    with open_executor(tasks=3, processes=True, backend="auto") as ex:
        assert not ex.processes


def test_progress_writes_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    bar = Progress(10, "dexport test", stream=stream, interval=0.0)
    for _ in range(10):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines and lines[-1].startswith("dexport test: 10/10 parts (100%)")
    assert all("parts/s" in line for line in lines)
    assert len(lines) == 10  # the last line is not written twice by close()


def test_progress_is_silent_when_disabled():
    stream = io.StringIO()
    bar = Progress(3, "x", stream=stream, enabled=False, interval=0.0)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""
