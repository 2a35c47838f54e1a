"""The word-counting kernel (gpu/text_stats.py) on NumPy and the strict array API."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu.hashing import pack_keys
from gpu.text_stats import SPACE_LEAD_BYTES, packed_text_suspects, packed_word_counts
from pipeline.formats.record_checks import check_text

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


def test_space_lead_bytes_are_those_of_python_isspace() -> None:
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert sorted({c.encode("utf-8")[0] for c in spaces}) == sorted(SPACE_LEAD_BYTES)


AWKWARD = st.text(
    alphabet=st.sampled_from(
        [
            "a",
            "\x00",
            " ",
            "\t",
            "\x1c",
            "\x85",
            "\xa0",
            "\u2028",
            "\u3000",
            "\u200b",
            "é",
            "日",
            "🙂",
        ]
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(AWKWARD, max_size=12))
def test_suspects_flag_every_unusable_text(texts: list[str]) -> None:
    buffer, offsets, lengths = pack_keys([t.encode("utf-8") for t in texts])
    for xp in (np, array_api_strict):
        suspect = np.asarray(
            packed_text_suspects(xp, *(xp.asarray(a) for a in (buffer, offsets, lengths)))
        ).tolist()
        assert len(suspect) == len(texts)
        for text, flagged in zip(texts, suspect, strict=True):
            if check_text(text) is not None:  # empty, whitespace only or a NUL: always flagged
                assert flagged, text
            want = not text or text[0].isspace() or "\x00" in text
            # Flagged by its first byte: a few usable texts too, never a text starting otherwise.
            assert flagged == want or (flagged and text[0].encode()[0] in SPACE_LEAD_BYTES)


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
