"""Storage: one place that turns ``url + storage_options`` into an fsspec filesystem.

Format code sees file handles only. Files are published atomically: locally by writing a
temporary sibling and renaming it; on object stores a single PUT or a completed multipart
upload is already atomic, so we write the final key directly.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import UserError


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """Parse ``--storage-options`` JSON (or return an empty dict)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"--storage-options is not valid JSON ({exc.msg}); pass a JSON object such as "
            f"'{{\"anon\": true}}'"
        ) from None
    if not isinstance(value, dict):
        raise UserError("--storage-options must be a JSON object such as '{\"anon\": true}'")
    return value


def resolve(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a local path or a URL such as ``s3://bucket/key``."""
    url = os.fspath(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open {url!r}: {exc}; use a local path or an s3:// URL") from None
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem (where rename is atomic and memory maps work)."""
    return isinstance(fs, LocalFileSystem)


def join(base: str, *parts: str) -> str:
    """Join path components with '/', the separator of every fsspec filesystem."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


@contextlib.contextmanager
def atomic_open(fs: fsspec.AbstractFileSystem, path: str, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing so that readers see either nothing or the whole file."""
    if not is_local(fs):
        # An S3 object appears only when its PUT or multipart upload completes. fsspec would
        # complete it even when the writer fails (``__exit__`` closes), so commit explicitly
        # on success and abort the multipart upload on failure.
        handle = fs.open(path, mode, autocommit=False)
        try:
            yield handle
            handle.close()
            handle.commit()
        except BaseException:
            abort = getattr(handle, "_abort_mpu", None)
            if abort is not None and getattr(handle, "mpu", None):
                with contextlib.suppress(Exception):
                    abort()
            handle.closed = True
            raise
        return
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Publish ``data`` at ``path`` atomically."""
    with atomic_open(fs, path, "wb") as handle:
        handle.write(data)


def load_npy(fs: fsspec.AbstractFileSystem, path: str) -> np.ndarray:
    """Load a ``.npy``: memory-mapped locally (index arrays can be large), fetched whole
    remotely."""
    if is_local(fs):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False)
