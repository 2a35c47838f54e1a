"""Output directories: refuse, overwrite or resume; publish parts; write the manifest last.

Layout of a run in progress::

    OUT/part-00000.jsonl ...            data files, each published atomically
    OUT/.dexport-progress/params.json   the parameters of the run (resume must match them)
    OUT/.dexport-progress/part-00000.json   one record per completed part (rows, bytes, sha256)

``finalize`` writes ``_manifest.json`` (files, rows, bytes, sha256, parameters, version) and
then removes the progress folder, so a directory without ``_manifest.json`` is incomplete and a
finished one holds nothing but data and the manifest. ``--resume`` re-uses the part records of
an interrupted run and skips those parts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import IO, Any

import fsspec

from pipeline.errors import UserError
from pipeline.storage import atomic_open, join, resolve, write_bytes_atomic

MANIFEST = "_manifest.json"
PROGRESS = ".dexport-progress"


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
    """An output directory (local or ``s3://``) and the run writing into it."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.path = resolve(self.url, self.storage_options)

    # -- paths ----------------------------------------------------------------------------
    def file(self, relative: str) -> str:
        """Filesystem path of ``relative`` inside the directory."""
        return join(self.path, relative)

    def _listing(self) -> list[str]:
        try:
            return [p for p in self.fs.find(self.path, withdirs=False) if p != self.path]
        except FileNotFoundError:
            return []

    # -- lifecycle ------------------------------------------------------------------------
    def prepare(self, params: dict[str, Any], *, overwrite: bool = False, resume: bool = False) -> dict[str, PartRecord]:
        """Make the directory ready; return parts already completed (``resume``)."""
        if overwrite and resume:
            raise UserError("--overwrite and --resume exclude each other; pass one of them")
        self._check_writable()
        existing = self._listing()
        params_path = self.file(f"{PROGRESS}/params.json")
        if existing and resume:
            done = self._completed_parts(params, params_path)
            return done
        if existing and not overwrite:
            raise UserError(f"output {self.url} already exists and is not empty; pass --overwrite to replace it or --resume to finish an interrupted run")
        if existing:
            self.fs.rm(self.path, recursive=True)
        write_bytes_atomic(self.fs, params_path, canonical_json(params))
        return {}

    def _check_writable(self) -> None:
        try:
            if self.fs.isfile(self.path):
                raise UserError(f"output {self.url} is a file; pass a directory (or a file name with a known extension for one file)")
        except PermissionError as exc:
            raise UserError(f"no permission to read {self.url} ({exc}); check the credentials or --storage-options") from None

    def _completed_parts(self, params: dict[str, Any], params_path: str) -> dict[str, PartRecord]:
        if self.fs.exists(self.file(MANIFEST)) and not self.fs.exists(params_path):
            manifest = json.loads(self.fs.cat_file(self.file(MANIFEST)))
            if manifest.get("parameters") != json.loads(canonical_json(params)):
                raise UserError(f"output {self.url} is a finished run with other parameters; pass --overwrite to replace it")
            return {f["path"]: PartRecord(**f) for f in manifest["files"]}
        if not self.fs.exists(params_path):
            raise UserError(f"output {self.url} holds no interrupted dexport run to resume; pass --overwrite to replace it")
        previous = json.loads(self.fs.cat_file(params_path))
        if previous != json.loads(canonical_json(params)):
            changed = sorted(k for k in set(previous) | set(params) if previous.get(k) != params.get(k))
            raise UserError(f"--resume with other parameters than the interrupted run (differs: {', '.join(changed)}); repeat the original command or pass --overwrite")
        done: dict[str, PartRecord] = {}
        for p in self.fs.glob(self.file(f"{PROGRESS}/*.json")):
            if p.endswith("/params.json"):
                continue
            record = PartRecord(**json.loads(self.fs.cat_file(p)))
            if self.fs.exists(self.file(record.path)):
                done[record.path] = record
        return done

    def write_part(self, relative: str, write: Any) -> PartRecord:
        """Publish ``relative`` atomically with ``write(handle) -> (rows, extra)`` and record it."""
        return write_part(self.fs, self.path, relative, write)

    def finalize(self, params: dict[str, Any], job: str, parts: list[PartRecord], totals: dict[str, Any], extra_files: list[PartRecord] = ()) -> dict[str, Any]:
        """Write ``_manifest.json`` (last) and drop the progress records."""
        files = sorted([*parts, *extra_files], key=lambda r: r.path)
        manifest = {
            "tool": "dexport",
            "version": tool_version(),
            "job": job,
            "parameters": json.loads(canonical_json(params)),
            "files": [asdict(r) for r in files],
            "totals": totals,
        }
        write_bytes_atomic(self.fs, self.file(MANIFEST), canonical_json(manifest))
        if self.fs.exists(self.file(PROGRESS)):
            self.fs.rm(self.file(PROGRESS), recursive=True)
        return manifest


def write_part(fs: fsspec.AbstractFileSystem, base: str, relative: str, write: Any) -> PartRecord:
    """Worker-side: publish one data file and its progress record; return what was written."""
    with atomic_open(fs, join(base, relative), "wb") as handle:
        hashing = HashingWriter(handle)
        rows, extra = write(hashing)
    record = PartRecord(relative, int(rows), hashing.bytes, hashing.sha256, extra)
    name = relative.replace("/", "__")
    write_bytes_atomic(fs, join(base, PROGRESS, f"{name}.json"), canonical_json(asdict(record)))
    return record
