"""Where tasks run: in this process (threads) or on a Dask cluster, behind one small interface.

A small job runs in the calling process on a thread pool: no cluster to start or stop, no
worker processes that import the libraries again (and nothing that could re-run a user's
unguarded script). Jobs whose tasks are Python code holding the GIL (corpus partitions) use
processes forked from this one instead: they start in milliseconds with everything already
imported. A larger job, or any job given ``--workers``, ``--scheduler`` or a client, runs on
Dask. Task ``k`` writes part ``k`` on each, so the choice never changes the bytes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pipeline.errors import TemporaryFailure

# Jobs with at most this many tasks run in-process when no cluster was asked for.
SMALL_JOB_TASKS = 8
# A cluster without a single worker for this long is lost: end with exit 3 instead of waiting.
NO_WORKERS_TIMEOUT_S = float(os.environ.get("DEXPORT_NO_WORKERS_TIMEOUT", "60"))


class LocalExecutor:
    """Tasks on a thread pool of this process (the kernels release the GIL), or with
    ``processes=True`` on processes forked from it (tasks that hold the GIL).

    The processes are forked here, when the executor is made: before the run starts its own
    threads (the output lock's heartbeat), so a child never inherits a lock held by one. They
    ignore Ctrl-C (this process cancels the run and waits for them, as it would for threads)
    and die with it. Elsewhere than on Linux, or with one worker, threads are used.
    """

    name = "local"

    def __init__(self, threads: int | None = None, *, processes: bool = False) -> None:
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.slots = 2 * self.threads
        # Linux only: macOS system libraries are not safe to use in a forked child.
        self.processes = processes and self.threads > 1 and sys.platform.startswith("linux")
        if self.processes:
            self._pool: cf.Executor = cf.ProcessPoolExecutor(
                self.threads,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_start_forked_worker,
            )
            self._pool.submit(int).result()  # forks every worker now (see above)
        else:
            self._pool = cf.ThreadPoolExecutor(self.threads, thread_name_prefix="dexport")

    @property
    def shares_memory(self) -> bool:
        """Whether tasks run in this process, so a result may be a large buffer at no cost."""
        return not self.processes

    def share(self, value: Any) -> Any:
        """Make ``value`` available to every task (here: the object itself)."""
        return value

    def submit(self, fn: Any, *args: Any, key: str) -> cf.Future:
        """Start ``fn(*args)``."""
        return self._pool.submit(fn, *args)

    def wait(self, futures: list[Any], timeout: float) -> list[Any]:
        """The futures of ``futures`` that finished, waiting up to ``timeout`` for the first."""
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, future: cf.Future) -> Any:
        """The result of a finished task (or its error, raised)."""
        return future.result()

    def check_alive(self) -> None:
        """This process is the cluster: always alive."""

    def cancel(self, futures: list[Any]) -> None:
        """Drop tasks not started yet (a running thread finishes its task)."""
        for future in futures:
            future.cancel()

    def drain(self, futures: list[Any], timeout: float) -> None:
        """Wait until every task in ``futures`` has stopped (so none writes after a cleanup)."""
        cf.wait(futures, timeout=timeout)

    def close(self) -> None:
        """Release the threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _start_forked_worker() -> None:
    """Set up a worker process forked by :class:`LocalExecutor`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for the run
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's (which stops a run)
    if sys.platform.startswith("linux"):
        # Die with the parent (kill -9 included) rather than linger as an orphan.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The command line turns the collector off for start-up (``pipeline.cli``); tasks need it.
    gc.freeze()
    gc.enable()


PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


class DaskExecutor:
    """Tasks on a ``distributed.Client`` (an embedded cluster or one the user runs)."""

    name = "dask"
    shares_memory = False  # results travel from the workers: parts go through files

    def __init__(self, client: Any) -> None:
        from distributed import as_completed

        self.client = client
        self.slots = max(2, 2 * sum(client.nthreads().values()))
        self._completed = as_completed(loop=client.loop)
        self._no_workers_since: float | None = None
        self._last_check = 0.0

    def share(self, value: Any) -> Any:
        """Send ``value`` to every worker once; tasks receive it by reference."""
        return self.client.scatter(value, broadcast=True, hash=False)

    def submit(self, fn: Any, *args: Any, key: str) -> Any:
        """Start ``fn(*args)`` under the task key ``key``."""
        future = self.client.submit(fn, *args, key=key, pure=False)
        self._completed.add(future)
        return future

    def wait(self, futures: list[Any], timeout: float) -> list[Any]:
        """Finished futures (polls: ``as_completed`` has no timeout of its own)."""
        deadline = time.monotonic() + timeout
        while True:
            ready = (
                [f for f in self._completed.next_batch(block=False)]
                if self._completed.has_ready()
                else []
            )
            if ready or time.monotonic() >= deadline:
                return ready
            time.sleep(0.02)

    def result(self, future: Any) -> Any:
        """A finished task's result (or its error, raised), waiting only while the cluster lives.

        A result stays in its worker's memory until fetched. When that worker dies first, Dask
        runs the task again once a worker is back: with none left, ``future.result()`` would
        wait forever. So fetch in bounded steps and check the cluster in between. (Fetching
        with ``errors="skip"``: a fetch given up on then leaves no orphaned task that would log
        an ``AllExit`` traceback when the future is cancelled.)
        """
        while True:
            if future.status in ("error", "cancelled"):
                return future.result()  # raises the task's error
            if future.status == "finished":
                with contextlib.suppress(TimeoutError):
                    got = self.client.sync(
                        self.client._gather, [future], errors="skip", callback_timeout=10.0
                    )
                    if got:
                        return got[0]
            else:  # lost with its worker: computed again once a worker is back
                time.sleep(0.05)
            self.check_alive()

    def check_alive(self) -> None:
        """Raise TemporaryFailure when the scheduler is gone or has had no worker for too long."""
        now = time.monotonic()
        if now - self._last_check < 2.0:
            return
        self._last_check = now
        try:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        except Exception as exc:  # noqa: BLE001 - any failure to reach the scheduler
            raise TemporaryFailure(
                f"lost the Dask scheduler ({type(exc).__name__}); "
                "finished parts are kept: re-run with --resume"
            ) from None
        if workers:
            self._no_workers_since = None
            return
        self._no_workers_since = self._no_workers_since or now
        if now - self._no_workers_since > NO_WORKERS_TIMEOUT_S:
            raise TemporaryFailure(
                f"every Dask worker was lost and none came back in {NO_WORKERS_TIMEOUT_S:.0f} s; "
                "finished parts are kept: re-run with --resume"
            )

    def cancel(self, futures: list[Any]) -> None:
        """Cancel tasks (a task already running on a worker runs to its end)."""
        with contextlib.suppress(Exception):
            self.client.cancel(futures)

    def drain(self, futures: list[Any], timeout: float) -> None:
        """Wait until the tasks in ``futures`` finished or failed (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            time.sleep(0.05)

    def close(self) -> None:
        """Nothing to release: the client belongs to whoever opened it."""


@contextlib.contextmanager
def open_executor(
    *,
    client: Any = None,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    workers: int | None = None,
    backend: str = "cpu",
    tasks: int | None = None,
    in_process: bool | None = None,
    processes: bool = False,
    protocol: str | None = None,
    rmm_pool_size: str | int | float | None = None,
) -> Iterator[LocalExecutor | DaskExecutor]:
    """The executor a run should use.

    ``client``, ``scheduler``, ``scheduler_file``, ``workers``, ``protocol="ucx"`` or
    ``rmm_pool_size`` mean Dask, exactly as given (see ``cluster.get_client``). Otherwise
    ``in_process=True`` (the Python API's default) or a job of at most
    :data:`SMALL_JOB_TASKS` tasks runs on threads of this process (``processes=True``: on
    processes forked from it), and a larger one on an embedded cluster that is stopped when
    the run ends. ``backend="gpu"`` without a usable
    GPU backend here (or on a scheduler's workers) fails with one line, exit status 2, before
    any task runs.
    """
    if client is not None:
        yield DaskExecutor(client)
        return
    asked_for_cluster = names_cluster(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        protocol=protocol,
        rmm_pool_size=rmm_pool_size,
    )
    if not asked_for_cluster and (in_process or (tasks is not None and tasks <= SMALL_JOB_TASKS)):
        if backend == "gpu":
            from gpu.backend import select_backend

            select_backend("gpu")  # names what is missing: CuPy, cuDF, dask_cudf, a device
        # Forked workers for the CPU backend only: a CUDA context does not survive a fork
        # (checking for a device above already made one), and GPU kernels release the GIL.
        executor = LocalExecutor(
            min(os.cpu_count() or 1, max(1, tasks or os.cpu_count() or 1)),
            processes=processes and backend == "cpu",
        )
        try:
            yield executor
        finally:
            executor.close()
        return
    from cluster.client import get_client

    with get_client(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        backend=backend,
        protocol=protocol,
        rmm_pool_size=rmm_pool_size,
    ) as dask_client:
        yield DaskExecutor(dask_client)


def names_cluster(
    *,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    workers: int | None = None,
    protocol: str | None = None,
    rmm_pool_size: str | int | float | None = None,
    **_: Any,
) -> bool:
    """Whether these options choose Dask whatever the job's size (see :func:`open_executor`)."""
    return bool(
        scheduler
        or scheduler_file
        or workers is not None  # 0 too: the cluster refuses it (one line, exit 2)
        or protocol == "ucx"
        or rmm_pool_size is not None
    )


Plan = TypeVar("Plan")


@contextlib.contextmanager
def plan_and_open_executor(
    plan: Callable[[], Plan], tasks_of: Callable[[Plan], int | None], **options: Any
) -> Iterator[tuple[Plan, LocalExecutor | DaskExecutor]]:
    """``(plan(), executor)``: the run's plan and the executor (:func:`open_executor` with
    ``options``) it runs on, the cluster started while the driver plans when it can be.

    When the options name a cluster (:func:`names_cluster`) the choice does not depend on the
    plan, so the cluster starts (or the client connects) at once while ``plan`` runs on a
    background thread: start-up (~1.5 s for an embedded cluster) and planning (listing inputs,
    reading a schema, tokenizer or manifest) overlap. The cluster starts on this thread because
    only the main thread can start its workers with Ctrl-C ignored (``cluster.local``).
    Otherwise the job's size decides: ``plan`` runs first and ``tasks_of(plan)`` tasks choose
    this process or an embedded cluster, as :func:`open_executor` says.

    Errors stay those of plan-then-start: a planning error is raised (the cluster that started
    meanwhile is stopped) even when the cluster failed too, since fixing the input is needed
    anyway and it is the error raised before; a cluster error is raised when the plan is good.
    ``plan`` must write nothing: after Ctrl-C (the cluster is stopped, KeyboardInterrupt
    raised at once) it may still be finishing on its thread, whose result is dropped.
    """
    if options.get("client") is not None or not names_cluster(**options):
        planned = plan()
        with open_executor(tasks=tasks_of(planned), **options) as executor:
            yield planned, executor
        return
    planning = _BackgroundCall(plan)
    with contextlib.ExitStack() as stack:
        try:
            executor = stack.enter_context(open_executor(**options))
        except Exception as exc:  # noqa: BLE001 - re-raised below unless planning failed too
            failed: Exception | None = exc
        else:
            failed = None
        if failed is not None:
            planning.result()  # the planning error wins
            raise failed
        yield planning.result(), executor  # a planning error here stops the cluster


class _BackgroundCall:
    """``fn()`` on a daemon thread; :meth:`result` waits for it and returns or raises."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._call, name="dexport-plan", daemon=True)
        self._thread.start()

    def _call(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._error = exc

    def result(self) -> Any:
        """``fn``'s return value, or its error raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def as_executor(target: Any) -> LocalExecutor | DaskExecutor:
    """``target`` as an executor: an executor is returned as is, a Dask client is wrapped."""
    if isinstance(target, LocalExecutor | DaskExecutor):
        return target
    return DaskExecutor(target)
