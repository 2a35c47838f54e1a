"""Fault tests for every job (tokens, corpus, encode), run as real ``dexport`` processes.

What a user or a scheduler meets when things break mid-run:

1. every worker of the embedded cluster killed (``--workers 2``): exit 3, one error line naming
   ``--resume``, finished parts kept, lock released; ``--resume`` then gives the bytes of an
   uninterrupted run;
2. dexport itself killed mid-write with its output on S3: the dead run's lock does not block
   ``--resume``, which gives the same objects as an uninterrupted run;
3. finished parts corrupted (a flipped byte, a truncation) after a kill are redone by ``--resume``;
4. a killed and resumed run leaves no temporary file (``.{name}.{32 hex}.tmp``), no progress
   records and no lock, locally and on S3;
5. a second run (plain, ``--overwrite``, ``--resume``) on an output another live run holds is
   refused with exit 3 and one line naming the lock, and changes nothing.

Every run is a ``dexport`` subprocess in its own session (so it can be killed with all it
started). Local outputs are written to a relative ``--out out`` from a per-run folder, so two
runs of the same command get byte-identical manifests and dataset cards (the card quotes the
command); the uninterrupted reference of each job is made once, in this process, on the
session's Dask cluster (``dask_client``): the executor never changes the bytes. On S3 the
reference is the same command run through with ``--overwrite`` over the same URL, after the test.

Runs that are killed as a whole use that session cluster too (``--scheduler``): it is already
running, so they reach their parts in about a second, and 30-120 parts leave a wide window to
kill them in (tasks already on a worker finish; the tests wait for them). Only the lost-workers
test starts an embedded cluster (``--workers 2``), since killing its workers is the point.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corpus_helpers
import numpy as np
import psutil
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401  (session fixture)

from pipeline.cli import main
from pipeline.formats.indexed_dataset import IndexedDatasetBuilder

JOBS = ("tokens", "corpus", "encode")
N_DOCS = 12_000  # token dataset: 120 parts of 100 documents
LOCK = ".dexport-lock"
PROGRESS = ".dexport-progress"
TEMP = re.compile(r"(^|/)\.[^/]+\.[0-9a-f]{32}\.tmp$")
EXIT_WAIT_S = 90  # a run whose workers are gone must end within this
RUN_WAIT_S = 240  # an ordinary run (cluster start included) on a busy 2-core machine
DEXPORT = Path(sys.executable).with_name("dexport")

# -- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    prefix: str  # token dataset (PREFIX.bin + PREFIX.idx)
    corpus: str  # JSONL folder: corpus and encode input
    tokenizer: str


@pytest.fixture(scope="module")
def data(
    tmp_path_factory: pytest.TempPathFactory,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
) -> Data:
    root = tmp_path_factory.mktemp("fault-data")
    rng = np.random.default_rng(5)
    builder = IndexedDatasetBuilder(str(root / "ds"), np.uint16)
    for n in rng.integers(10, 200, size=N_DOCS):
        builder.add_document(rng.integers(0, 1500, size=int(n)))
    builder.finalize()
    # About 3.6 MB of curated documents: some 110 partitions of 32 KiB.
    corpus_helpers.sample.generate(str(root / "corpus"), docs=3000, seed=7, mean_words=100, files=2)
    return Data(str(root / "ds"), str(root / "corpus"), str(byte_bpe_tokenizer_path))


def command(data: Data, job: str, out: str) -> list[str]:
    """The job's command line, writing to ``out`` (a folder; encode writes ``out/ds``).

    Locally 110-120 parts; on S3 (slower: a PUT per part and per progress record) about 30.
    """
    big = 4 if out.startswith("s3://") else 1
    if job == "tokens":
        chunk = str(100 * big)
        return [
            "tokens",
            data.prefix,
            "--documents",
            f"0:{N_DOCS}",
            "--chunk-size",
            chunk,
            "--out",
            out,
        ]
    if job == "corpus":
        return ["corpus", data.corpus, "--out", out, "--chunk-size", f"{32 * big}K"]
    size = f"{32 * big}KiB"
    return [
        "encode",
        data.corpus,
        "--tokenizer",
        data.tokenizer,
        "--append-eod",
        "--partition-size",
        size,
        "--out",
        f"{out}/ds",
    ]


def staging(job: str) -> str:
    """Where the job keeps its lock and progress records, relative to the output folder."""
    return "ds.shards" if job == "encode" else "."


def progress_rel(job: str) -> str:
    return os.path.normpath(f"{staging(job)}/{PROGRESS}")


def lock_rel(job: str) -> str:
    return os.path.normpath(f"{staging(job)}/{LOCK}")


def is_finished(out: Path, job: str) -> bool:
    return (out / ("ds.manifest.json" if job == "encode" else "_manifest.json")).exists()


# -- processes -------------------------------------------------------------------------------

_STARTED: list[Run] = []


@dataclass
class Run:
    """A ``dexport`` subprocess (its own session) with stdout/stderr in files."""

    args: list[str]
    proc: subprocess.Popen
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def err_lines(self) -> list[str]:
        return [line for line in self.err().splitlines() if line.strip()]

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.err().splitlines()[-n:])

    def describe(self) -> str:
        return f"dexport {' '.join(self.args)}\n--- stderr (tail) ---\n{self.tail()}"

    def wait(self, timeout: float) -> int:
        """Exit status; on timeout kill the whole session and fail, showing stderr."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_all(self)
            pytest.fail(f"dexport did not end within {timeout:.0f} s:\n{self.describe()}")


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
    """Start ``dexport ARGS`` in ``cwd`` (created) as the leader of a new session."""
    cwd.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    stdout, stderr = cwd / f"stdout-{tag}.log", cwd / f"stderr-{tag}.log"
    cmd = [str(DEXPORT), *args] if DEXPORT.exists() else [sys.executable, "-m", "pipeline", *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=out,
            stderr=err,
            env=full_env,
            start_new_session=True,
            # A shell starting pytest in the background ignores SIGINT, and children inherit
            # that: give dexport the default, as in a terminal.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    run = Run(args, proc, stdout, stderr)
    _STARTED.append(run)
    return run


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _is_resource_tracker(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    return False


def kill_all(run: Run) -> None:
    """SIGKILL dexport and every process it started (its session), at once."""
    kids = descendants(run.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(run.pid, signal.SIGKILL)
    for proc in kids:  # in case one left the session
        with contextlib.suppress(psutil.Error):
            proc.kill()
    run.proc.wait(timeout=30)


def kill_workers_until_exit(run: Run, timeout: float) -> int:
    """SIGKILL every worker process of dexport's embedded cluster until dexport ends.

    The nannies of a ``LocalCluster`` live inside the dexport process and restart a worker
    that dies, so "every worker lost" means killing the workers again as they come back. The
    multiprocessing resource tracker is spared: it is no worker, and when it is killed CPython
    starts a new one that prints ``KeyError`` tracebacks of its own. Returns the kill count.
    """
    killed = 0
    deadline = time.monotonic() + timeout
    while run.proc.poll() is None and time.monotonic() < deadline:
        for proc in descendants(run.pid):
            if not _is_resource_tracker(proc):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                    killed += 1
        time.sleep(0.1)
    return killed


@pytest.fixture(autouse=True)
def _no_stray_processes() -> Iterator[None]:
    """Whatever a test started and left running is killed when it ends."""
    yield
    for run in _STARTED:
        if run.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGCONT)
            kill_all(run)
    _STARTED.clear()


def wait_until(
    what: str,
    predicate: Callable[[], Any],
    timeout: float,
    run: Run | None = None,
    interval: float = 0.01,
) -> Any:
    """Poll ``predicate`` until it is truthy; fail if ``run`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if run is not None and run.proc.poll() is not None:
            pytest.fail(
                f"dexport ended (exit {run.proc.returncode}) before {what}:\n{run.describe()}"
            )
        if time.monotonic() > deadline:
            extra = f"\n{run.describe()}" if run is not None else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def wait_cluster_idle(client: Any, timeout: float = 30) -> None:
    """Wait until no worker of ``client``'s cluster runs a task.

    A killed driver's tasks already running on the shared cluster run to their end (and
    publish their part): let them finish before looking at or resuming the output.
    """

    def idle() -> bool:
        return not any(client.run(lambda dask_worker: len(dask_worker.active_threads)).values())

    time.sleep(0.2)
    wait_until("the cluster to finish the killed run's tasks", idle, timeout, interval=0.1)


def assert_refused_with_lock(run: Run, rc: int, holder_pid: int, lock_name: str) -> None:
    lines = run.err_lines()
    errors = [line for line in lines if line.startswith("dexport: error:")]
    assert rc == 3, f"expected exit 3 (output locked), got {rc}:\n{run.describe()}"
    assert len(errors) == 1 and lines[-1] == errors[0], (
        f"expected one final 'dexport: error:' line:\n{run.describe()}"
    )
    assert lock_name in errors[0] and f"pid {holder_pid}" in errors[0], (
        f"the error must name the lock and its run:\n{errors[0]}"
    )
    assert "Traceback" not in run.err(), run.describe()


# -- outputs ---------------------------------------------------------------------------------


def local_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) by relative path; a file that goes
    away while it is listed (a running task's temporary file, just published) is left out."""
    tree = {}
    for p in sorted(root.rglob("*")):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            if p.is_file():
                tree[p.relative_to(root).as_posix()] = p.read_bytes()
    return tree


def s3_tree(s3_server: Any, url: str) -> dict[str, bytes]:
    """Every object under ``url`` by key relative to it (objects only, as S3 lists them)."""
    fs = s3_server.filesystem()
    base = url.removeprefix("s3://").rstrip("/") + "/"
    return {key[len(base) :]: fs.cat_file(key) for key in s3_server.object_keys(url)}


def assert_same_tree(got: dict[str, bytes], want: dict[str, bytes], what: str) -> None:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    detail = ""
    texts = [k for k in differ if k.endswith((".json", ".md"))]
    if texts:  # show how the first differing text file differs
        lines = difflib.unified_diff(
            want[texts[0]].decode(errors="replace").splitlines(),
            got[texts[0]].decode(errors="replace").splitlines(),
            "uninterrupted",
            "this run",
            n=1,
            lineterm="",
        )
        detail = f"\n{texts[0]}:\n" + "\n".join(list(lines)[:40])
    assert not (missing or extra or differ), (
        f"{what} differs from the uninterrupted run: missing {missing[:6]}, "
        f"unexpected {extra[:6]}, "
        f"different bytes {differ[:6]}{detail}"
    )


def leftovers(names: list[str] | set[str]) -> list[str]:
    """Temporary files, progress records and locks among ``names`` (relative paths)."""
    return sorted(
        n
        for n in names
        if TEMP.search(n) or n.endswith(".tmp") or PROGRESS in n or n.rsplit("/", 1)[-1] == LOCK
    )


def local_records(folder: Path) -> dict[str, dict]:
    """Progress records (``{part path: record}``) in a local progress folder."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    records = {}
    for name in names:
        if name == "params.json" or name.startswith(".") or not name.endswith(".json"):
            continue
        with contextlib.suppress(FileNotFoundError, ValueError):
            record = json.loads((folder / name).read_bytes())
            records[record["path"]] = record
    return records


def count_local_records(folder: Path) -> int:
    try:
        return sum(
            1
            for n in os.listdir(folder)
            if n.endswith(".json") and n != "params.json" and not n.startswith(".")
        )
    except FileNotFoundError:
        return 0


def count_s3_records(s3_server: Any, url: str) -> int:
    return sum(
        1
        for k in s3_server.object_keys(url)
        if k.endswith(".json") and not k.endswith("/params.json") and not TEMP.search(k)
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- reference runs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_address(dask_client: Any) -> str:
    return dask_client.scheduler.address


def _run_in_process(args: list[str], cwd: Path) -> None:
    cwd.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(cwd):
        rc = main(args)
    assert rc == 0, f"reference run failed (exit {rc}): dexport {' '.join(args)}"


@pytest.fixture(scope="module")
def reference(
    data: Data, dask_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict[str, bytes]]:
    """``reference(job)``: the files of an uninterrupted local run (made once per job)."""
    cache: dict[str, dict[str, bytes]] = {}

    def get(job: str) -> dict[str, bytes]:
        if job not in cache:
            cwd = tmp_path_factory.mktemp(f"reference-{job}")
            _run_in_process([*command(data, job, "out"), "--scheduler", dask_address], cwd)
            cache[job] = local_tree(cwd / "out")
            assert cache[job] and not leftovers(cache[job]), sorted(cache[job])
        return cache[job]

    return get


# -- 1. every worker killed ------------------------------------------------------------------


@pytest.mark.parametrize("job", JOBS)
def test_all_workers_killed_exits_3_and_resume_completes(
    job: str, data: Data, reference: Callable, tmp_path: Path
) -> None:
    want = reference(job)
    cwd = tmp_path / "run"
    out = cwd / "out"
    args = [*command(data, job, "out"), "--workers", "2"]
    env = {"DEXPORT_NO_WORKERS_TIMEOUT": "5"}
    run = start(args, cwd, env)
    progress = out / progress_rel(job)
    wait_until("3 finished parts", lambda: count_local_records(progress) >= 3, RUN_WAIT_S, run)
    kept = local_records(progress)
    t0 = time.monotonic()
    killed = kill_workers_until_exit(run, EXIT_WAIT_S)
    rc = run.proc.poll()
    if rc is None:
        kill_all(run)
        pytest.fail(
            f"dexport did not end within {EXIT_WAIT_S} s after its workers were killed:\n"
            f"{run.describe()}"
        )
    assert "Traceback" not in run.err(), "\n".join(run.err().splitlines()[-30:])
    assert killed >= 2, f"expected to kill the 2 workers, killed {killed} processes"
    assert not is_finished(out, job), (
        "the run finished before its workers were killed: make the job bigger"
    )
    assert rc == 3, (
        f"expected exit 3 after losing every worker, got {rc} "
        f"after {time.monotonic() - t0:.1f} s:\n{run.describe()}"
    )
    last = run.err_lines()[-1]
    assert last.startswith("dexport: error:") and "--resume" in last, (
        f"last stderr line: {last!r}\n{run.describe()}"
    )
    # No unhandled exception of dexport's own (distributed's logged tracebacks: see below).
    assert not re.search(r'File "[^"]*/(pipeline|cluster)/', run.err()), run.describe()
    assert not (out / lock_rel(job)).exists(), "the failed run did not release its lock"
    for path, record in kept.items():  # parts finished before the loss are kept, intact
        part = out / staging(job) / path
        assert part.is_file(), f"finished part {path} was removed after the workers were lost"
        assert sha256(part.read_bytes()) == record["sha256"], f"finished part {path} changed"
        assert (progress / f"{path.replace('/', '__')}.json").is_file(), (
            f"progress record of {path} was removed"
        )

    resumed = start([*args, "--resume"], cwd, env)
    rc = resumed.wait(RUN_WAIT_S)
    assert rc == 0, f"--resume after lost workers failed (exit {rc}):\n{resumed.describe()}"
    got = local_tree(out)
    assert not leftovers(got), f"left behind: {leftovers(got)}"
    assert_same_tree(got, want, f"{job} output resumed after its workers were killed")


STOPS = {
    # Ctrl-C in a terminal signals dexport and its workers (the process group).
    "ctrl-c": (lambda pid: os.killpg(pid, signal.SIGINT), 130, "dexport: interrupted"),
    # A scheduler stopping the run signals dexport only.
    "sigterm": (lambda pid: os.kill(pid, signal.SIGTERM), 143, "dexport: terminated"),
}


@pytest.mark.parametrize("stop", sorted(STOPS))
def test_a_stopped_run_ends_with_one_line_and_resumes(
    stop: str, data: Data, reference: Callable, tmp_path: Path
) -> None:
    """Ctrl-C or SIGTERM: one line, exit 130 / 143, the lock released, resumable."""
    send, code, line = STOPS[stop]
    want = reference("tokens")
    cwd = tmp_path / "run"
    out = cwd / "out"
    args = [*command(data, "tokens", "out"), "--workers", "2"]
    run = start(args, cwd)
    progress = out / progress_rel("tokens")
    wait_until("3 finished parts", lambda: count_local_records(progress) >= 3, RUN_WAIT_S, run)
    send(run.pid)
    rc = run.wait(EXIT_WAIT_S)
    assert rc == code, f"expected exit {code} after {stop}, got {rc}:\n{run.describe()}"
    lines = run.err_lines()
    assert lines[-1].startswith(line) and "--resume" in lines[-1], run.describe()
    assert "Traceback" not in run.err() and "KeyboardInterrupt" not in run.err(), run.describe()
    assert not (out / lock_rel("tokens")).exists(), "the stopped run kept its lock"
    resumed = start([*args, "--resume"], cwd)
    assert resumed.wait(RUN_WAIT_S) == 0, resumed.describe()
    got = local_tree(out)
    assert not leftovers(got), f"left behind: {leftovers(got)}"
    assert_same_tree(got, want, f"tokens output resumed after {stop}")


# -- 2. dexport killed mid-write, output on S3 -----------------------------------------------


@pytest.mark.parametrize("job", JOBS)
def test_killed_on_s3_resume_gives_the_same_objects(
    job: str,
    data: Data,
    s3_server: Any,
    s3_bucket: str,
    dask_client: Any,
    dask_address: str,
    tmp_path: Path,
) -> None:
    url = f"{s3_bucket}/{job}/out"
    args = [
        *command(data, job, url),
        "--storage-options",
        json.dumps(s3_server.storage_options),
        "--scheduler",
        dask_address,
    ]
    run = start(args, tmp_path / "run")
    progress_url = f"{url}/{progress_rel(job)}"
    wait_until(
        "3 finished parts on S3",
        lambda: count_s3_records(s3_server, progress_url) >= 3,
        RUN_WAIT_S,
        run,
        interval=0.02,
    )
    kill_all(run)
    wait_cluster_idle(dask_client)
    before = s3_tree(s3_server, url)
    assert not {"_manifest.json", "ds.manifest.json"} & set(before), (
        "the run finished before it was killed"
    )
    lock = json.loads(before[lock_rel(job)])  # the killed run's lock is still there ...
    assert lock["pid"] == run.pid and lock["host"] == socket.gethostname(), lock
    assert run.proc.returncode == -signal.SIGKILL

    # ... and does not block --resume.
    resumed = start([*args, "--resume"], tmp_path / "resume")
    rc = resumed.wait(RUN_WAIT_S)
    assert rc == 0, f"--resume after a kill on S3 failed (exit {rc}):\n{resumed.describe()}"
    got = s3_tree(s3_server, url)
    assert not leftovers(got), f"left behind on S3: {leftovers(got)}"
    # The reference: the same command run through, over the same URL (the dataset card quotes
    # --out, and the manifest the card's sha256).
    _run_in_process([*args, "--overwrite"], tmp_path / "reference")
    assert_same_tree(got, s3_tree(s3_server, url), f"{job} output on S3 resumed after a kill")


# -- 3. finished parts corrupted after a kill ------------------------------------------------


@pytest.mark.parametrize("job", ["tokens", "corpus"])
def test_corrupted_finished_parts_are_redone_by_resume(
    job: str, data: Data, reference: Callable, dask_client: Any, dask_address: str, tmp_path: Path
) -> None:
    want = reference(job)
    cwd = tmp_path / "run"
    out = cwd / "out"
    args = [*command(data, job, "out"), "--scheduler", dask_address]
    run = start(args, cwd)
    progress = out / progress_rel(job)
    wait_until("4 finished parts", lambda: count_local_records(progress) >= 4, RUN_WAIT_S, run)
    kill_all(run)
    wait_cluster_idle(dask_client)
    assert not is_finished(out, job), "the run finished before it was killed: make the job bigger"
    finished = sorted(
        p for p, r in local_records(progress).items() if r["bytes"] >= 2 and (out / p).is_file()
    )
    assert len(finished) >= 2, f"need two finished non-empty parts, have {finished}"
    flipped, truncated = out / finished[0], out / finished[1]
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) // 2] ^= 0x55  # same size, other content
    flipped.write_bytes(bytes(raw))
    size = truncated.stat().st_size
    with open(truncated, "r+b") as handle:
        handle.truncate(size // 2)

    resumed = start([*args, "--resume"], cwd)
    rc = resumed.wait(RUN_WAIT_S)
    assert rc == 0, f"--resume over corrupted parts failed (exit {rc}):\n{resumed.describe()}"
    got = local_tree(out)
    assert not leftovers(got), f"left behind: {leftovers(got)}"
    assert_same_tree(
        got,
        want,
        f"{job} output resumed over a flipped byte in {finished[0]} and a truncated {finished[1]}",
    )


# -- 4. no temporary file after a killed and resumed run -------------------------------------


def _planted_temp(name: str) -> str:
    """The temporary name ``atomic_open`` gives ``name`` (what a write cut by SIGKILL leaves)."""
    folder, _, base = name.rpartition("/")
    return f"{folder + '/' if folder else ''}.{base}.{uuid.uuid4().hex}.tmp"


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_killed_and_resumed_run_leaves_no_temporary_file(
    where: str,
    request: pytest.FixtureRequest,
    data: Data,
    dask_client: Any,
    dask_address: str,
    tmp_path: Path,
) -> None:
    if where == "s3":
        s3_server = request.getfixturevalue("s3_server")
        out = f"{request.getfixturevalue('s3_bucket')}/out"
        extra = ["--storage-options", json.dumps(s3_server.storage_options)]
        fs = s3_server.filesystem()

        def names() -> list[str]:
            return sorted(s3_tree(s3_server, out))

        def plant(name: str) -> None:
            fs.pipe_file(f"{out}/{name}", b"half a part")

        def records() -> int:
            return count_s3_records(s3_server, f"{out}/{PROGRESS}")
    else:
        out = str(tmp_path / "run" / "out")

        def names() -> list[str]:
            return sorted(local_tree(Path(out)))

        def plant(name: str) -> None:
            (Path(out) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(out) / name).write_bytes(b"half a part")

        def records() -> int:
            return count_local_records(Path(out) / PROGRESS)

        extra = []
    args = [*command(data, "tokens", out), *extra, "--scheduler", dask_address]
    run = start(args, tmp_path / "run")
    wait_until("3 finished parts", lambda: records() >= 3, RUN_WAIT_S, run, interval=0.02)
    kill_all(run)
    wait_cluster_idle(dask_client)
    assert "_manifest.json" not in names(), "the run finished before it was killed"
    # Writes cut by the kill: a part and a progress record under their temporary names.
    plant(_planted_temp("part-00029.jsonl"))
    plant(_planted_temp(f"{PROGRESS}/part-00028.jsonl.json"))
    assert len([n for n in names() if TEMP.search(n)]) >= 2

    resumed = start([*args, "--resume"], tmp_path / "resume")
    rc = resumed.wait(RUN_WAIT_S)
    assert rc == 0, f"--resume failed (exit {rc}):\n{resumed.describe()}"
    final = names()
    parts = N_DOCS // int(args[args.index("--chunk-size") + 1])
    assert (
        "_manifest.json" in final and len([n for n in final if n.startswith("part-")]) == parts
    ), final
    assert not leftovers(final), f"left behind after --resume: {leftovers(final)}"


# -- 5. a second run on a locked output ------------------------------------------------------

MODES = {"plain": [], "overwrite": ["--overwrite"], "resume": ["--resume"]}


@dataclass
class Locked:
    """A run stopped (SIGSTOP) mid-way while holding its output, and three runs that met it."""

    job: str
    holder: Run
    lock_name: str
    before: dict[str, bytes]  # the output once the stopped run's last tasks had landed
    after: dict[str, bytes]  # ... after the three other runs
    others: dict[str, tuple[Run, int]]
    holder_rc: int
    final: dict[str, bytes]


def _settled_tree(out: Path, timeout: float = 30) -> dict[str, bytes]:
    """The output once it stopped changing for a second (tasks already on workers landed)."""
    deadline = time.monotonic() + timeout
    tree, since = local_tree(out), time.monotonic()
    while time.monotonic() - since < 1.0:
        if time.monotonic() > deadline:
            pytest.fail(f"{out} kept changing for {timeout} s after its run was stopped")
        time.sleep(0.1)
        now = local_tree(out)
        if now != tree:
            tree, since = now, time.monotonic()
    return tree


def _hold_and_compete(data: Data, job: str, dask_address: str, cwd: Path) -> Locked:
    """Stop a run of ``job`` mid-way (SIGSTOP: its lock stays, its pid alive), start the plain,
    ``--overwrite`` and ``--resume`` runs at once, then let the stopped run go on (SIGCONT)."""
    out = cwd / "out"
    args = [*command(data, job, "out"), "--scheduler", dask_address]
    holder = start(args, cwd)
    lock, progress = out / lock_rel(job), out / progress_rel(job)
    try:
        wait_until(
            "the run to hold its lock and finish a part",
            lambda: lock.exists() and count_local_records(progress) >= 1,
            RUN_WAIT_S,
            holder,
            interval=0.005,
        )
        os.kill(holder.pid, signal.SIGSTOP)
        before = _settled_tree(out)
        assert lock_rel(job) in before and not is_finished(out, job), (
            f"the run finished before it could be stopped: {sorted(before)[:5]}"
        )
        held = json.loads(before[lock_rel(job)])
        assert held["pid"] == holder.pid and held["host"] == socket.gethostname(), held
        # All three at once; a stopped run sends no heartbeat: keep its lock from going stale.
        env = {"DEXPORT_LOCK_STALE_S": "3600"}
        others = {mode: start([*args, *flags], cwd, env) for mode, flags in MODES.items()}
        codes = {mode: run.wait(RUN_WAIT_S) for mode, run in others.items()}
        after = local_tree(out)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder.pid, signal.SIGCONT)
    holder_rc = holder.wait(RUN_WAIT_S)
    return Locked(
        job,
        holder,
        LOCK,
        before,
        after,
        {m: (others[m], codes[m]) for m in MODES},
        holder_rc,
        local_tree(out),
    )


@pytest.fixture(scope="module")
def locked(
    data: Data, dask_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Locked]:
    """``locked(job)``: what happened around a run of ``job`` held stopped (made once per job)."""
    cache: dict[str, Locked] = {}

    def get(job: str) -> Locked:
        if job not in cache:
            cache[job] = _hold_and_compete(
                data, job, dask_address, tmp_path_factory.mktemp(f"locked-{job}")
            )
        return cache[job]

    return get


LOCK_CASES = [
    pytest.param("tokens", "plain"),
    pytest.param("tokens", "overwrite"),
    pytest.param("tokens", "resume"),
    pytest.param("corpus", "plain"),
    pytest.param("corpus", "overwrite"),
    pytest.param("corpus", "resume"),
    pytest.param("encode", "plain"),
    pytest.param("encode", "overwrite"),
    pytest.param("encode", "resume"),
]


@pytest.mark.parametrize(("job", "mode"), LOCK_CASES)
def test_second_run_on_locked_output_is_refused_with_exit_3(
    job: str, mode: str, locked: Callable
) -> None:
    held = locked(job)
    run, rc = held.others[mode]
    assert_refused_with_lock(run, rc, held.holder.pid, held.lock_name)


@pytest.mark.parametrize("job", JOBS)
def test_refused_runs_leave_the_locked_output_untouched(
    job: str, locked: Callable, reference: Callable
) -> None:
    held = locked(job)
    assert_same_tree(held.after, held.before, f"{job} output while locked")  # nothing changed
    assert held.holder_rc == 0, (
        f"the run holding the lock failed once continued:\n{held.holder.describe()}"
    )
    assert_same_tree(held.final, reference(job), f"{job} output of the run that held the lock")
