"""The one task runner every job uses: bounded tasks in flight, results in task order.

A job turns its plan into :class:`Task` objects (a stable key such as ``part-00003`` and the
arguments of its per-task function) and hands them to :func:`run_tasks` with an executor
(:mod:`pipeline.runtime.executor`). The runner

- keeps at most ``executor.slots`` tasks in flight, pulling tasks lazily from the iterable,
  so the driver's memory is bounded by the chunk size whatever the size of the job;
- skips tasks whose results a resumed run already has (``finished``);
- sends ``shared`` values (a tokenizer, a detokenizer) to the workers once, not per task;
- on the first failing task stops the others and re-raises its error; a lost cluster (no
  worker for a while, a worker that kept dying, the scheduler gone) becomes
  :class:`~pipeline.errors.TemporaryFailure` (exit 3, finished parts kept for ``--resume``);
- on Ctrl-C cancels what is in flight and lets ``KeyboardInterrupt`` through (exit 130).

On any failure it first waits (bounded) for the tasks already running, so no task publishes a
part after the job has cleaned up.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import TemporaryFailure
from pipeline.runtime.progress import Progress

DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args, *shared)`` on some worker; ``key`` names it in the run."""

    key: str
    args: tuple


def run_tasks(
    executor: Any,
    fn: Callable[..., Any],
    tasks: Iterable[Task],
    *,
    shared: tuple = (),
    finished: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    on_result: Callable[[str, Any], Any] | None = None,
) -> list[Any]:
    """Run every task; return the results in task order (finished ones taken from ``finished``).

    ``on_result(key, result)`` is called on this thread as each result arrives (finished ones
    as their task comes up), e.g. to join parts into one file while later ones still run; what
    it returns is kept as the task's result instead (so a part's bytes need not be)."""
    if not gc.isenabled():  # the command line turns it off for start-up (``pipeline.cli``)
        gc.freeze()  # what start-up made is never collected, nor walked again
        gc.enable()
    finished = finished or {}
    run = uuid.uuid4().hex[:12]
    order: list[str] = []
    results: dict[str, Any] = {}
    in_flight: dict[Any, str] = {}
    handles: tuple | None = None
    todo = iter(tasks)
    exhausted = False
    try:
        while True:
            while not exhausted and len(in_flight) < executor.slots:
                task = next(todo, None)
                if task is None:
                    exhausted = True
                    break
                order.append(task.key)
                if task.key in finished:
                    results[task.key] = finished[task.key]
                    if on_result:
                        results[task.key] = on_result(task.key, results[task.key])
                    if progress:
                        progress.update()
                    continue
                if handles is None:
                    handles = tuple(executor.share(value) for value in shared)
                future = executor.submit(
                    fn, *task.args, *handles, key=f"dexport-{fn.__name__}-{run}-{task.key}"
                )
                in_flight[future] = task.key
            if not in_flight:
                break
            for future in executor.wait(list(in_flight), timeout=1.0):
                key = in_flight.pop(future)
                results[key] = executor.result(future)
                if hasattr(future, "release"):
                    future.release()
                if on_result:
                    results[key] = on_result(key, results[key])
                if progress:
                    progress.update()
            executor.check_alive()
    except KeyboardInterrupt:
        if progress:
            progress.close(failed=True)
        executor.cancel(list(in_flight))
        raise
    except BaseException as exc:
        if progress:
            progress.close(failed=True)
        lost = _lost_cluster(exc)
        if not (lost or isinstance(exc, TemporaryFailure)):
            executor.drain(list(in_flight), DRAIN_TIMEOUT_S)
        executor.cancel(list(in_flight))
        if lost:
            raise TemporaryFailure(
                f"{lost}; finished parts are kept: re-run with --resume"
            ) from None
        raise
    if progress:
        progress.close()
    return [results[key] for key in order]


def _lost_cluster(exc: BaseException) -> str | None:
    """A message when ``exc`` means the cluster failed (not the task's own code)."""
    name = type(exc).__name__
    if name == "BrokenProcessPool":
        return "a worker process of this run died (out of memory, or killed)"
    if name == "KilledWorker":
        return "a Dask worker died repeatedly while running a task (out of memory, or killed)"
    if name in ("CancelledError", "CommClosedError", "FutureCancelledError"):
        return f"the Dask cluster went away during the run ({name})"
    return None
