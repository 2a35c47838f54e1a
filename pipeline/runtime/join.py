"""Join a one-file export's parts into its file, in part order, while later parts still run.

JSONL and CSV parts (and their gzip members / zstd frames) are valid when concatenated, so the
file of a local one-file export grows part by part: each part is appended as soon as every part
before it is in — straight from memory when tasks run in this process (each byte is written
once), or from its staged part file (Dask workers), which is removed once appended. A journal
beside the growing file records each appended part (its record: size, sha256, counters), so
``--resume`` re-uses what an interrupted run joined: each part is checked against its sha256 and
the file is cut after the last good one. The file is renamed to the target only when complete.

Layout, inside the run's staging folder (an :class:`~pipeline.runtime.output.OutputDir`)::

    STAGING/.dexport-progress/joined/{target name}               the file so far
    STAGING/.dexport-progress/joined/{target name}.parts.jsonl   one record per part in it,
                                                                 in order
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import sys
from dataclasses import asdict

from pipeline.io.assemble import copy_local
from pipeline.runtime.output import HASH_BUFFER, JOINED, PartRecord, RenderedPart

# The journal is named after the file, so no target name (``parts.jsonl`` included) is the
# journal's own.
JOURNAL_SUFFIX = ".parts.jsonl"
# Parts held in memory while an earlier one still runs; beyond this many, a part waits in a
# staged file instead, so memory stays bounded however uneven the parts are.
MAX_WAITING_IN_MEMORY = 8


class InOrderJoin:
    """The one file of a local JSONL/CSV export, joined from its parts as they finish.

    ``names`` gives the part order; ``staging`` is the staging folder (staged part files are
    relative to it); ``target`` the file published at the end.
    """

    def __init__(self, names: list[str], staging: str, target: str) -> None:
        self._names = names
        self._staging = staging
        self._target = target
        folder = os.path.join(staging, JOINED)
        self._data_path = os.path.join(folder, os.path.basename(target))
        self._journal_path = self._data_path + JOURNAL_SUFFIX
        self._joined: dict[str, PartRecord] = {}
        self._waiting: dict[str, PartRecord | RenderedPart] = {}
        self._size = 0
        self._out = None  # the growing file, opened on the first append
        self._journal: int | None = None
        self._published = False

    # -- an interrupted run ---------------------------------------------------------------
    def resume(self) -> dict[str, PartRecord]:
        """The parts an interrupted run joined, each checked against its sha256; the file is
        cut after the last good one (later parts are redone). Killed after the rename but
        before the tidy-up, the published target itself is checked, and nothing is redone."""
        entries = self._read_journal()
        if os.path.exists(self._data_path):
            good = _intact_prefix(self._data_path, entries, self._names)
        elif len(entries) == len(self._names) and os.path.exists(self._target):
            good = _intact_prefix(self._target, entries, self._names)
            complete = len(good) == len(entries)
            if complete and os.path.getsize(self._target) == sum(r.bytes for r in good):
                self._published = True
                self._joined = {r.path: r for r in good}
                return dict(self._joined)
            good = []
        else:
            good = []
        self._size = sum(r.bytes for r in good)
        self._joined = {r.path: r for r in good}
        os.makedirs(os.path.dirname(self._data_path), exist_ok=True)
        # The journal first: cut short and killed here, a resume finds fewer parts, never more.
        with open(self._journal_path, "wb") as journal:
            journal.write(b"".join(_journal_line(r) for r in good))
        if os.path.exists(self._data_path):
            os.truncate(self._data_path, self._size)
        return dict(self._joined)

    def _read_journal(self) -> list[PartRecord]:
        try:
            with open(self._journal_path, "rb") as handle:
                lines = handle.read().split(b"\n")
        except FileNotFoundError:
            return []
        entries = []
        for line in lines[:-1]:  # the last piece is empty, or a line cut by the kill
            try:
                entries.append(PartRecord(**json.loads(line)))
            except (ValueError, TypeError):
                break
        return entries

    # -- the run --------------------------------------------------------------------------
    def add(self, name: str, part: PartRecord | RenderedPart) -> PartRecord:
        """Part ``name`` is done (rendered in memory, or a staged file its record names):
        append it and every later one now in order; return its record."""
        record = part.record if isinstance(part, RenderedPart) else part
        if name in self._joined:  # joined by the interrupted run this one resumes
            return self._joined[name]
        if isinstance(part, RenderedPart) and name != self._names[len(self._joined)]:
            held = sum(isinstance(p, RenderedPart) for p in self._waiting.values())
            if held >= MAX_WAITING_IN_MEMORY:
                part = self._spill(part)
        self._waiting[name] = part
        while (k := len(self._joined)) < len(self._names) and self._names[k] in self._waiting:
            self._append(self._names[k], self._waiting.pop(self._names[k]))
        return record

    def _append(self, name: str, part: PartRecord | RenderedPart) -> None:
        if self._out is None:
            os.makedirs(os.path.dirname(self._data_path), exist_ok=True)
            mode = "r+b" if os.path.exists(self._data_path) and self._joined else "wb"
            self._out = open(self._data_path, mode, buffering=0)  # noqa: SIM115 - see close
            self._out.seek(self._size)
            self._journal = os.open(
                self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        start = self._size
        if isinstance(part, RenderedPart):
            for piece in part.pieces:
                _write_all(self._out, piece)
            record = part.record
        else:
            record = part
            with open(os.path.join(self._staging, record.path), "rb") as src:
                copy_local(src, self._out)
        self._size += record.bytes
        self._out.seek(self._size)
        _start_writeback(self._out.fileno(), start, record.bytes)
        os.write(self._journal, _journal_line(record))
        self._joined[name] = record
        if not isinstance(part, RenderedPart):  # now held by the joined file
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self._staging, record.path))

    def _spill(self, part: RenderedPart) -> PartRecord:
        """Write a waiting part to its staged file (appended from there when its turn comes)."""
        with open(os.path.join(self._staging, part.record.path), "wb", buffering=0) as out:
            for piece in part.pieces:
                _write_all(out, piece)
        return part.record

    def publish(self) -> None:
        """Every part is in: make the file durable and rename it to the target."""
        if self._published:
            return
        missing = [n for n in self._names if n not in self._joined]
        if missing:
            raise RuntimeError(f"cannot publish {self._target}: parts missing ({missing[:3]})")
        if self._out is None:  # every part was joined by the run this one resumed
            self._out = open(self._data_path, "r+b", buffering=0)  # noqa: SIM115
        os.fsync(self._out.fileno())
        self.close()
        os.replace(self._data_path, self._target)
        self._published = True

    def close(self) -> None:
        """Release the files (what is joined stays, for ``--resume``)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None


