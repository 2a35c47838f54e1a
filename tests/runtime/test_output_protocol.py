"""The output protocol of :mod:`pipeline.runtime.output`, on local folders and on S3.

Lock (one run per output, live / dead / stale owners), refusal and ``--overwrite`` of owned
files only, verified ``--resume``, ``abandon`` after a user error or another failure, manifest
last, and :func:`check_disjoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import TemporaryFailure, UserError
from pipeline.io.storage import join, resolve
from pipeline.runtime import output as op
from pipeline.runtime.output import LOCK, MANIFEST, PROGRESS, OutputDir, check_disjoint

PARAMS = {"job": "test", "chunk_size": 3}


@dataclass
class Where:
    """An output location for one test: ``url`` (local path or ``s3://…``) and its options."""

    url: str
    options: dict[str, Any]

    @property
    def local(self) -> bool:
        return not self.url.startswith("s3://")

    def out(self, **kw: Any) -> OutputDir:
        return OutputDir(self.url, dict(self.options), **kw)

    def fs(self):
        fs, _ = resolve(self.url, self.options)
        fs.invalidate_cache()
        return fs

    def path(self, relative: str) -> str:
        return join(resolve(self.url, self.options)[1], relative)

    def put(self, relative: str, data: bytes) -> None:
        fs = self.fs()
        if self.local:
            os.makedirs(os.path.dirname(self.path(relative)), exist_ok=True)
        fs.pipe_file(self.path(relative), data)

    def tree(self) -> dict[str, bytes | None]:
        """Every file under the location (bytes), and locally every folder (None)."""
        if self.local:
            root = Path(self.url)
            if not root.exists():
                return {}
            return {
                str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
                for p in sorted(root.rglob("*"))
            }
        fs = self.fs()
        base = resolve(self.url, self.options)[1].rstrip("/")
        try:
            found = fs.find(base, withdirs=False)
        except FileNotFoundError:
            return {}
        return {p[len(base) + 1 :]: fs.cat_file(p) for p in found if p != base}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if request.param == "local":
        return Where(str(tmp_path / "new" / "out"), {})
    bucket = request.getfixturevalue("s3_bucket")
    return Where(f"{bucket}/exports/out", request.getfixturevalue("s3_storage_options"))


@pytest.fixture
def local(tmp_path: Path) -> Where:
    return Where(str(tmp_path / "out"), {})


def _write(out: OutputDir, relative: str, data: bytes) -> op.PartRecord:
    return out.write_part(relative, lambda h: (h.write(data) and 1, {"n": len(data)}))


def _lock_body(*, pid: int, host: str | None = None, age: float = 0.0) -> bytes:
    host = socket.gethostname() if host is None else host
    body = {"run": uuid.uuid4().hex, "host": host, "pid": pid, "heartbeat": time.time() - age}
    return json.dumps(body).encode()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- lock --------------------------------------------------------------------------------------
def test_lock_names_its_owner_and_release_removes_it(where: Where) -> None:
    out = where.out()
    assert out.prepare(PARAMS) == {}
    held = json.loads(where.tree()[LOCK])
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert held["run"] == out.lock.token and held["heartbeat"] <= time.time()
    out.lock.release()
    assert LOCK not in where.tree()
    out.lock.release()  # twice: nothing happens


def test_second_run_on_a_held_output_gets_exit_3_and_changes_nothing(where: Where) -> None:
    first = where.out()
    first.prepare(PARAMS)
    _write(first, "part-00000.jsonl", b"a\n")
    before = where.tree()
    for kw in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(
            TemporaryFailure, match=rf"in use by another dexport run \(pid {os.getpid()}"
        ) as err:
            where.out().prepare(PARAMS, **kw)
        assert err.value.exit_code == 3
        assert where.tree() == before
    first.lock.release()
    second = where.out()
    assert second.prepare(PARAMS, resume=True) == {
        "part-00000.jsonl": _record(where, "part-00000.jsonl")
    }
    second.lock.release()


def _record(where: Where, relative: str) -> op.PartRecord:
    name = relative.replace("/", "__")
    return op.PartRecord(**json.loads(where.tree()[f"{PROGRESS}/{name}.json"]))


def test_lock_of_a_live_process_refuses_and_is_taken_over_once_it_died(where: Where) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        where.put(LOCK, _lock_body(pid=proc.pid))
        with pytest.raises(
            TemporaryFailure, match=f"pid {proc.pid} on {socket.gethostname()}"
        ) as err:
            where.out().prepare(PARAMS)
        assert err.value.exit_code == 3
        assert json.loads(where.tree()[LOCK])["pid"] == proc.pid  # not touched
    finally:
        proc.kill()
        proc.wait()
    out = where.out()
    out.prepare(PARAMS)  # same host, process gone: stale
    assert json.loads(where.tree()[LOCK])["run"] == out.lock.token
    out.lock.release()


def test_lock_of_a_dead_process_on_this_host_is_stale(where: Where) -> None:
    where.put(LOCK, _lock_body(pid=_dead_pid()))
    out = where.out()
    out.prepare(PARAMS)
    assert json.loads(where.tree()[LOCK])["pid"] == os.getpid()
    out.lock.release()
    assert LOCK not in where.tree()


def test_lock_of_a_killed_process_nobody_reaped_is_stale(local: Where) -> None:
    # ``kill -9`` from a shell that does not wait leaves a zombie: it answers signals, but its
    # run is over.
    proc = subprocess.Popen(["sleep", "30"])
    os.kill(proc.pid, 9)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    local.put(LOCK, _lock_body(pid=proc.pid))
    out = local.out()
    out.prepare(PARAMS)
    assert json.loads(local.tree()[LOCK])["pid"] == os.getpid()
    out.lock.release()
    proc.wait()


def test_lock_of_another_host_is_stale_only_when_its_heartbeat_stopped(where: Where) -> None:
    where.put(LOCK, _lock_body(pid=1, host="elsewhere.example", age=op.LOCK_STALE_S / 2))
    with pytest.raises(TemporaryFailure, match="on elsewhere.example"):
        where.out().prepare(PARAMS)
    where.put(LOCK, _lock_body(pid=1, host="elsewhere.example", age=op.LOCK_STALE_S + 5))
    out = where.out()
    out.prepare(PARAMS)
    assert json.loads(where.tree()[LOCK])["host"] == socket.gethostname()
    out.lock.release()


@pytest.mark.parametrize(
    "body", [b"", b'{"run": "ab', b"42", b"[1]", b'{"pid": "x", "heartbeat": "y"}']
)
def test_an_unreadable_lock_is_stale(local: Where, body: bytes) -> None:
    local.put(LOCK, body)
    out = local.out()
    out.prepare(PARAMS)
    assert json.loads(local.tree()[LOCK])["run"] == out.lock.token
    out.lock.release()


def test_release_keeps_a_lock_another_run_took_over(local: Where) -> None:
    out = local.out()
    out.prepare(PARAMS)
    other = _lock_body(pid=os.getpid())
    local.put(LOCK, other)
    out.lock.release()
    assert local.tree()[LOCK] == other


# -- refusing and overwriting ------------------------------------------------------------------
def test_existing_output_is_refused_without_overwrite_and_left_as_it_was(local: Where) -> None:
    local.put("notes.txt", b"mine")
    (Path(local.url) / "empty" / "deeper").mkdir(parents=True)  # folders count too
    before = local.tree()
    with pytest.raises(UserError, match="already exists and is not empty; it was not written by"):
        local.out().prepare(PARAMS)
    with pytest.raises(UserError, match=r"not written by dexport \(it holds notes.txt\)"):
        local.out().prepare(PARAMS, overwrite=True)
    with pytest.raises(UserError, match="exclude each other"):
        local.out().prepare(PARAMS, overwrite=True, resume=True)
    with pytest.raises(UserError, match="no interrupted dexport run to resume"):
        local.out().prepare(PARAMS, resume=True)
    assert local.tree() == before


def test_an_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"x")
    with pytest.raises(UserError, match="is a file"):
        OutputDir(str(tmp_path / "out")).prepare(PARAMS, overwrite=True)
    assert (tmp_path / "out").read_bytes() == b"x"


