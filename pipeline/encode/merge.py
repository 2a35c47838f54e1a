"""Where an encode run writes, and how its shards become one Megatron dataset.

A Megatron dataset is named by a prefix, not a directory: ``data/ds`` means ``data/ds.bin`` +
``data/ds.idx``, and ``data/`` may hold other datasets. So the run stages its shards and
progress records in ``data/ds.shards/`` (an :class:`~pipeline.runtime.output.OutputDir`, which
brings resume), publishes ``ds.bin``, ``ds.idx`` and ``ds.rejects.jsonl`` from them, writes
``ds.manifest.json`` last and removes the staging folder. A prefix without its manifest is
incomplete. With ``--format npz`` the shards are the product: ``--out`` is an ordinary output
directory and the staging folder is the output itself.

Merging rewrites only the index: the ``.bin`` is the shard ``.bin`` files concatenated in
order (:func:`pipeline.io.assemble.concatenate`: server-side multipart copy on S3 when shards are
at least 5 MiB), and the ``.idx`` is streamed from the shard indexes one shard at a time (three
passes: sizes, byte offsets, document boundaries), so the driver's memory does not grow with
the dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import CODE_BY_DTYPE, HEADER_SIZE, MAGIC
from pipeline.io.assemble import concatenate
from pipeline.io.storage import atomic_open, is_local, resolve, write_bytes_atomic
from pipeline.runtime.output import (
    MANIFEST,
    HashingWriter,
    OutputDir,
    PartRecord,
    canonical_json,
    tool_version,
)

COPY_BUFFER = 8 << 20
DOC_IDX_CHUNK = 1 << 20


@dataclass(frozen=True)
class ShardNames:
    """Deterministic file names of shard ``i`` (relative to the staging folder)."""

    i: int
    format: str

    @property
    def data(self) -> str:
        """The token file: ``shard-00000.bin`` (megatron) or ``part-00000.npz``."""
        return f"part-{self.i:05d}.npz" if self.format == "npz" else f"shard-{self.i:05d}.bin"

    @property
    def index(self) -> str:
        """The shard's own ``.idx`` (megatron only)."""
        return f"shard-{self.i:05d}.idx"

    @property
    def rejects(self) -> str:
        """Invalid records of the partition (written only when there are any)."""
        return f"rejects/part-{self.i:05d}.jsonl"


