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


def packed_word_counts(xp: Any, buffer: Any, word_offsets: Any) -> Any:
    """Words per text of a packed buffer (``pack_keys`` layout, arrays of ``xp``);
    ``word_offsets`` int64[n+1] are the 8-byte words where texts start."""
    return word_counts(xp, buffer, word_offsets[:-1] * 8, word_offsets[1:] * 8)
