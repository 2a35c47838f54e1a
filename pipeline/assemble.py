"""Join part files into one file, in order, without re-encoding them.

JSONL/CSV parts (and their gzip members / zstd frames) are valid when concatenated. Locally the
bytes are streamed into a temporary file that is renamed into place. On S3 the parts become the
parts of one multipart upload by server-side copy (``UploadPartCopy``), so nothing is
downloaded; S3 requires every part but the last to be at least 5 MiB, so smaller parts are
streamed through this process instead (they are small by definition).
"""

from __future__ import annotations

import shutil

import fsspec

from pipeline.storage import atomic_open, is_local

S3_MIN_PART = 5 * 1024 * 1024
COPY_BUFFER = 8 * 1024 * 1024


def concatenate(fs: fsspec.AbstractFileSystem, sources: list[str], target: str) -> None:
    """Publish ``target`` as the concatenation of ``sources`` (atomically)."""
    sizes = [fs.size(p) for p in sources]
    server_side = (
        not is_local(fs)
        and hasattr(fs, "merge")
        and len(sources) > 1
        and all(s >= S3_MIN_PART for s in sizes[:-1])
    )
    if server_side:
        fs.merge(target, sources)
        return
    with atomic_open(fs, target, "wb") as out:
        for path in sources:
            with fs.open(path, "rb") as src:
                shutil.copyfileobj(src, out, COPY_BUFFER)
