"""Per-text counts over packed UTF-8 texts, written once against an array namespace.

Texts are laid out as :func:`gpu.hashing.pack_keys` does (each followed by 1 to 8 zero bytes,
the next one starting on an 8-byte boundary). Two counts per text come from one pass each:

- words: runs of bytes above 0x20 (ASCII whitespace and control characters separate words, as
  ``str.split()`` does for whitespace); a word never runs into the next text because of the
  zero padding between them;
- characters: bytes that do not continue a UTF-8 sequence (``byte & 0xC0 != 0x80``), which is
  ``len(text)`` for valid UTF-8.

Both are a flag per byte, a running sum and two gathers per text, so they run unchanged on
NumPy, CuPy and ``array_api_strict``.
"""

from __future__ import annotations

from typing import Any

from gpu.array_ops import astype, concat, cumulative_sum, segment_sums


def _count_dtype(xp: Any, n: int) -> Any:
    # Running sums in 32 bits while they fit: half the memory traffic of int64.
    return xp.int32 if n < 2**31 else xp.int64


def word_counts(xp: Any, buffer: Any, starts: Any, ends: Any) -> Any:
    """Words per text: ``buffer`` uint8, text ``i`` in ``buffer[starts[i]:ends[i]]`` (int64)."""
    n = buffer.shape[0]
    if starts.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64)
    word = buffer > 32
    begins = word & ~concat(xp, [xp.zeros(1, dtype=xp.bool), word[:-1]])  # a word's first byte
    running = cumulative_sum(xp, begins, _count_dtype(xp, n))
    return astype(xp, segment_sums(xp, running, starts, ends), xp.int64)


def char_counts(xp: Any, buffer: Any, starts: Any, lengths: Any) -> Any:
    """Characters per text: the UTF-8 lead bytes of ``buffer[starts[i]:starts[i]+lengths[i]]``."""
    n = buffer.shape[0]
    if starts.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64)
    lead = (buffer & xp.asarray(0xC0, dtype=xp.uint8)) != xp.asarray(0x80, dtype=xp.uint8)
    running = cumulative_sum(xp, lead, _count_dtype(xp, n))
    return astype(xp, segment_sums(xp, running, starts, starts + lengths), xp.int64)


def packed_text_counts(xp: Any, buffer: Any, word_offsets: Any, lengths: Any) -> tuple[Any, Any]:
    """``(words, chars)`` per text of a packed buffer (``pack_keys`` layout, arrays of ``xp``).

    ``word_offsets`` int64[n+1] are the 8-byte words where texts start, ``lengths`` their UTF-8
    sizes (uint64 or int64).
    """
    starts = word_offsets[:-1] * 8
    ends = word_offsets[1:] * 8
    words = word_counts(xp, buffer, starts, ends)
    chars = char_counts(xp, buffer, starts, astype(xp, lengths, xp.int64))
    return words, chars
