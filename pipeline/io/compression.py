"""Deterministic stream compression for text outputs (gzip, zstd)."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from typing import IO

from pipeline.errors import UserError

SUFFIX = {None: "", "none": "", "gzip": ".gz", "zstd": ".zst"}


def suffix(compression: str | None) -> str:
    """File-name suffix for a compression name (``""`` for none)."""
    if compression not in SUFFIX:
        raise UserError(f"unknown compression {compression!r}; use gzip or zstd")
    return SUFFIX[compression]


def compression_from_name(name: str) -> str | None:
    """Infer the compression from a file name (``.gz`` / ``.zst``)."""
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith(".zst"):
        return "zstd"
    return None


@contextlib.contextmanager
def compressed(handle: IO[bytes], compression: str | None) -> Iterator[IO[bytes]]:
    """Wrap a binary handle; bytes are identical for identical input (no timestamps).

    Concatenated gzip members and zstd frames are themselves valid streams, which is what lets
    part files be joined into one file without recompressing.
    """
    if not compression or compression == "none":
        yield handle
    elif compression == "gzip":
        with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=6) as out:
            yield out
    elif compression == "zstd":
        import zstandard

        with zstandard.ZstdCompressor(level=3).stream_writer(handle, closefd=False) as out:
            yield out
    else:
        raise UserError(f"unknown compression {compression!r}; use gzip or zstd")


def open_decompressed(handle: IO[bytes], compression: str | None) -> IO[bytes]:
    """Readable decompressed view of a binary handle."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=handle, mode="rb")
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(handle, closefd=False)
    return handle
