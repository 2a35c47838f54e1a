"""Reading an existing export back: its layout (which files make which split) and its records.

Used by ``dexport validate`` and ``dexport stats``. An export is found by its
``_manifest.json`` (written last, so its absence means the export is incomplete); without one,
the layout is guessed from file names (``train.jsonl``, ``train/part-00000.jsonl``,
``part-00000.csv`` …). Files are streamed in bounded chunks, and the sha256 and size of the
stored bytes are computed while reading, so checking a manifest costs no second read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from pipeline.errors import UserError
from pipeline.io.compression import compression_from_name, open_decompressed
from pipeline.io.storage import resolve
from pipeline.runtime.output import MANIFEST

CHUNK = 8 << 20
DATA_EXT = re.compile(r"\.(jsonl|csv|npz|parquet)(\.gz|\.zst)?$")
PART = re.compile(r"^part-\d+\.(jsonl|csv|npz|parquet)(\.gz|\.zst)?$")


@dataclass
class Export:
    """The layout of an export directory (or of one exported file)."""

    url: str
    fs: Any
    path: str
    kind: str  # "corpus" | "tokens"
    groups: dict[str, list[str]]  # split (or "records") -> relative file paths, in order
    manifest: dict[str, Any] | None = None
    single_file: bool = False
    notes: list[str] = field(default_factory=list)

    def file(self, relative: str) -> str:
        """Filesystem path of a file of the export."""
        return self.path if self.single_file else f"{self.path.rstrip('/')}/{relative}"


def open_export(url: str, storage_options: dict | None = None) -> Export:
    """Find the files of the export at ``url`` (a directory or one exported file)."""
    fs, path = resolve(url, storage_options)
    if fs.isfile(path):
        name = path.rsplit("/", 1)[-1]
        if not DATA_EXT.search(name):
            raise UserError(
                f"{url} is not an export file (.jsonl, .csv, .npz, .parquet, optionally .gz/.zst); "
                "pass an export directory or file"
            )
        kind = (
            "tokens"
            if not name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"))
            else _sniff_kind(fs, path)
        )
        return Export(url, fs, path, kind, {_stem(name): [name]}, single_file=True)
    if not fs.isdir(path):
        raise UserError(
            f"{url} does not exist; pass the directory written by dexport corpus/tokens"
        )
    base = path.rstrip("/")
    manifest = None
    if fs.exists(f"{base}/{MANIFEST}"):
        try:
            manifest = json.loads(fs.cat_file(f"{base}/{MANIFEST}"))
        except ValueError:
            manifest = None
    files = sorted(p[len(base) + 1 :] for p in fs.find(base, withdirs=False))
    if manifest is not None:
        return _from_manifest(url, fs, base, manifest)
    return _from_names(url, fs, base, files)


def _stem(name: str) -> str:
    return DATA_EXT.sub("", name)


def _sniff_kind(fs: Any, path: str) -> str:
    """``corpus`` when the first record has a text field, else ``tokens``."""
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as handle:
            try:
                names = pq.ParquetFile(handle).schema_arrow.names
            except pa.ArrowException as exc:
                raise UserError(
                    f"{path} is not a readable Parquet file ({' '.join(str(exc).split())}); pass "
                    "an export directory or file written by dexport"
                ) from None
        return "tokens" if "content" in names or "sequences" in names else "corpus"
    for _, line in iter_lines(fs, path, Digest()):
        try:
            first = json.loads(line)
        except ValueError:
            return "corpus"
        return (
            "tokens"
            if isinstance(first, dict) and ("content" in first or "sequences" in first)
            else "corpus"
        )
    return "corpus"


def _from_manifest(url: str, fs: Any, base: str, manifest: dict) -> Export:
    kind = manifest.get("job", "tokens")
    groups: dict[str, list[str]] = {}
    for f in manifest.get("files", []):
        split = (f.get("extra") or {}).get("split")
        if kind == "corpus" and split:
            groups.setdefault(split, []).append(f["path"])
        elif kind != "corpus" and DATA_EXT.search(f["path"]):
            groups.setdefault("records", []).append(f["path"])
    if kind == "corpus":
        order = ((manifest.get("parameters") or {}).get("split") or {}).get("names") or []
        groups = {
            name: groups.get(name, []) for name in [*order, *[g for g in groups if g not in order]]
        }
    return Export(url, fs, base, kind, groups, manifest)


def _from_names(url: str, fs: Any, base: str, files: list[str]) -> Export:
    notes = [f"no {MANIFEST}: the export is incomplete or was not written by dexport"]
    groups: dict[str, list[str]] = {}
    parts = [f for f in files if "/" not in f and PART.match(f)]
    if parts:
        return Export(
            url,
            fs,
            base,
            "tokens" if not _is_corpus_file(fs, f"{base}/{parts[0]}") else "corpus",
            {"records": parts},
            None,
            notes=notes,
        )
    for f in files:
        if f.startswith(("rejects/", "card/", ".")) or not DATA_EXT.search(f):
            continue
        head, _, tail = f.partition("/")
        if tail and "/" not in tail and PART.match(tail):
            groups.setdefault(head, []).append(f)
        elif not tail:
            groups.setdefault(_stem(f), []).append(f)
    if not groups:
        raise UserError(
            f"{url} holds no export files (split files, part-*.jsonl/csv/npz/parquet); pass an "
            "export directory"
        )
    return Export(url, fs, base, "corpus", groups, None, notes=notes)


def _is_corpus_file(fs: Any, path: str) -> bool:
    return (
        path.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"))
        and _sniff_kind(fs, path) == "corpus"
    )


class Digest:
    """sha256 and size of bytes as they are read."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.bytes = 0

    @property
    def hexdigest(self) -> str:
        return self.sha.hexdigest()


class _HashingReader:
    def __init__(self, handle: IO[bytes], digest: Digest) -> None:
        self._handle, self._digest = handle, digest

    def read(self, n: int = -1) -> bytes:
        data = self._handle.read(n)
        self._digest.sha.update(data)
        self._digest.bytes += len(data)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def iter_lines(fs: Any, path: str, digest: Digest) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of a (possibly compressed) text file, hashing its stored bytes."""
    compression = compression_from_name(path)
    with fs.open(path, "rb") as raw:
        reader = _HashingReader(raw, digest)
        stream = open_decompressed(reader, compression)  # type: ignore[arg-type]
        carry = b""
        number = 0
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            for line in lines:
                number += 1
                yield number, line
        if carry:
            yield number + 1, carry
        while reader.read(CHUNK):  # hash any bytes the decompressor did not need
            pass


def hash_file(fs: Any, path: str, digest: Digest) -> bytes | None:
    """Read a whole (small) file, hashing it; returns the bytes."""
    with fs.open(path, "rb") as raw:
        data = raw.read()
    digest.sha.update(data)
    digest.bytes += len(data)
    return data