def _journal_line(record: PartRecord) -> bytes:
    return json.dumps(asdict(record), sort_keys=True).encode() + b"\n"


def _intact_prefix(path: str, entries: list[PartRecord], names: list[str]) -> list[PartRecord]:
    """The leading ``entries`` that are the first parts, in order, with their bytes in
    ``path`` one after the other as recorded (size and sha256)."""
    good: list[PartRecord] = []
    with open(path, "rb") as handle:
        for name, record in zip(names, entries, strict=False):
            if record.path != name:
                break
            digest, left = hashlib.sha256(), record.bytes
            while left and (block := handle.read(min(left, HASH_BUFFER))):
                digest.update(block)
                left -= len(block)
            if left or digest.hexdigest() != record.sha256:
                break
            good.append(record)
    return good


def _write_all(out, piece) -> None:  # noqa: ANN001 - an unbuffered file, a bytes-like piece
    view = memoryview(piece).cast("B")
    while view:
        view = view[out.write(view) :]


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``nbytes`` at ``offset`` to disk now, without waiting
    (Linux ``sync_file_range``; elsewhere nothing: the final fsync does it all), so the fsync
    at the end has little left to wait for."""
    call = _sync_file_range()
    if call is not None and nbytes > 0:
        call(fd, ctypes.c_int64(offset), ctypes.c_int64(nbytes), 2)  # SYNC_FILE_RANGE_WRITE


@functools.cache
def _sync_file_range():  # noqa: ANN202 - a ctypes function or None
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
