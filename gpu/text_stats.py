"""Words per text over packed UTF-8 texts, written once against an array namespace.

Texts are laid out as :func:`gpu.hashing.pack_keys` does (each followed by 1 to 8 zero bytes,
the next one starting on an 8-byte boundary). A word is a run of bytes above 0x20: ASCII
whitespace and control characters separate words (as ``str.split()`` does for whitespace),
and the zero padding keeps a word from running into the next text.

The kernel flags the first byte of every word, lists the flagged positions and counts those
inside each text with two binary searches: its temporaries are the size of the text for the
flags and of the word count for the rest, and it runs unchanged on NumPy, CuPy and
``array_api_strict``.
"""

from __future__ import annotations

from typing import Any

from gpu.array_ops import astype, concat


def word_counts(xp: Any, buffer: Any, starts: Any, ends: Any) -> Any:
    """Words per text: ``buffer`` uint8, text ``i`` in ``buffer[starts[i]:ends[i]]`` (int64).

    A word belongs to the text where it begins.
    """
    if starts.shape[0] == 0 or buffer.shape[0] == 0:
        return xp.zeros(starts.shape, dtype=xp.int64)
    word = buffer > 32
    begins = word & ~concat(xp, [xp.zeros(1, dtype=word.dtype), word[:-1]])  # first byte of a word
    positions = astype(xp, xp.nonzero(begins)[0], xp.int64)
    return xp.searchsorted(positions, ends) - xp.searchsorted(positions, starts)


# First UTF-8 byte of every character for which Python's ``str.isspace()`` is true
# (tests/gpu/test_text_stats.py derives it again from Python itself).
SPACE_LEAD_BYTES = (9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0xC2, 0xE1, 0xE2, 0xE3)


def packed_text_suspects(xp: Any, buffer: Any, word_offsets: Any, lengths: Any) -> Any:
    """Texts of a packed buffer that may be unusable, as a boolean array (one per text).

    Flagged: an empty text, one whose first character may be whitespace (it could be
    whitespace only) and one holding a zero byte (a NUL character). Every unusable text is
    flagged; a few usable ones are too (a text that merely starts with a space), so the caller
    checks the flagged texts exactly, and only those, on the host.
    """
    n = lengths.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=xp.bool)
    starts = word_offsets[:-1] * 8
    ends = starts + astype(xp, lengths, xp.int64)
    lead = [False] * 256
    for byte in SPACE_LEAD_BYTES:
        lead[byte] = True
    first = astype(xp, xp.take(buffer, starts), xp.int64)  # an empty text reads its padding
    suspect = (ends == starts) | xp.take(xp.asarray(lead, dtype=xp.bool), first)
    zeros = astype(xp, xp.nonzero(buffer == 0)[0], xp.int64)  # padding, and NULs in texts
    return suspect | (xp.searchsorted(zeros, ends) > xp.searchsorted(zeros, starts))


def packed_word_counts(xp: Any, buffer: Any, word_offsets: Any) -> Any:
    """Words per text of a packed buffer (``pack_keys`` layout, arrays of ``xp``);
    ``word_offsets`` int64[n+1] are the 8-byte words where texts start."""
    return word_counts(xp, buffer, word_offsets[:-1] * 8, word_offsets[1:] * 8)
