"""Where the frames of a zstd file start: the cut points that let one file become several tasks.

A zstd stream is a sequence of independent frames, so a reader can start at any frame. Two
ways to find them without decompressing anything:

- a **seek table** (the zstd *seekable format*: a skippable frame at the end of the file, magic
  ``0x184D2A5E``, listing each frame's compressed and decompressed size, with a 9-byte footer
  ending in ``0x8F92EAB1``): one read at the end of the file, local or on S3;
- on local disk only, **walking the headers**: each frame header records the frame's
  decompressed size (``Frame_Content_Size``: the zstd command line and most libraries write it
  when they know the input size) and each block header its compressed size (3 bytes per block
  of up to 128 KiB), so skipping from header to header costs a few reads per megabyte.

:func:`frame_starts` returns ``[(compressed offset, decompressed offset), …]`` of every data
frame, or None when the file cannot be cut: a single frame, a frame without a recorded size,
headers that do not add up (the reader will then report the damage), or an object store
without a seek table (walking would mean reading the whole file through the network).
"""

from __future__ import annotations

from typing import Any

ZSTD_FRAME = 0xFD2FB528
SKIPPABLE_MASK, SKIPPABLE = 0xFFFFFFF0, 0x184D2A50
SEEK_TABLE_FRAME = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
FOOTER = 9
MAX_HEADER = 18  # magic 4 + descriptor 1 + window 1 + dictionary id 4 + content size 8


def _u(data: bytes) -> int:
    return int.from_bytes(data, "little")


def frame_starts(fs: Any, path: str, size: int, *, local: bool) -> list[tuple[int, int]] | None:
    """Start offsets (compressed, decompressed) of the data frames, plus the end as the last
    entry ``(size, total decompressed)``; None when the file cannot be cut (see module notes)."""
    with fs.open(path, "rb") as handle:
        frames = _seek_table(handle, size)
        if frames is None and local:
            frames = _walk(handle, size)
    if frames is None or len(frames) < 3:  # at least two frames and the end
        return None
    return frames


def _seek_table(handle: Any, size: int) -> list[tuple[int, int]] | None:
    if size < FOOTER + 8:
        return None
    handle.seek(size - FOOTER)
    footer = handle.read(FOOTER)
    if len(footer) != FOOTER or _u(footer[5:9]) != SEEKABLE_MAGIC:
        return None
    count, checksums = _u(footer[:4]), footer[4] >> 7
    entry = 12 if checksums else 8
    table = 8 + count * entry + FOOTER
    if count == 0 or table > size:
        return None
    handle.seek(size - table)
    data = handle.read(table - FOOTER)
    if _u(data[:4]) != SEEK_TABLE_FRAME or _u(data[4:8]) != table - 8:
        return None
    frames, coff, uoff = [], 0, 0
    for i in range(count):
        at = 8 + i * entry
        frames.append((coff, uoff))
        coff += _u(data[at : at + 4])
        uoff += _u(data[at + 4 : at + 8])
    if coff != size - table:
        return None
    frames.append((size, uoff))
    return frames


def _walk(handle: Any, size: int) -> list[tuple[int, int]] | None:
    frames: list[tuple[int, int]] = []
    pos = uoff = 0
    while pos < size:
        handle.seek(pos)
        head = handle.read(MAX_HEADER)
        if len(head) < 8:
            return None
        magic = _u(head[:4])
        if magic & SKIPPABLE_MASK == SKIPPABLE:
            pos += 8 + _u(head[4:8])  # skippable frames hold no data: part of the frame before
            continue
        if magic != ZSTD_FRAME:
            return None
        descriptor = head[4]
        single_segment = (descriptor >> 5) & 1
        header = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
        content_size = ((1 if single_segment else 0), 2, 4, 8)[descriptor >> 6]
        if content_size == 0 or len(head) < header + content_size:
            return None  # the frame does not say how much it holds
        frame_size = _u(head[header : header + content_size]) + (256 if content_size == 2 else 0)
        frames.append((pos, uoff))
        uoff += frame_size
        block = pos + header + content_size
        while True:
            handle.seek(block)
            raw = handle.read(3)
            if len(raw) < 3:
                return None
            value = _u(raw)
            kind, length = (value >> 1) & 3, value >> 3
            if kind == 3:
                return None
            block += 3 + (1 if kind == 1 else length)
            if value & 1:
                break
        pos = block + (4 if (descriptor >> 2) & 1 else 0)
    if pos != size:
        return None
    frames.append((size, uoff))
    return frames