class EncodeTarget:
    """The output of one encode run: a dataset prefix (megatron) or a directory (npz)."""

    def __init__(self, out: str, fmt: str, storage_options: dict[str, Any]) -> None:
        self.out = out.rstrip("/")
        self.format = fmt
        self.megatron = fmt == "megatron"
        self.staging = OutputDir(
            f"{self.out}.shards" if self.megatron else self.out, storage_options
        )
        self.fs, self.prefix_path = resolve(self.out, storage_options)
        self.name = self.prefix_path.rsplit("/", 1)[-1]
        suffixes = (".bin", ".idx", ".rejects.jsonl", ".manifest.json")
        self.finals = {s: f"{self.prefix_path}{s}" for s in suffixes} if self.megatron else {}

    @property
    def manifest_url(self) -> str:
        """Where the manifest is (or will be) written."""
        return f"{self.out}.manifest.json" if self.megatron else f"{self.out}/{MANIFEST}"

    # -- before the run --------------------------------------------------------------------
    def _state(self) -> tuple[list[str], bool]:
        """(final files that exist, whether the staging folder exists)."""
        try:
            # Files, not folders: an S3-compatible store may keep an empty "folder" behind.
            staged = bool(self.fs.exists(self.staging.path) and self.fs.find(self.staging.path))
            if not self.megatron:
                return ([self.staging.path] if staged else []), False
            return [p for p in self.finals.values() if self.fs.exists(p)], staged
        except PermissionError as exc:
            raise UserError(
                f"no permission to read {self.out} ({exc}); check the credentials or "
                "--storage-options"
            ) from None

    def check(
        self, params: dict[str, Any] | None, *, overwrite: bool, resume: bool
    ) -> dict[str, Any] | None:
        """Read-only: raise the UserError a run would meet; return a finished run's manifest.

        Called before a cluster is started, so a wrong ``--out`` costs nothing and writes nothing.
        A run in progress on the same output is refused first (exit 3: retry later). Without
        ``params`` (before the tokenizer is loaded) a finished run's parameters are not compared.
        """
        self.staging.lock.ensure_free()
        existing, staged = self._state()
        if not self.megatron:
            if existing and not (overwrite or resume):
                raise UserError(
                    f"output {self.out} already exists and is not empty; "
                    + self.staging.takeover_hint()
                )
            return None
        manifest_path = self.finals[".manifest.json"]
        if resume and not staged and manifest_path in existing and params is None:
            return None
        if resume and not staged and manifest_path in existing:
            finished = json.loads(self.fs.cat_file(manifest_path))
            if finished.get("parameters") != json.loads(canonical_json(params)):
                raise UserError(
                    f"{self.out} is a finished encode run with other parameters; pass --overwrite "
                    "to replace it"
                )
            return finished
        foreign = bool(existing) and manifest_path not in existing and not staged
        names = ", ".join(p.rsplit("/", 1)[-1] for p in existing)
        not_ours = (
            f"{names} was not written by dexport encode (no {self.name}.manifest.json); "
            "pick another --out prefix or remove those files yourself"
        )
        if resume and existing and not staged:
            raise UserError(
                f"{self.out} holds no interrupted dexport encode run to resume; {not_ours}"
            )
        if (existing or staged) and not (overwrite or resume):
            first = (existing or [self.staging.path])[0].rsplit("/", 1)[-1]
            hint = (
                not_ours
                if foreign
                else "pass --overwrite to replace it or --resume to finish an interrupted run"
            )
            raise UserError(f"output {self.out} already exists ({first}); {hint}")
        if overwrite and foreign:
            raise UserError(f"--overwrite refused: {not_ours}")
        return None

    def prepare(
        self, params: dict[str, Any], *, overwrite: bool, resume: bool
    ) -> tuple[dict[str, PartRecord], dict[str, Any] | None]:
        """Refuse, clear or resume; return ``(completed parts, manifest of a finished run)``."""
        finished = self.check(params, overwrite=overwrite, resume=resume)
        if finished is not None:
            return {}, finished
        if not self.megatron:
            return self.staging.prepare(params, overwrite=overwrite, resume=resume), None
        existing, staged = self._state()
        done = self.staging.prepare(params, overwrite=overwrite, resume=resume and staged)  # locks
        if overwrite:
            for path in existing:
                self.fs.rm(path)
        return done, None

    def prepare_generation(
        self, params: dict[str, Any], history: Any, *, rebuild: bool
    ) -> dict[str, PartRecord]:
        """Incremental runs: lock, then resume or clear an interrupted generation's shards."""
        kept = set() if self.megatron or rebuild else history.kept_paths()
        return self.staging.prepare_generation(
            params, kept=kept, rebuild=rebuild, guard=history.guard
        )

    # -- after the shards ------------------------------------------------------------------
    def finish(
        self,
        params: dict[str, Any],
        shards: list[list[PartRecord]],
        totals: dict[str, Any],
        dtype: np.dtype,
        history: Any = None,
        partitions: list[Any] = (),
    ) -> dict[str, Any]:
        """Publish the result and the manifest (last); return the manifest.

        With a ``history`` (incremental runs) the shards are appended to the earlier
        generations' documents (see :mod:`pipeline.encode.incremental`).
        """
        before = (history.manifest if history is not None else None) or {}
        incremental = None
        if history is not None:
            added = [r.path for shard in shards for r in shard]
            incremental = {
                "generations": [*history.generations(), history.record(partitions, added)]
            }
        if not self.megatron:
            kept = [PartRecord(**f) for f in before.get("files", [])]
            return self.staging.finalize(
                params,
                "encode",
                kept + [r for shard in shards for r in shard],
                totals,
                incremental=incremental,
            )
        data = [shard[-1] for shard in shards]
        stage = self.staging.file
        bin_path, idx_path = self.finals[".bin"], self.finals[".idx"]
        old = {f["path"]: f for f in before.get("files", [])}
        old_bin = old.get(f"{self.name}.bin") or {"bytes": 0, "rows": 0}
        # Empty shards (every record rejected) would break S3's 5 MiB rule for copied parts.
        sources = [stage(r.path) for r in data if r.bytes]
        if self._append(bin_path, old_bin["bytes"], sources, f"{self.name}.bin"):
            pass
        elif sources:
            concatenate(self.fs, sources, bin_path)
        else:
            write_bytes_atomic(self.fs, bin_path, b"")
        counts = [int(r.extra["documents"]) for r in data]
        indexes = [stage(r.path[: -len(".bin")] + ".idx") for r in data]
        old_docs = int(old_bin["rows"])
        with atomic_open(self.fs, idx_path, "wb") as handle:
            idx = HashingWriter(handle)
            sizes = self._shard_sizes(indexes, counts)
            if old_docs:
                sizes = self._grown_sizes(idx_path, old_docs, sum(counts), sizes)
            write_merged_index(idx, dtype, sizes, old_docs + sum(counts))
        files = [
            {
                "path": f"{self.name}.bin",
                "rows": old_docs + sum(counts),
                "bytes": old_bin["bytes"] + sum(r.bytes for r in data),
                "sha256": self._bin_sha256(bin_path),
            },
            {
                "path": f"{self.name}.idx",
                "rows": old_docs + sum(counts),
                "bytes": idx.bytes,
                "sha256": idx.sha256,
            },
        ]
        rejects = [r for shard in shards for r in shard if r.path.startswith("rejects/")]
        old_rejects = old.get(f"{self.name}.rejects.jsonl")
        new_rows = sum(r.rows for r in rejects)
        if old_rejects and not rejects:
            files.append(old_rejects)
        elif old_rejects:
            target, name = self.finals[".rejects.jsonl"], old_rejects["path"]
            self._append(target, old_rejects["bytes"], [stage(r.path) for r in rejects], name)
            files.append(self._hashed(target, name, old_rejects["rows"] + new_rows))
        elif rejects:
            files.append(self._join_rejects([stage(r.path) for r in rejects], new_rows))
        elif self.fs.exists(self.finals[".rejects.jsonl"]) and history is not None:
            self.fs.rm(self.finals[".rejects.jsonl"])  # --rebuild: no reject any more
        manifest = {
            "tool": "dexport",
            "version": tool_version(),
            "job": "encode",
            "parameters": json.loads(canonical_json(params)),
            "files": files,
            "totals": totals,
            # The .bin is these shards back to back: enough to verify it where it was not hashed.
            "shards": [
                *before.get("shards", []),
                *(
                    {
                        "documents": r.extra["documents"],
                        "tokens": r.extra["tokens"],
                        "bytes": r.bytes,
                        "sha256": r.sha256,
                    }
                    for r in data
                ),
            ],
        }
        if incremental is not None:
            manifest["incremental"] = incremental
        write_bytes_atomic(self.fs, self.finals[".manifest.json"], canonical_json(manifest))
        self.staging.discard()
        return manifest

    def _append(self, path: str, old_bytes: int, sources: list[str], name: str) -> bool:
        """Grow ``path`` (``old_bytes`` long per the manifest) by ``sources``, atomically.

        Returns False when there is nothing to grow (no earlier bytes: the caller writes the
        file from the sources alone); True when ``path`` now holds the old bytes followed by
        the sources' — also when an interrupted finish had grown it already (its size says so).
        """
        if not old_bytes:
            return False
        size = self.fs.size(path) if self.fs.exists(path) else -1
        new = sum(self.fs.size(p) for p in sources)
        if size == old_bytes + new:
            return True  # grown by an interrupted finish of this generation
        if size != old_bytes:
            raise UserError(
                f"{name} has {size} bytes but its manifest says {old_bytes}: it changed outside "
                "dexport; pass --rebuild to encode every input again"
            )
        if sources:
            concatenate(self.fs, [path, *sources], path)
        return True

    def _grown_sizes(self, idx_path: str, old_docs: int, new_docs: int, shards: Any) -> Any:
        """Sequence lengths of the earlier generations (the first ``old_docs`` of the current
        index, which an interrupted finish may have grown already), then the new shards'."""

        def sizes() -> Iterator[np.ndarray]:
            head = self.fs.cat_file(idx_path, start=0, end=HEADER_SIZE)
            (found,) = struct.unpack_from("<Q", head, 18)
            if head[: len(MAGIC)] != MAGIC or found not in (old_docs, old_docs + new_docs):
                raise UserError(
                    f"{idx_path} does not hold the {old_docs} documents its manifest says; pass "
                    "--rebuild to encode every input again"
                )
            raw = self.fs.cat_file(idx_path, start=HEADER_SIZE, end=HEADER_SIZE + 4 * old_docs)
            yield np.frombuffer(raw, np.int32, old_docs)
            yield from shards()

        return sizes

    def _shard_sizes(self, indexes: list[str], counts: list[int]) -> Any:
        def sizes() -> Iterator[np.ndarray]:
            for path, n in zip(indexes, counts, strict=True):
                raw = self.fs.cat_file(path)
                (found,) = struct.unpack_from("<Q", raw, 18)
                if raw[: len(MAGIC)] != MAGIC or found != n:
                    raise UserError(
                        f"shard index {path} is corrupt or from another run; re-run with "
                        "--overwrite"
                    )
                yield np.frombuffer(raw, np.int32, n, HEADER_SIZE)

        return sizes

    def _bin_sha256(self, path: str) -> str | None:
        # Locally hashing costs a sequential read, small next to tokenizing. On S3 the .bin was
        # assembled server-side; hashing it would mean downloading it, so the manifest lists
        # each shard's sha256 instead (the .bin is their concatenation in order).
        if not is_local(self.fs):
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(COPY_BUFFER):
                digest.update(block)
        return digest.hexdigest()

    def _hashed(self, path: str, name: str, rows: int) -> dict[str, Any]:
        digest, size = hashlib.sha256(), 0
        with self.fs.open(path, "rb") as handle:
            while block := handle.read(COPY_BUFFER):
                digest.update(block)
                size += len(block)
        return {"path": name, "rows": rows, "bytes": size, "sha256": digest.hexdigest()}

    def _join_rejects(self, sources: list[str], rows: int) -> dict[str, Any]:
        target = self.finals[".rejects.jsonl"]
        with atomic_open(self.fs, target, "wb") as handle:
            out = HashingWriter(handle)
            for path in sources:
                with self.fs.open(path, "rb") as src:
                    shutil.copyfileobj(src, out, COPY_BUFFER)
        return {
            "path": f"{self.name}.rejects.jsonl",
            "rows": rows,
            "bytes": out.bytes,
            "sha256": out.sha256,
        }


def write_merged_index(handle: Any, dtype: np.dtype, shard_sizes: Any, total: int) -> None:
    """Write one ``.idx`` for shards stored back to back, reading each shard's sizes per pass.

    ``shard_sizes()`` yields each shard's int32 sequence lengths in order; it is called twice.
    """
    dtype = np.dtype(dtype)
    handle.write(MAGIC + struct.pack("<QBQQ", 1, CODE_BY_DTYPE[dtype], total, total + 1))
    for sizes in shard_sizes():
        handle.write(sizes.tobytes())
    start = 0
    for sizes in shard_sizes():
        if len(sizes):
            lengths = sizes.astype(np.int64) * dtype.itemsize
            pointers = np.cumsum(lengths) - lengths + start
            handle.write(pointers.tobytes())
            start = int(pointers[-1] + lengths[-1])
    # Each sequence is one document (GPT datasets): boundaries are simply 0..S.
    for first in range(0, total + 1, DOC_IDX_CHUNK):
        handle.write(
            np.arange(first, min(first + DOC_IDX_CHUNK, total + 1), dtype=np.int64).tobytes()
        )