def _finished(where: Where, parts: dict[str, bytes]) -> OutputDir:
    out = where.out()
    out.prepare(PARAMS)
    records = [_write(out, rel, data) for rel, data in parts.items()]
    out.finalize(PARAMS, "test", records, {"rows": len(records)})
    return out


def test_finalize_writes_the_manifest_drops_progress_and_releases_the_lock(where: Where) -> None:
    _finished(where, {"part-00000.jsonl": b"a\n", "train/part-00001.jsonl": b"b\n"})
    tree = {k: v for k, v in where.tree().items() if v is not None}
    assert sorted(tree) == [MANIFEST, "part-00000.jsonl", "train/part-00001.jsonl"]
    manifest = json.loads(tree[MANIFEST])
    assert manifest["tool"] == "dexport" and manifest["job"] == "test"
    assert manifest["parameters"] == PARAMS
    assert [f["path"] for f in manifest["files"]] == ["part-00000.jsonl", "train/part-00001.jsonl"]
    assert manifest["files"][0]["sha256"] == hashlib.sha256(b"a\n").hexdigest()


def test_overwrite_removes_what_dexport_wrote(where: Where) -> None:
    _finished(
        where, {"part-00000.jsonl": b"a\n", "part-00001.jsonl": b"b\n", "x/part-00002.jsonl": b"c"}
    )
    out = where.out()
    assert out.prepare(PARAMS, overwrite=True) == {}
    tree = where.tree()
    assert sorted(k for k, v in tree.items() if v is not None) == [LOCK, f"{PROGRESS}/params.json"]
    out.lock.release()


