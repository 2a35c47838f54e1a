"""The output protocol every job uses: lock, refuse / overwrite / resume, publish, manifest last.

Layout of a run in progress::

    OUT/.dexport-lock                   the run holding the output (host, pid, heartbeat)
    OUT/part-00000.jsonl ...            data files, each published atomically
    OUT/.dexport-progress/params.json   the parameters of the run (resume must match them)
    OUT/.dexport-progress/part-00000.jsonl.json   one record per completed part
                                        (rows, bytes, sha256)
    OUT/.dexport-progress/joined/       a one-file export's file so far, with its journal
                                        (``pipeline.runtime.join``)

``finalize`` writes ``_manifest.json`` (files, rows, bytes, sha256, parameters, version), drops
the progress folder and releases the lock, so a directory without ``_manifest.json`` is
incomplete and a finished one holds nothing but data and the manifest.

Rules (the same for every job, on local disk and S3):

- one run per output: a second run (plain, ``--overwrite`` or ``--resume``) is refused with exit
  3 while the lock is held; a lock whose process is gone (same host) or whose heartbeat stopped
  (:data:`LOCK_STALE_S`) is taken over (:mod:`pipeline.runtime.lock`);
- ``--overwrite`` removes only what dexport wrote: the folder must hold dexport's manifest or
  progress marker, and every file in it must be one the manifest, the progress records or the
  job's part names account for; anything else is refused, naming the file;
- ``--resume`` re-uses parts whose size and sha256 still match their records (others are redone)
  and removes the temporary files of killed runs;
- a failed run removes only what it created, and only when the failure is the user's (bad input
  found mid-run) and it started fresh; finished parts of any other failure stay for ``--resume``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from typing import IO, Any

import fsspec

from pipeline.errors import UserError
from pipeline.io.storage import atomic_open, is_local, join, resolve, write_bytes_atomic
from pipeline.runtime.lock import (  # noqa: F401  (LOCK_* re-exported: one place to look)
    LOCK,
    LOCK_FILES,
    LOCK_HEARTBEAT_S,
    LOCK_STALE_S,
    OutputLock,
)

MANIFEST = "_manifest.json"
PROGRESS = ".dexport-progress"
# A one-file export's file while it is joined, and its journal (``pipeline.runtime.join``).
JOINED = f"{PROGRESS}/joined"
# Temporary names of atomic_open: ".{name}.{32 hex}.tmp" beside the final file.
TEMP_NAME = re.compile(r"(^|/)\.[^/]+\.[0-9a-f]{32}\.tmp$")
# Part names every job writes (part-00000.jsonl, train/part-00000.jsonl.gz, rejects/…, shard-…).
PART_NAMES = (re.compile(r"^(.+/)?(part|shard)-\d{5}\.[A-Za-z0-9.]+$"),)
HASH_BUFFER = 8 << 20


def tool_version() -> str:
    """The installed dexport version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dexport")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass(frozen=True)
class PartRecord:
    """What one task wrote: enough for the manifest without re-reading the file."""

    path: str  # relative to the output directory
    rows: int
    bytes: int
    sha256: str
    extra: dict[str, Any] | None = None  # job-specific counters (tokens, rejects by reason, …)


@dataclass(frozen=True)
class RenderedPart:
    """A part rendered in memory by a task of this process: its record and its bytes (the
    pieces its writer wrote, in order), appended to a one-file export by the driver."""

    record: PartRecord
    pieces: list[Any]


