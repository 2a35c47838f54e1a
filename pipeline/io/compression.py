"""Stream compression: deterministic gzip/zstd writers, strict streaming readers.

Writers (:func:`compressed`) carry no timestamps, so identical input gives identical bytes.

Readers (:func:`iter_decompressed`, :func:`open_decompressed`) decompress in bounded pieces: the
compressed stream is fed to the decompressor :data:`FEED` bytes at a time and a gzip call returns
at most :data:`OUT_LIMIT` bytes, so memory does not grow with the file. They are strict where the
standard library is lenient: a stream that ends inside a gzip member or a zstd frame (a file cut
short by a failed download or a full disk) raises :class:`~pipeline.errors.CorruptInput` naming
the file and the byte offset, instead of returning a shorter text; so does data that is not
gzip/zstd at all (a plain file named ``.gz``). Concatenated gzip members and zstd frames (what
joining part files gives) are one stream, and zeros padding the end of a gzip file are ignored
(as ``gzip`` does).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from pipeline.errors import CorruptInput, UserError

SUFFIX = {None: "", "none": "", "gzip": ".gz", "zstd": ".zst"}
READ_BLOCK = 1 << 20  # compressed bytes read from storage at a time
FEED = 64 << 10  # compressed bytes handed to a decompressor at a time
OUT_LIMIT = 4 << 20  # most bytes one gzip decompression call returns
ZSTD_MAX_WINDOW = 1 << 31  # frames written with --long=31 still decompress
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
WHAT_TO_DO = "the file is incomplete or damaged; write or download it again"


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
    part files be joined into one file without recompressing. The output does not depend on
    how the input is cut into ``write`` calls.
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


# -- reading -------------------------------------------------------------------------------
def read_blocks(handle: IO[bytes], size: int = READ_BLOCK) -> Iterator[bytes]:
    """The bytes of ``handle`` from its position to its end, ``size`` bytes at a time."""
    while block := handle.read(size):
        yield block


def iter_decompressed(
    blocks: Iterable[bytes], compression: str | None, name: str = "input", *, offset: int = 0
) -> Iterator[bytes]:
    """Decompressed pieces of the compressed ``blocks`` (each piece of bounded size).

    ``offset`` is the position of the first block in the file (for error messages). Raises
    :class:`CorruptInput` when the data is not ``compression`` data, is damaged, or ends in
    the middle of a gzip member or zstd frame.
    """
    if compression == "gzip":
        yield from _gunzip(blocks, name, offset)
    elif compression == "zstd":
        yield from _unzstd(blocks, name, offset)
    elif not compression or compression == "none":
        yield from blocks
    else:
        raise UserError(f"unknown compression {compression!r}; use gzip or zstd")


def _feeds(blocks: Iterable[bytes]) -> Iterator[bytes]:
    for block in blocks:
        for i in range(0, len(block), FEED):
            yield block[i : i + FEED]


def _gunzip(blocks: Iterable[bytes], name: str, offset: int) -> Iterator[bytes]:
    pos = offset  # compressed bytes consumed so far (file offset)
    member = None  # the decompressor of the member being read
    member_start = out = 0
    for data in _feeds(blocks):
        while data:
            if member is None:
                rest = data.lstrip(b"\x00")  # zeros after a member pad the file (gzip allows it)
                pos += len(data) - len(rest)
                data = rest
                if not data:
                    break
                if not data.startswith(GZIP_MAGIC[: len(data)]):
                    raise CorruptInput(_not_compressed(name, "gzip", pos, data, out))
                member, member_start = zlib.decompressobj(wbits=31), pos
            try:
                piece = member.decompress(data, OUT_LIMIT)
                while True:
                    if piece:
                        out += len(piece)
                        yield piece
                    if member.eof or member.unconsumed_tail or len(piece) < OUT_LIMIT:
                        break
                    piece = member.decompress(b"", OUT_LIMIT)  # output still held back
            except zlib.error as exc:
                raise CorruptInput(
                    f"{name}: the gzip data is corrupt at or after byte {pos:,} ({exc}); "
                    + WHAT_TO_DO
                ) from None
            rest = member.unused_data if member.eof else member.unconsumed_tail
            pos += len(data) - len(rest)
            data = rest
            if member.eof:
                member = None
    if member is not None:
        raise CorruptInput(
            f"{name} is truncated: the gzip stream ends at byte {pos:,} inside the member that "
            f"starts at byte {member_start:,} (after {out:,} decompressed bytes); " + WHAT_TO_DO
        )


def _unzstd(blocks: Iterable[bytes], name: str, offset: int) -> Iterator[bytes]:
    import zstandard

    context = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    pos = offset
    frame = None
    frame_start = out = 0
    for data in _feeds(blocks):
        while data:
            if frame is None:
                if not _zstd_start(data):
                    raise CorruptInput(_not_compressed(name, "zstd", pos, data, out))
                frame, frame_start = context.decompressobj(), pos
            try:
                piece = frame.decompress(data)
            except zstandard.ZstdError as exc:
                raise CorruptInput(
                    f"{name}: the zstd data is corrupt at or after byte {pos:,} ({exc}); "
                    + WHAT_TO_DO
                ) from None
            if piece:
                out += len(piece)
                yield piece
            rest = frame.unused_data if frame.eof else b""
            pos += len(data) - len(rest)
            data = rest
            if frame.eof:
                frame = None
    if frame is not None:
        raise CorruptInput(
            f"{name} is truncated: the zstd stream ends at byte {pos:,} inside the frame that "
            f"starts at byte {frame_start:,} (after {out:,} decompressed bytes); " + WHAT_TO_DO
        )


def _zstd_start(data: bytes) -> bool:
    """True when ``data`` can start a zstd frame or a skippable frame (magic 0x184D2A5?)."""
    head = data[:4]
    if ZSTD_MAGIC.startswith(head):
        return True
    return (head[0] & 0xF0) == 0x50 and b"\x2a\x4d\x18".startswith(head[1:])


def _not_compressed(name: str, kind: str, pos: int, data: bytes, out: int) -> str:
    if pos == 0 and out == 0:
        return (
            f"{name} is not {kind} data (it starts with {bytes(data[:8])!r}); name it after its "
            "real format (.jsonl for plain text) or compress it"
        )
    return f"{name}: unexpected data after the {kind} stream at byte {pos:,}; " + WHAT_TO_DO


class _DecompressedReader(io.RawIOBase):
    """A readable file object over :func:`iter_decompressed` (for code that calls ``read``)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buffer = memoryview(piece)
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def open_decompressed(
    handle: IO[bytes], compression: str | None, name: str | None = None
) -> IO[bytes]:
    """Readable, strictly checked decompressed view of a binary handle (see the module notes).

    ``name`` (default: the handle's path or name) is what errors call the file.
    """
    if not compression or compression == "none":
        return handle
    label = name or _name_of(handle)
    return io.BufferedReader(
        _DecompressedReader(iter_decompressed(read_blocks(handle), compression, label)),
        buffer_size=1 << 16,
    )


def _name_of(handle: Any) -> str:
    for _ in range(4):  # wrappers (hashing readers, …) keep the file in ``_handle``
        for attr in ("path", "name"):
            value = getattr(handle, attr, None)
            if isinstance(value, str) and value:
                return value
        handle = getattr(handle, "_handle", None) or getattr(handle, "raw", None)
        if handle is None:
            break
    return "a compressed file"