@pytest.mark.parametrize("foreign", ["notes.txt", "sub/notes.txt", "part-00009.jsonl"])
def test_overwrite_refuses_a_finished_output_holding_other_files_and_names_them(
    where: Where, foreign: str
) -> None:
    _finished(where, {"part-00000.jsonl": b"a\n"})
    where.put(foreign, b"mine")
    before = where.tree()
    with pytest.raises(UserError, match=rf"holds files dexport did not write \({foreign}\)"):
        where.out().prepare(PARAMS, overwrite=True)
    assert where.tree() == before


def test_owned_files_of_an_interrupted_run(local: Where) -> None:
    out = local.out(owned=(r"^README\.md$",))
    out.prepare(PARAMS)
    _write(out, "part-00000.jsonl", b"a")
    out.lock.release()  # killed: no manifest
    temp = f".part-00001.jsonl.{uuid.uuid4().hex}.tmp"
    for name in ("part-00001.jsonl", "README.md", temp, f"sub/{temp}"):
        local.put(name, b"left by the run")
    existing = local.out(owned=(r"^README\.md$",)).listing()
    owned = local.out(owned=(r"^README\.md$",)).owned_files(existing)
    assert sorted(owned) == sorted(existing)
    local.put("notes.md", b"mine")
    local.put("README.txt", b"mine")
    with pytest.raises(UserError, match=r"did not write \(README.txt, notes.md\)"):
        local.out(owned=(r"^README\.md$",)).owned_files(local.out().listing())


@pytest.mark.parametrize(
    "manifest",
    [b'{"tool": "other", "files": []}', b"not json", b"[]"],
    ids=["other-tool", "not-json", "not-a-dict"],
)
def test_a_manifest_dexport_did_not_write_gives_no_ownership(local: Where, manifest: bytes) -> None:
    local.put(MANIFEST, manifest)
    local.put("part-00000.jsonl", b"a")
    with pytest.raises(UserError, match="not written by dexport"):
        local.out().owned_files(local.out().listing())


# -- resume ------------------------------------------------------------------------------------
def _interrupted(where: Where) -> None:
    out = where.out()
    out.prepare(PARAMS)
    for i, data in enumerate([b"zero\n", b"one\n", b"two\n", b"three\n"]):
        _write(out, f"part-{i:05d}.jsonl", data)
    out.abandon(RuntimeError("cluster lost"))


