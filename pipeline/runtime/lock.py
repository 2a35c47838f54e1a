"""``OUT/.dexport-lock``: one run per output at a time, on local disk and S3.

The lock records the run (a random token), the host, the process id, the start time and a
heartbeat refreshed every :data:`LOCK_HEARTBEAT_S` seconds. A second run finds it and is refused
with :class:`~pipeline.errors.TemporaryFailure` (exit 3) naming the holder, unless the lock is
stale: its process is dead on this host, its heartbeat stopped for :data:`LOCK_STALE_S`
seconds (``DEXPORT_LOCK_STALE_S``), or it is unreadable; a stale lock is taken over with a
notice. Taking the lock is a compare-and-swap on either store, so of two runs exactly one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

import fsspec

from pipeline.errors import TemporaryFailure
from pipeline.io.storage import is_local, write_bytes_atomic

LOCK = ".dexport-lock"
TAKEOVER = ".takeover"  # beside the lock, while a run replaces a stale one (local disk)
LOCK_FILES = (LOCK, LOCK + TAKEOVER)
TAKEOVER_STALE_S = 30.0
UNREADABLE_GRACE_S = 2.0  # an empty local lock younger than this is still being written
LOCK_HEARTBEAT_S = 15.0
LOCK_STALE_S = float(os.environ.get("DEXPORT_LOCK_STALE_S", "120"))


def _body_json(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


class OutputLock:
    """``OUT/.dexport-lock``: one run per output, on local disk and S3, with a heartbeat.

    Locally the lock is created with ``O_EXCL``; on S3 with a conditional write
    (``If-None-Match: *``), and a stale lock is taken over, and the heartbeat refreshed, with
    ``If-Match`` on the ETag read, so of two runs starting together exactly one wins. A store
    that ignores the conditions still gets the read-back check (the last writer wins, the other
    run sees a foreign token and retries).
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
        self.fs, self.path, self.url = fs, path, url
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._etag: str | None = None  # S3: ETag of the lock as last read or written by us
        self.took_over: dict[str, Any] | None = None  # the stale lock this run replaced
        self._started = 0.0

    def _body(self) -> bytes:
        return _body_json(
            {
                "run": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": self._started,
                "heartbeat": time.time(),
            }
        )

    def ensure_free(self) -> None:
        """Raise TemporaryFailure when a live run holds the lock (read-only check)."""
        held = self._read()
        if held is not None and not _stale(held):
            self._refuse(held)

    def acquire(self) -> None:
        """Take the lock or raise TemporaryFailure naming the run that holds it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # each retry: another run changed the lock meanwhile
            held = self._read()
            if held == {} and self._being_written():
                time.sleep(0.02)
                continue
            if held is not None and not _stale(held):
                self._refuse(held)
            if self._take(held):
                if held:
                    self.took_over = held  # told once the run goes ahead (announce_take_over)
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name="dexport-lock", daemon=True)
                self._thread.start()
                return
        raise TemporaryFailure(f"output {self.url} is contended by other dexport runs; retry later")

    def announce_take_over(self) -> None:
        """Tell the user that this run took over a dead run's lock (once the run goes ahead:
        a run that is refused next says only why)."""
        if self.took_over:
            _notice_take_over(self.url, self.took_over)
            self.took_over = None

    def _being_written(self) -> bool:
        """An unreadable local lock created a moment ago: its run is writing it (not stale)."""
        if not is_local(self.fs):
            return False  # an S3 object appears with its content
        try:
            return time.time() - os.path.getmtime(self.path) < UNREADABLE_GRACE_S
        except OSError:
            return False

    def _refuse(self, held: dict[str, Any]) -> None:
        beat = float(held.get("heartbeat", 0))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(beat))
        raise TemporaryFailure(
            f"output {self.url} is in use by another dexport run (pid {held.get('pid')} "
            f"on {held.get('host')}, alive at {since}); wait for it to finish, "
            f"or remove {self.url.rstrip('/')}/{LOCK} if that run is gone"
        )

    def _take(self, held: dict[str, Any] | None) -> bool:
        """Write our lock over ``held`` (None: no lock); False when another run got there first."""
        self._started = self._started or time.time()
        if is_local(self.fs):
            if held is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                try:  # O_EXCL: of two runs starting together, exactly one creates the lock
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as handle:
                    handle.write(self._body())
            elif not self._replace_local(held):
                return False
        elif not self._put_conditional(held):
            return False
        # Another run wrote after us (or took our half-written lock for a stale one).
        return (self._read() or {}).get("run") == self.token

    def _replace_local(self, held: dict[str, Any]) -> bool:
        """Replace the stale lock ``held`` unless another run replaced it first.

        A rename cannot compare before it writes, so takers of a stale lock first create
        ``.dexport-lock.takeover`` (``O_EXCL``): the one that does re-reads the lock and replaces
        it only if it is still the stale one. A mutex left by a run killed in those few
        microseconds is removed after :data:`TAKEOVER_STALE_S`.
        """
        mutex = self.path + TAKEOVER
        try:
            os.close(os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - os.path.getmtime(mutex) > TAKEOVER_STALE_S:
                    os.unlink(mutex)
            time.sleep(0.05)
            return False
        try:
            if self._read() != held:
                return False
            write_bytes_atomic(self.fs, self.path, self._body())
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(mutex)

    def _put_conditional(self, held: dict[str, Any] | None) -> bool:
        condition = {"IfNoneMatch": "*"} if held is None else {"IfMatch": self._etag or "*"}
        try:
            response = self.fs.pipe_file(self.path, self._body(), **condition)
        except OSError as exc:
            code = _s3_error_code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if code != "NotImplemented":
                raise
            # A store without conditional writes: fall back to the read-back check.
            write_bytes_atomic(self.fs, self.path, self._body())
            return True
        self._etag = (response or {}).get("ETag") if isinstance(response, dict) else None
        return True

    def _beat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            with contextlib.suppress(Exception):
                if is_local(self.fs):
                    write_bytes_atomic(self.fs, self.path, self._body())
                elif self._etag is not None:
                    response = self.fs.pipe_file(self.path, self._body(), IfMatch=self._etag)
                    self._etag = (response or {}).get("ETag") or self._etag
                else:
                    write_bytes_atomic(self.fs, self.path, self._body())

    def _read(self) -> dict[str, Any] | None:
        try:
            if not is_local(self.fs):
                # The ETag first: content read after it is at least as new, so a conditional
                # write on it can only fail (never replace a lock refreshed in between).
                self.fs.invalidate_cache(self.path)
                self._etag = self.fs.info(self.path).get("ETag")
            held = json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}  # unreadable: a run died while writing it; treat as stale
        return held if isinstance(held, dict) else {}

    def release(self) -> None:
        """Stop the heartbeat and remove the lock (only if it is still ours)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        with contextlib.suppress(FileNotFoundError):
            if (self._read() or {}).get("run") == self.token:
                self.fs.rm(self.path)


def _s3_error_code(exc: BaseException) -> str | None:
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            if code:
                return str(code)
    return None


def _notice_take_over(url: str, held: dict[str, Any]) -> None:
    from pipeline.runtime import log

    beat = held.get("heartbeat")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(beat)))
        if isinstance(beat, int | float)
        else "unknown"
    )
    log.warning(
        f"took over the lock of {url} from a run that is gone (pid {held.get('pid')} on "
        f"{held.get('host')}, last alive at {when})"
    )


def _stale(held: dict[str, Any]) -> bool:
    if not held:
        return True
    try:
        pid, heartbeat = int(held.get("pid", 0)), float(held.get("heartbeat", 0))
    except (TypeError, ValueError):
        return True  # not a lock a dexport run wrote: nobody to wait for
    if held.get("host") == socket.gethostname() and not _pid_alive(pid):
        return True
    return time.time() - heartbeat > LOCK_STALE_S


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process nobody has reaped yet (``kill -9`` from a shell that did not wait):
    it still answers signals but will never run again."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False  # no /proc (not Linux): trust the signal
