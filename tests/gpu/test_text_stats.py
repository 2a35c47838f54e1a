"""The word-counting kernel (gpu/text_stats.py) on NumPy and the strict array API."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
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


@pytest.mark.gpu
def test_word_counts_and_hashes_on_cupy_equal_numpy() -> None:
    import cupy

    from gpu.hashing import hash_packed

    texts = ["one two", " lead and trail ", "日本語 テキスト", "emoji🙂 x\ty\nz", "", "a" * 999]
    buffer, offsets, lengths = pack_keys([t.encode() for t in texts])
    want = packed_word_counts(np, buffer, offsets)
    got = packed_word_counts(cupy, cupy.asarray(buffer), cupy.asarray(offsets))
    assert cupy.asnumpy(got).tolist() == want.tolist() == [len(t.split()) for t in texts]
    words = buffer.view("<u8")
    on_host = hash_packed(np, words, offsets, lengths, 42)
    on_device = hash_packed(cupy, *(cupy.asarray(a) for a in (words, offsets, lengths)), 42)
    assert cupy.asnumpy(on_device).tolist() == on_host.tolist()
