"""A cluster named by the flags starts while the driver plans (real LocalCluster, no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from cluster.errors import SchedulerUnreachable
from pipeline.errors import UserError
from pipeline.runtime.executor import plan_and_open_executor

UNREACHABLE = "tcp://127.0.0.1:1"


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.is_running()}


def _wait_for_children(expected: set[int], timeout: float = 20.0) -> set[int]:
    """The child processes left once those of a stopped cluster had time to exit."""
    deadline = time.monotonic() + timeout
    while _children() - expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return _children() - expected


def test_the_plan_runs_while_a_named_cluster_starts():
    where: list[str] = []

    def plan() -> str:
        where.append(threading.current_thread().name)
        return "planned"

    with plan_and_open_executor(plan, lambda _: 1, workers=1) as (planned, executor):
        assert planned == "planned" and executor.name == "dask"
    assert where == ["dexport-plan"]
    with plan_and_open_executor(plan, lambda _: 1, in_process=True) as (planned, executor):
        assert executor.name == "local"  # no cluster named: plan first, in this thread
    assert where[-1] == threading.current_thread().name


def test_a_planning_error_wins_and_stops_the_cluster():
    before = _children()

    def bad_plan() -> None:
        time.sleep(0.2)
        raise UserError("input 'missing.jsonl' does not exist")

    with (
        pytest.raises(UserError, match="missing.jsonl"),
        plan_and_open_executor(bad_plan, lambda _: 1, workers=2),
    ):
        pytest.fail("the body must not run")
    assert _wait_for_children(before) == set()
    assert not [t for t in threading.enumerate() if t.name == "dexport-plan"]
    # Both fail: the planning error is the one raised (it was the first one before, too).
    with (
        pytest.raises(UserError, match="missing.jsonl"),
        plan_and_open_executor(bad_plan, lambda _: 1, scheduler=UNREACHABLE),
    ):
        pytest.fail("the body must not run")
    # A good plan and a cluster that cannot start: the cluster's error.
    with (
        pytest.raises(SchedulerUnreachable),
        plan_and_open_executor(lambda: 1, lambda _: 1, scheduler=UNREACHABLE),
    ):
        pytest.fail("the body must not run")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to this process")
def test_ctrl_c_while_planning_stops_the_cluster():
    before = _children()
    release = threading.Event()

    def slow_plan() -> None:
        release.wait(30)

    def interrupt_once_started() -> None:
        # The cluster has started once its workers run and Ctrl-C is no longer ignored here.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            len(_children() - before) >= 2
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_started, daemon=True).start()
    try:
        with (
            pytest.raises(KeyboardInterrupt),
            plan_and_open_executor(slow_plan, lambda _: 1, workers=2),
        ):
            pytest.fail("the body must not run")
    finally:
        release.set()
    assert _wait_for_children(before) == set()


def _dexport(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_corpus_with_workers_writes_the_in_process_bytes_and_plans_errors_in_one_line(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "text": f"document {i} " * (i % 7 + 1)}) + "\n" for i in range(400)
        )
    )
    runs = {}
    for name, extra in (("local", []), ("cluster", ["--workers", "2"])):
        where = tmp_path / name
        where.mkdir()
        done = _dexport(
            "corpus", str(data), "--out", "out", "--chunk-size", "4K", *extra, cwd=where
        )
        assert done.returncode == 0, done.stderr
        runs[name] = {
            p.relative_to(where / "out"): p.read_bytes()
            for p in sorted((where / "out").rglob("*"))
            if p.is_file()
        }
    assert runs["cluster"] == runs["local"]
    failed = _dexport(
        "corpus", str(tmp_path / "missing.jsonl"), "--out", "o", "--workers", "2", cwd=tmp_path
    )
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        "dexport: error: input '" + str(tmp_path / "missing.jsonl") + "' does not exist"
    ]
    assert not (tmp_path / "o").exists()
