"""The word-counting kernel (gpu/text_stats.py) on NumPy and the strict array API."""

from __future__ import annotations

import array_api_strict
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu.hashing import pack_keys
from gpu.text_stats import packed_word_counts

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXT, max_size=12))
def test_word_counts_on_numpy_and_strict(texts: list[str]) -> None:
    encoded = [t.encode("utf-8") for t in texts]
    buffer, offsets, lengths = pack_keys(encoded)
    # A word is a run of bytes above 0x20 (ASCII whitespace and controls separate words).
    want_words = [
        len([w for w in bytes(b if b > 32 else 32 for b in e).split(b" ") if w]) for e in encoded
    ]
    for xp in (np, array_api_strict):
        words = packed_word_counts(xp, xp.asarray(buffer), xp.asarray(offsets))
        assert np.asarray(words).tolist() == want_words