def test_resume_keeps_intact_parts_and_redoes_changed_or_missing_ones(where: Where) -> None:
    _interrupted(where)
    where.put("part-00001.jsonl", b"ONE\n")  # same size, other bytes
    where.put("part-00002.jsonl", b"tw")  # other size
    where.fs().rm(where.path("part-00003.jsonl"))  # gone
    temp = f".part-00004.jsonl.{uuid.uuid4().hex}.tmp"
    where.put(temp, b"half a part")  # a killed writer's temporary
    out = where.out()
    done = out.prepare(PARAMS, resume=True)
    assert sorted(done) == ["part-00000.jsonl"]
    assert done["part-00000.jsonl"].sha256 == hashlib.sha256(b"zero\n").hexdigest()
    assert done["part-00000.jsonl"].extra == {"n": 5}
    assert out.fresh is False
    tree = where.tree()
    files = sorted(k for k, v in tree.items() if v is not None)
    assert files == [
        LOCK,
        f"{PROGRESS}/params.json",
        f"{PROGRESS}/part-00000.jsonl.json",
        "part-00000.jsonl",
    ]
    assert tree["part-00000.jsonl"] == b"zero\n"
    out.lock.release()


def test_resume_with_other_parameters_is_refused_and_names_them(where: Where) -> None:
    _interrupted(where)
    before = where.tree()
    with pytest.raises(
        UserError, match=r"other parameters than the interrupted run \(differs: chunk_size\)"
    ):
        where.out().prepare({**PARAMS, "chunk_size": 4}, resume=True)
    assert where.tree() == before


def test_resume_of_a_finished_run_returns_its_files(where: Where) -> None:
    _finished(where, {"part-00000.jsonl": b"a\n"})
    out = where.out()
    assert sorted(out.prepare(PARAMS, resume=True)) == ["part-00000.jsonl"]
    out.lock.release()
    with pytest.raises(UserError, match="finished run with other parameters"):
        where.out().prepare({**PARAMS, "chunk_size": 1}, resume=True)


# -- abandon -----------------------------------------------------------------------------------
def test_abandon_after_a_user_error_removes_what_a_fresh_run_wrote(
    where: Where, tmp_path: Path
) -> None:
    out = where.out()
    out.prepare(PARAMS)
    _write(out, "part-00000.jsonl", b"a")
    _write(out, "train/part-00001.jsonl", b"b")
    where.put(f".part-00002.jsonl.{uuid.uuid4().hex}.tmp", b"c")
    out.abandon(UserError("record 7 is not valid"))
    assert where.tree() == {}
    if where.local:  # the folders the run made are gone too, up to the first that existed
        assert list(tmp_path.iterdir()) == []


def test_abandon_after_a_user_error_keeps_an_existing_folder(local: Where) -> None:
    (Path(local.url) / "keep").mkdir(parents=True)
    out = local.out()
    out.prepare(PARAMS)
    _write(out, "part-00000.jsonl", b"a")
    out.abandon(UserError("bad record"))
    assert Path(local.url).is_dir() and not any(Path(local.url).rglob("*.jsonl"))


def test_abandon_after_another_failure_keeps_parts_for_resume(where: Where) -> None:
    out = where.out()
    out.prepare(PARAMS)
    _write(out, "part-00000.jsonl", b"a")
    out.abandon(RuntimeError("worker died"))
    tree = where.tree()
    assert LOCK not in tree and tree["part-00000.jsonl"] == b"a"
    again = where.out()
    assert sorted(again.prepare(PARAMS, resume=True)) == ["part-00000.jsonl"]
    again.abandon(UserError("bad input found while resuming"))  # not fresh: parts stay
    assert where.tree()["part-00000.jsonl"] == b"a"
    assert LOCK not in where.tree()


