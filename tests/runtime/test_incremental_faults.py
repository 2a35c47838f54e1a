"""Scheduled incremental runs that meet each other or die: real ``dexport`` processes.

- two runs on one output: the second exits 3 with one line naming the holder (held stopped
  with SIGSTOP, so the overlap is certain; and started at the same instant), and the output
  is what one run gives;
- a run killed with SIGKILL leaves its lock; the next run takes it over (dead process on this
  host) with a notice, finishes the generation (re-using the parts the dead run finished) and
  gives the output of an uninterrupted run — on local disk and on S3.

Runs use the session's Dask cluster (``--scheduler``): already running, so a run reaches its
parts in about a second, and a generation of ~100 small partitions is a wide window to stop
or kill it in. The reference is a from-scratch export of the same files.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from test_faults import (  # noqa: F401  (_no_stray_processes: autouse fixture)
    PROGRESS,
    RUN_WAIT_S,
    _no_stray_processes,
    kill_all,
    start,
    wait_cluster_idle,
    wait_until,
)

from pipeline.cli import main

LOCK = ".dexport-lock"
SPLITS = ("train", "validation", "test")
CHUNK = "8k"


def write_day(folder: Path, day: int, docs: int = 500) -> None:
    lines = [
        json.dumps({"text": f"day {day} doc {i} " + "some words here " * (1 + (i * 5 + day) % 17)})
        for i in range(docs)
    ]
    (folder / f"2026-03-{day:02d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("days")
    for day in range(1, 7):
        write_day(folder, day)
    return folder


def inputs_of(days: Path, target: Path, upto: int) -> Path:
    """A folder holding links to days 1..``upto`` (adding days = adding links)."""
    target.mkdir(exist_ok=True)
    for day in range(1, upto + 1):
        link = target / f"2026-03-{day:02d}.jsonl"
        if not link.exists():
            os.link(days / link.name, link)
    return target


@pytest.fixture(scope="module")
def reference(days: Path, tmp_path_factory: pytest.TempPathFactory, dask_client) -> Path:
    out = tmp_path_factory.mktemp("reference") / "export"
    scheduler = dask_client.scheduler.address
    args = ["--out", str(out), "--chunk-size", CHUNK, "--scheduler", scheduler, "-q"]
    assert main(["corpus", str(days), *args]) == 0
    return out


def split_bytes(read: Any, name: str, files: list[str]) -> bytes:
    single = [f for f in files if f == f"{name}.jsonl"]
    chosen = single or sorted(f for f in files if f.startswith(f"{name}/"))
    return b"".join(read(f) for f in chosen)


def assert_same_records(out: Path, reference: Path) -> None:
    files = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    ref = [str(p.relative_to(reference)) for p in reference.rglob("*") if p.is_file()]
    assert not [f for f in files if f.startswith((PROGRESS, LOCK)) or f.endswith(".tmp")], files
    for name in SPLITS:
        got = split_bytes(lambda f: (out / f).read_bytes(), name, files)
        assert got == split_bytes(lambda f: (reference / f).read_bytes(), name, ref), name
    assert (out / "dataset_stats.json").read_bytes() == (
        reference / "dataset_stats.json"
    ).read_bytes()


def incremental_args(
    inputs: str, out: str, scheduler: str, *extra: str, chunk: str = CHUNK
) -> list[str]:
    return [
        "corpus", inputs, "--out", out, "--incremental", "--chunk-size", chunk,
        "--scheduler", scheduler, *extra,
    ]  # fmt: skip


def first_generation(days: Path, tmp_path: Path, scheduler: str) -> tuple[Path, Path]:
    inputs = inputs_of(days, tmp_path / "in", 2)
    out = tmp_path / "export"
    assert main(incremental_args(str(inputs), str(out), scheduler, "-q")) == 0
    inputs_of(days, inputs, 6)  # four new days for the runs under test
    return inputs, out


def progress_records(out: Path) -> int:
    folder = out / PROGRESS
    return len(list(folder.iterdir())) if folder.exists() else 0


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_second_run_on_a_held_output_exits_3_and_the_output_is_one_runs(
    days: Path, tmp_path: Path, dask_client, reference: Path
) -> None:
    scheduler = dask_client.scheduler.address
    inputs, out = first_generation(days, tmp_path, scheduler)
    holder = start(incremental_args(str(inputs), str(out), scheduler), tmp_path / "a")
    wait_until("the run to lock and write a part", lambda: progress_records(out) >= 3, 120, holder)
    os.killpg(holder.pid, signal.SIGSTOP)
    try:
        wait_cluster_idle(dask_client)  # its tasks already on a worker finish meanwhile
        before = tree(out)
        second = start(incremental_args(str(inputs), str(out), scheduler), tmp_path / "b")
        assert second.wait(RUN_WAIT_S) == 3, second.describe()
        lines = second.err_lines()
        assert len(lines) == 1 and lines[0].startswith("dexport: error: "), lines
        assert f"pid {holder.pid}" in lines[0] and "in use by another dexport run" in lines[0]
        assert tree(out) == before
    finally:
        os.killpg(holder.pid, signal.SIGCONT)
    assert holder.wait(RUN_WAIT_S) == 0, holder.describe()
    assert_same_records(out, reference)


def test_two_runs_started_together_give_one_runs_output(
    days: Path, tmp_path: Path, dask_client, reference: Path
) -> None:
    scheduler = dask_client.scheduler.address
    inputs, out = first_generation(days, tmp_path, scheduler)
    runs = [
        start(incremental_args(str(inputs), str(out), scheduler), tmp_path / name)
        for name in ("a", "b")
    ]
    codes = sorted(run.wait(RUN_WAIT_S) for run in runs)
    # The usual outcome is 0 and 3; a run that starts after the other finished is up to date.
    up_to_date = [r for r in runs if "is up to date" in r.err()]
    assert codes == [0, 3] or (codes == [0, 0] and len(up_to_date) == 1), [
        r.describe() for r in runs
    ]
    assert_same_records(out, reference)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert len(manifest["incremental"]["generations"]) == 2


def test_a_killed_runs_lock_is_taken_over_by_the_next_run(
    days: Path, tmp_path: Path, dask_client, reference: Path
) -> None:
    scheduler = dask_client.scheduler.address
    inputs, out = first_generation(days, tmp_path, scheduler)
    killed = start(incremental_args(str(inputs), str(out), scheduler), tmp_path / "a")
    wait_until("the run to write parts", lambda: progress_records(out) >= 5, 120, killed)
    kill_all(killed)
    wait_cluster_idle(dask_client)
    lock = json.loads((out / LOCK).read_text())
    assert lock["pid"] == killed.pid
    done_before = progress_records(out)

    report = tmp_path / "report.json"
    args = incremental_args(str(inputs), str(out), scheduler, "--report", str(report))
    after = start(args, tmp_path / "c")
    assert after.wait(RUN_WAIT_S) == 0, after.describe()
    notices = [line for line in after.err_lines() if "took over the lock" in line]
    assert len(notices) == 1 and f"pid {killed.pid}" in notices[0], after.describe()
    assert not (out / LOCK).exists()
    assert_same_records(out, reference)
    step = json.loads(report.read_text())["steps"][0]
    assert step["status"] == "done" and step["generation"] == 1 and done_before >= 5


def test_a_killed_run_on_s3_is_taken_over_and_finished(
    days: Path, tmp_path: Path, dask_client, reference: Path, s3_server, s3_bucket: str
) -> None:
    scheduler = dask_client.scheduler.address
    fs = s3_server.filesystem()
    bucket = s3_bucket.removeprefix("s3://")
    for day in (1, 2):
        name = f"2026-03-{day:02d}.jsonl"
        fs.put_file(str(days / name), f"{bucket}/in/{name}")
    # Larger partitions on S3 (each costs a few requests): the split files do not depend on
    # the partitioning, only --parts layouts would.
    options = ["--storage-options", json.dumps(s3_server.storage_options), "--chunk-size", "32k"]
    url, inputs = f"{s3_bucket}/export", f"{s3_bucket}/in/"
    assert main(incremental_args(inputs, url, scheduler, "-q", *options)) == 0
    for day in range(3, 7):
        name = f"2026-03-{day:02d}.jsonl"
        fs.put_file(str(days / name), f"{bucket}/in/{name}")

    def parts() -> int:
        return len(s3_server.object_keys(f"{url}/{PROGRESS}"))

    killed = start(incremental_args(inputs, url, scheduler, *options), tmp_path / "a")
    wait_until("the run to write parts", lambda: parts() >= 2, 120, killed, interval=0.1)
    kill_all(killed)
    wait_cluster_idle(dask_client)
    assert json.loads(fs.cat_file(f"{bucket}/export/{LOCK}"))["pid"] == killed.pid

    after = start(incremental_args(inputs, url, scheduler, *options), tmp_path / "c")
    assert after.wait(RUN_WAIT_S) == 0, after.describe()
    assert any("took over the lock" in line for line in after.err_lines()), after.describe()
    local = tmp_path / "copy"
    fs.get(f"{bucket}/export/", str(local), recursive=True)
    assert_same_records(local, reference)