class HashingWriter:
    """A write-only file wrapper that counts bytes and computes sha256 as data passes."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._hash = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.bytes += len(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def canonical_json(value: Any) -> bytes:
    """Stable JSON bytes (sorted keys, fixed separators) for manifests and parameters."""
    return (json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


class OutputDir:
    """An output directory (local or ``s3://``) and the run writing into it.

    ``owned`` adds patterns (regular expressions over paths relative to the directory) of the
    job's own file names, beyond part files, that an interrupted run may have left.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        *,
        owned: tuple[str, ...] = (),
        staging_for: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        # The output file this folder stages parts for (a single-file export), named in messages.
        self.staging_for = staging_for
        self.storage_options = dict(storage_options or {})
        self.fs, self.path = resolve(self.url, self.storage_options)
        self.owned = PART_NAMES + tuple(re.compile(p) for p in owned)
        self.lock = OutputLock(self.fs, self.file(LOCK), self.url)
        self.fresh = True  # no finished part of an earlier run is re-used
        self.kept: set[str] = set()  # files of earlier generations: never removed by this run
        self._made: str | None = None  # the top-most local folder this run created

    # -- paths ----------------------------------------------------------------------------
    def file(self, relative: str) -> str:
        """Filesystem path of ``relative`` inside the directory."""
        return join(self.path, relative)

    def _relative(self, path: str) -> str:
        return path[len(self.path.rstrip("/")) + 1 :]

    def listing(self) -> list[str]:
        """Every file under the directory (relative paths), the lock excepted."""
        self._forget_listings()
        try:
            found = [p for p in self.fs.find(self.path, withdirs=False) if p != self.path]
        except FileNotFoundError:
            return []
        finally:
            self._forget_listings()  # or files workers write later look missing (on S3)
        return [r for r in (self._relative(p) for p in found) if r and r not in LOCK_FILES]

    def _forget_listings(self) -> None:
        """Drop the folder listings s3fs caches per filesystem object.

        ``find`` fills that cache for every sub-folder (``train/``, …) and never refreshes an
        entry already there, and ``open``/``cat_file``/``exists`` trust it: a part published
        by a worker after a listing would then be "not found" here. (Local: a no-op.)
        """
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache()

    def exists(self) -> bool:
        """True when the directory holds any file (the lock aside)."""
        return bool(self.listing())

    # -- lifecycle ------------------------------------------------------------------------
    def prepare(
        self, params: dict[str, Any], *, overwrite: bool = False, resume: bool = False
    ) -> dict[str, PartRecord]:
        """Lock the directory and make it ready; return parts already completed (``resume``)."""
        done = self._prepare(params, overwrite=overwrite, resume=resume)
        self.lock.announce_take_over()
        return done

    def _prepare(self, params: dict[str, Any], *, overwrite: bool, resume: bool) -> dict[str, Any]:
        if overwrite and resume:
            raise UserError("--overwrite and --resume exclude each other; pass one of them")
        self._check_writable()
        self._made = _first_missing(self.path) if is_local(self.fs) else None
        self.lock.acquire()
        try:
            existing = self.listing()
            if existing and resume:
                done = self._completed_parts(params, existing)
                self.fresh = not done
                return done
            if existing and not overwrite:
                raise UserError(self._taken_message(existing))
            if existing:
                self._remove(self.owned_files(existing))
            write_bytes_atomic(
                self.fs, self.file(f"{PROGRESS}/params.json"), canonical_json(params)
            )
            return {}
        except BaseException:
            self._release_and_tidy()
            raise

    def _taken_message(self, existing: list[str]) -> str:
        """Why an existing output is refused, and the way out."""
        hint = self.takeover_hint(existing)
        interrupted = MANIFEST not in existing and f"{PROGRESS}/params.json" in existing
        if interrupted and hint.startswith("pass "):
            way_out = "pass --resume to finish it, or --overwrite to start again"
            if self.staging_for is not None:
                return (
                    f"an interrupted export to {self.staging_for} left its finished parts in "
                    f"{self.url}; {way_out}"
                )
            return f"output {self.url} holds an interrupted export; {way_out}"
        return f"output {self.url} already exists and is not empty; " + hint

    def prepare_generation(
        self,
        params: dict[str, Any],
        *,
        kept: set[str],
        rebuild: bool = False,
        guard: Any = None,
    ) -> dict[str, PartRecord]:
        """Incremental runs: lock, keep the published generations, finish or clear an interrupted
        one; return the parts of this generation already completed.

        ``kept`` are the files the current manifest lists (never removed, whatever happens);
        ``guard()`` runs once the lock is held and raises if the output changed since the run
        planned on it. An interrupted run of the same generation (same ``params``) is resumed;
        one with other parameters (more inputs have arrived since) is cleared first.
        ``rebuild`` removes everything dexport wrote (as ``--overwrite``).
        """
        done = self._prepare_generation(params, kept=kept, rebuild=rebuild, guard=guard)
        self.lock.announce_take_over()
        return done

    def _prepare_generation(
        self, params: dict[str, Any], *, kept: set[str], rebuild: bool, guard: Any
    ) -> dict[str, PartRecord]:
        self._check_writable()
        self._made = _first_missing(self.path) if is_local(self.fs) else None
        self.lock.acquire()
        try:
            if guard is not None:
                guard()
            existing = self.listing()
            if rebuild and existing:
                self._remove(self.owned_files(existing, flag="--rebuild"))
                existing = self.listing()
            self.kept = set(kept) | ({MANIFEST} if kept else set())
            progress = f"{PROGRESS}/params.json"
            if progress in existing:
                previous = self._read_json(progress)
                if previous == json.loads(canonical_json(params)):
                    done = self._completed_parts(params, existing)
                    self.fresh = not done
                    return done
                self._remove(self._leftovers(existing))  # another generation, interrupted
            else:
                self._remove([rel for rel in existing if TEMP_NAME.search(rel)])
            write_bytes_atomic(self.fs, self.file(progress), canonical_json(params))
            return {}
        except BaseException:
            self._release_and_tidy()
            raise

    def _leftovers(self, existing: list[str]) -> list[str]:
        """Files of an unfinished run (progress, temporaries, its parts), kept files excepted."""
        return [
            rel
            for rel in existing
            if rel not in self.kept
            and (
                rel.startswith(f"{PROGRESS}/")
                or TEMP_NAME.search(rel)
                or any(p.match(rel) for p in self.owned)
            )
        ]

    def _check_writable(self) -> None:
        try:
            if self.fs.isfile(self.path) and self.staging_for is not None:
                raise UserError(
                    f"a file {self.url} is where the export to {self.staging_for} stages its "
                    "parts; move it away or pick another --out"
                )
            if self.fs.isfile(self.path):
                raise UserError(
                    f"output {self.url} is a file; pass a directory "
                    "(or a file name with a known extension for one file)"
                )
        except PermissionError as exc:
            raise UserError(
                f"no permission to read {self.url} ({exc}); "
                "check the credentials or --storage-options"
            ) from None

    def owned_files(self, existing: list[str], *, flag: str = "--overwrite") -> list[str]:
        """The files of ``existing`` dexport wrote; UserError when it holds anything else."""
        marked, owned, foreign = self._sort_files(existing)
        if not marked:
            raise UserError(
                f"{flag} refused: {self.url} was not written by dexport "
                f"(it holds {_sample(existing)}); pick another --out or move those files away"
            )
        if foreign:
            raise UserError(
                f"{flag} refused: {self.url} holds files dexport did not write "
                f"({', '.join(sorted(foreign)[:3])}); move them away or pick another --out"
            )
        return owned

    def takeover_hint(
        self,
        existing: list[str] | None = None,
        action: str = "--overwrite to replace it or --resume to finish an interrupted run",
    ) -> str:
        """The end of an "output taken" message: a way out that works.

        ``"pass {action}"`` when dexport wrote everything in the folder (``--overwrite`` and
        ``--rebuild`` would replace it); otherwise the files dexport did not write and "pick
        another --out", since ``--overwrite``, ``--resume`` and ``--rebuild`` all leave them.
        """
        existing = self.listing() if existing is None else existing
        marked, _owned, foreign = self._sort_files(existing)
        if marked and not foreign:
            return f"pass {action}"
        if not marked:
            return (
                f"it was not written by dexport (it holds {_sample(existing)}); "
                "pick another --out or remove those files yourself"
            )
        return (
            f"it holds files dexport did not write ({_sample(foreign)}); "
            "pick another --out or remove them yourself"
        )

    def _sort_files(self, existing: list[str]) -> tuple[bool, list[str], list[str]]:
        """``(dexport's marker present, files dexport wrote, files it did not)``."""
        manifest = self._read_json(MANIFEST) if MANIFEST in existing else None
        has_progress = any(p.startswith(f"{PROGRESS}/") for p in existing)
        ours = isinstance(manifest, dict) and manifest.get("tool") == "dexport"
        if not (has_progress or ours):
            return False, [], list(existing)
        listed = {MANIFEST} | {f["path"] for f in manifest.get("files", [])} if ours else set()
        owned, foreign = [], []
        for rel in existing:
            mine = (
                rel in listed
                or rel.startswith(f"{PROGRESS}/")
                or TEMP_NAME.search(rel)
                or (has_progress and any(p.match(rel) for p in self.owned))
            )
            (owned if mine else foreign).append(rel)
        return True, owned, foreign

    def _read_json(self, relative: str) -> Any:
        try:
            return json.loads(self.fs.cat_file(self.file(relative)))
        except (FileNotFoundError, ValueError):
            return None

    def _completed_parts(
        self, params: dict[str, Any], existing: list[str]
    ) -> dict[str, PartRecord]:
        params_path = self.file(f"{PROGRESS}/params.json")
        if MANIFEST in existing and f"{PROGRESS}/params.json" not in existing:
            manifest = self._read_json(MANIFEST) or {}
            if manifest.get("parameters") != json.loads(canonical_json(params)):
                raise UserError(
                    f"output {self.url} is a finished run with other parameters; "
                    + self.takeover_hint(existing, "--overwrite to replace it")
                )
            return {f["path"]: PartRecord(**f) for f in manifest["files"]}
        if f"{PROGRESS}/params.json" not in existing:
            raise UserError(
                f"output {self.url} holds no interrupted dexport run to resume; "
                + self.takeover_hint(existing, "--overwrite to replace it")
            )
        previous = json.loads(self.fs.cat_file(params_path))
        if previous != json.loads(canonical_json(params)):
            changed = sorted(
                k for k in set(previous) | set(params) if previous.get(k) != params.get(k)
            )
            raise UserError(
                f"--resume with other parameters than the interrupted run "
                f"(differs: {', '.join(changed)}); repeat the original command or pass --overwrite"
            )
        self._remove([rel for rel in existing if TEMP_NAME.search(rel)])  # killed runs' temporaries
        present = set(existing)
        done: dict[str, PartRecord] = {}
        for rel in existing:
            if not rel.startswith(f"{PROGRESS}/") or rel == f"{PROGRESS}/params.json":
                continue
            if rel.startswith(f"{JOINED}/"):  # a one-file export's joined parts: its joiner's
                continue
            if TEMP_NAME.search(rel):  # a record cut by the kill, removed just above
                continue
            record = PartRecord(**json.loads(self.fs.cat_file(self.file(rel))))
            if record.path in present and self._intact(record):
                done[record.path] = record
            else:  # missing or changed since it was recorded: redo it
                self._remove([rel, record.path] if record.path in present else [rel])
        return done

    def _intact(self, record: PartRecord) -> bool:
        """True when the part still has its recorded size and sha256."""
        path = self.file(record.path)
        if self.fs.size(path) != record.bytes:
            return False
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as handle:
            while block := handle.read(HASH_BUFFER):
                digest.update(block)
        return digest.hexdigest() == record.sha256

    def write_part(self, relative: str, write: Any) -> PartRecord:
        """Publish ``relative`` atomically with ``write(handle) -> (rows, extra)`` and record it."""
        return write_part(self.fs, self.path, relative, write)

    def finalize(
        self,
        params: dict[str, Any],
        job: str,
        parts: list[PartRecord],
        totals: dict[str, Any],
        extra_files: list[PartRecord] = (),
        incremental: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``_manifest.json`` (last), drop the progress records and release the lock.

        ``incremental`` (generations and the state to extend them) goes into the manifest of an
        incremental output.
        """
        files = sorted([*parts, *extra_files], key=lambda r: r.path)
        manifest = {
            "tool": "dexport",
            "version": tool_version(),
            "job": job,
            "parameters": json.loads(canonical_json(params)),
            "files": [asdict(r) for r in files],
            "totals": totals,
        }
        if incremental is not None:
            manifest["incremental"] = incremental
        write_bytes_atomic(self.fs, self.file(MANIFEST), canonical_json(manifest))
        self.drop_progress()
        self.lock.release()
        return manifest

    def drop_progress(self) -> None:
        """Remove the progress records (the run's result is published elsewhere or here)."""
        if self.fs.exists(self.file(PROGRESS)):
            self.fs.rm(self.file(PROGRESS), recursive=True)

    def abandon(self, exc: BaseException | None) -> None:
        """A run ends without a manifest: remove what it created if the user's input failed it.

        Only a fresh run failing with a :class:`UserError` is removed (its output would be
        refused as changed input by ``--resume`` anyway); after any other failure (lost
        cluster, Ctrl-C, full disk) its finished parts stay for ``--resume``.
        """
        try:
            if isinstance(exc, UserError) and self.fresh:
                self._remove(self._leftovers(self.listing()))
        finally:
            self._release_and_tidy()

    def discard(self) -> None:
        """Remove everything of this run (a staging folder whose result was published)."""
        self._remove(self.listing())
        self.lock.release()
        if is_local(self.fs):
            _remove_empty_dirs(self.path, keep_root=False)

    def _release_and_tidy(self) -> None:
        self.lock.release()
        if self._made is not None:  # only folders this run made: a user's empty ones stay
            _remove_empty_dirs(self._made, keep_root=False)

    def _remove(self, relative: list[str]) -> None:
        for rel in relative:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.file(rel))
        if is_local(self.fs):
            _remove_empty_dirs(self.path, keep_root=True)


def _sample(names: list[str]) -> str:
    """Up to three of ``names``, sorted, for a one-line message."""
    return ", ".join(sorted(names)[:3]) + (" …" if len(names) > 3 else "")


def _first_missing(path: str) -> str | None:
    """The top-most folder on the way to ``path`` (itself included) that does not exist yet."""
    missing = None
    while path and not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


def _remove_empty_dirs(root: str, *, keep_root: bool) -> None:
    if not os.path.isdir(root):
        return
    for folder, _dirs, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if folder == root and keep_root:
            continue
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # fails (and is left) unless empty


def write_part(
    fs: fsspec.AbstractFileSystem, base: str, relative: str, write: Any, *, staged: bool = False
) -> PartRecord:
    """Worker-side: publish one data file and its progress record; return what was written.

    ``staged``: the part is joined into one file later (which is made durable then) and is
    checked against its record before any re-use, so neither waits for the disk here."""
    with atomic_open(fs, join(base, relative), "wb", durable=not staged) as handle:
        hashing = HashingWriter(handle)
        rows, extra = write(hashing)
    record = PartRecord(relative, int(rows), hashing.bytes, hashing.sha256, extra)
    name = relative.replace("/", "__")
    record_path = join(base, PROGRESS, f"{name}.json")
    write_bytes_atomic(fs, record_path, canonical_json(asdict(record)), durable=not staged)
    return record


def render_part(relative: str, write: Any) -> RenderedPart:
    """Worker-side, for a task of this process whose part is joined into one file from memory:
    what :func:`write_part` would publish, kept as the pieces ``write`` wrote.

    ``write`` must not change a buffer after writing it (the token writers write each one
    once: a new array, or the bytes a compressor returned); a ``bytearray`` is copied anyway.
    """
    sink = _Pieces()
    hashing = HashingWriter(sink)
    rows, extra = write(hashing)
    return RenderedPart(
        PartRecord(relative, int(rows), hashing.bytes, hashing.sha256, extra), sink.pieces
    )


class _Pieces:
    """A write-only file that keeps what is written to it."""

    def __init__(self) -> None:
        self.pieces: list[Any] = []

    def write(self, data: Any) -> int:
        self.pieces.append(bytes(data) if isinstance(data, bytearray) else data)
        return len(data)

    def flush(self) -> None:
        pass


def check_disjoint(
    out: str,
    inputs: list[str],
    storage_options: dict[str, Any] | None = None,
    *,
    what: str = "--out",
) -> None:
    """Refuse an output that equals, contains or lies inside an input (file, prefix or folder).

    ``inputs`` are paths or URLs; a dataset prefix ``data/ds`` stands for ``data/ds.bin`` and
    ``data/ds.idx``, which callers pass as such.
    """
    out_fs, out_path = resolve(out, storage_options)
    target = _canonical(out_fs, out_path)
    for item in inputs:
        if not item:
            continue
        in_fs, in_path = resolve(str(item), storage_options)
        if type(in_fs) is not type(out_fs):
            continue
        source = _canonical(in_fs, in_path)
        if target == source or source.startswith(target + "/") or target.startswith(source + "/"):
            relation = (
                "is"
                if target == source
                else ("contains" if source.startswith(target + "/") else "lies inside")
            )
            raise UserError(
                f"{what} {out} {relation} the input {item}; write the export somewhere else"
            )


def _canonical(fs: fsspec.AbstractFileSystem, path: str) -> str:
    path = path.rstrip("/")
    return os.path.realpath(path) if is_local(fs) else path