def test_an_interrupted_single_file_export_names_its_file_and_the_way_out(local: Where) -> None:
    out = local.out(staging_for="/data/export.jsonl")
    out.prepare(PARAMS)
    _write(out, "part-00000.jsonl", b"a")
    out.abandon(KeyboardInterrupt())
    with pytest.raises(UserError) as err:
        local.out(staging_for="/data/export.jsonl").prepare(PARAMS)
    assert str(err.value) == (
        f"an interrupted export to /data/export.jsonl left its finished parts in {local.url}; "
        "pass --resume to finish it, or --overwrite to start again"
    )


def test_discard_removes_a_staging_folder(where: Where) -> None:
    out = where.out()
    out.prepare(PARAMS)
    _write(out, "part-00000.jsonl", b"a")
    out.discard()
    assert where.tree() == {}


# -- check_disjoint ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("out", "inputs", "relation"),
    [
        ("data/ds.bin", ["data/ds.bin", "data/ds.idx"], "is"),
        ("data/corpus", ["data/corpus"], "is"),
        ("data/corpus/", ["data/corpus"], "is"),
        ("data", ["data/ds.bin", "data/ds.idx"], "contains"),
        (".", ["data/corpus/a.jsonl"], "contains"),
        ("data/corpus/export", ["data/corpus"], "lies inside"),
        ("data/corpus/a/b", ["data/corpus"], "lies inside"),
        ("link/export", ["data/corpus"], "lies inside"),  # through a symlink
        ("data/ds2", ["data/ds.bin", "data/ds.idx", "data/ds"], None),
        ("data/ds", ["data/ds.bin", "data/ds.idx"], None),
        ("data/corpus-export", ["data/corpus"], None),
        ("data/corpus.out", ["data/corpus/a.jsonl"], None),
        ("elsewhere", ["data", ""], None),
        ("data", ["s3://bucket/data"], None),
    ],
)
def test_check_disjoint_local(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    out: str,
    inputs: list[str],
    relation: str | None,
) -> None:
    (tmp_path / "data" / "corpus").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data" / "corpus")
    monkeypatch.chdir(tmp_path)
    if relation is None:
        check_disjoint(out, inputs)
        return
    with pytest.raises(UserError, match=rf"^--out \S+ {relation} the input "):
        check_disjoint(out, inputs)


@pytest.mark.parametrize(
    ("out", "inputs", "relation"),
    [
        ("s3://b/data", ["s3://b/data/"], "is"),
        ("s3://b", ["s3://b/data/ds.bin"], "contains"),
        ("s3://b/data/export", ["s3://b/data"], "lies inside"),
        ("s3://b/data/ds2", ["s3://b/data/ds.bin", "s3://b/data/ds"], None),
        ("s3://b2/data", ["s3://b/data"], None),
    ],
)
def test_check_disjoint_s3_urls(out: str, inputs: list[str], relation: str | None) -> None:
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    if relation is None:
        check_disjoint(out, inputs, options)
        return
    with pytest.raises(UserError, match=f"{relation} the input"):
        check_disjoint(out, inputs, options, what="--out")


def test_a_run_whose_new_lock_was_taken_over_before_it_was_written_backs_off(
    local: Where, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run A creates the lock file; before A writes it, run B reads it empty (stale) and
    replaces it. A must see that B holds the lock instead of running beside it."""
    other = _lock_body(pid=os.getpid())
    real_fdopen = os.fdopen

    def fdopen_then_taken_over(fd: int, *args: Any, **kw: Any):
        assert json.loads(Path(local.url, LOCK).read_bytes() or b"{}") == {}
        tmp = Path(local.url, ".lock-of-b")
        tmp.write_bytes(other)
        os.replace(tmp, Path(local.url, LOCK))  # B's atomic write
        return real_fdopen(fd, *args, **kw)

    out = local.out()
    with monkeypatch.context() as patch:
        patch.setattr(os, "fdopen", fdopen_then_taken_over)
        with pytest.raises(TemporaryFailure, match="in use by another dexport run"):
            out.prepare(PARAMS)
    assert local.tree()[LOCK] == other
