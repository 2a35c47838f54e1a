"""String columns from bytes + offsets against orjson, the csv module and pyarrow."""

from __future__ import annotations

import csv
import io

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu.text_escape import (
    arrow_string_array,
    csv_field_column,
    framed_column,
    json_escaped_column,
    json_framed_column,
    json_string_column,
)

SETTINGS = settings(max_examples=200, deadline=None)
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=0x7F),
        st.sampled_from(list(',"\r\n\\\t\x00\x1f\x7f é日🙂\u2028')),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=40,
)


def column(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode() for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def bytes_column(pieces: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    return np.frombuffer(b"".join(pieces), dtype=np.uint8).copy(), offsets


def split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    buf = data.tobytes()
    return [buf[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def csv_field(text: str) -> str:
    """The csv module's rendering of one field (in a two-field row, to avoid the row rule)."""
    buf = io.StringIO()
    csv.writer(buf).writerow([text, "x"])
    return buf.getvalue()[: -len(",x\r\n")]


@SETTINGS
@given(st.lists(TEXT, max_size=12))
def test_json_string_column_matches_orjson(strings: list[str]) -> None:
    got = split(*json_string_column(*column(strings)))
    assert got == [orjson.dumps(s) for s in strings]


@SETTINGS
@given(st.lists(st.tuples(st.binary(max_size=9), TEXT, st.binary(max_size=9)), max_size=12))
def test_json_framed_column_puts_each_literal_between_its_pieces(rows: list) -> None:
    before, strings, after = (list(part) for part in zip(*rows, strict=True)) if rows else ([],) * 3
    data, offsets = json_framed_column(*column(strings), bytes_column(before), bytes_column(after))
    assert split(data, offsets) == [b + orjson.dumps(s) + a for b, s, a in rows]


def test_json_escape_every_byte_at_every_word_position() -> None:
    """The kernels step over 8-byte words: each escaped byte value, at each place in a word,
    in strings around the word size."""
    specials = [chr(c) for c in range(0x20)] + ['"', "\\", "\x7f", "é", "日"]
    strings = [
        "a" * lead + ch + "b" * tail for ch in specials for lead in range(9) for tail in (0, 7, 9)
    ]
    assert split(*json_string_column(*column(strings))) == [orjson.dumps(s) for s in strings]


@SETTINGS
@given(st.lists(TEXT, max_size=12))
def test_csv_field_column_matches_csv_module(strings: list[str]) -> None:
    got = split(*csv_field_column(*column(strings)))
    assert [g.decode() for g in got] == [csv_field(s) for s in strings]


@SETTINGS
@given(st.lists(TEXT, max_size=12), st.booleans())
def test_arrow_string_array_round_trips(strings: list[str], large: bool) -> None:
    import pyarrow as pa

    array = arrow_string_array(*column(strings), large=large)
    array.validate(full=True)
    assert array.type == (pa.large_string() if large else pa.string())
    assert array.to_pylist() == strings


def test_arrow_large_string_shares_the_numpy_buffers() -> None:
    data, offsets = column(["ab", "", "日本"])
    array = arrow_string_array(data, offsets)
    assert array.buffers()[2].address == data.ctypes.data
    assert array.buffers()[1].address == offsets.ctypes.data


def test_offsets_not_starting_at_zero() -> None:
    data, offsets = column(["skip", 'a"b', "c"])
    got = split(*json_string_column(data, offsets[1:]))
    assert got == [b'"a\\"b"', b'"c"']
    assert split(*csv_field_column(data, offsets[1:])) == [b'"a""b"', b"c"]
    assert arrow_string_array(data, offsets[1:]).to_pylist() == ['a"b', "c"]


def test_empty_column() -> None:
    data, offsets = column([])
    assert split(*json_string_column(data, offsets)) == []
    assert split(*csv_field_column(data, offsets)) == []
    assert len(arrow_string_array(data, offsets)) == 0


def test_bad_offsets_are_rejected() -> None:
    data, _ = column(["abc"])
    with pytest.raises(ValueError, match="non-decreasing"):
        json_string_column(data, np.array([0, 5], dtype=np.int64))
    with pytest.raises(ValueError, match="non-decreasing"):
        csv_field_column(data, np.array([2, 1], dtype=np.int64))


@SETTINGS
@given(st.lists(st.tuples(TEXT, st.binary(max_size=5), st.binary(max_size=5)), max_size=8))
def test_framed_column_plain_and_json(rows: list) -> None:
    strings, before, after = zip(*rows, strict=True) if rows else ((), (), ())
    frames = (bytes_column(list(before)), bytes_column(list(after)))
    plain = split(*framed_column(*column(list(strings)), frames, json=False))
    assert plain == [b + s.encode() + a for s, b, a in rows]
    literal = split(*framed_column(*column(list(strings)), None, json=True))
    assert literal == [orjson.dumps(s) for s in strings]


@SETTINGS
@given(st.lists(st.tuples(st.binary(max_size=12), st.booleans()), max_size=10))
def test_json_escaped_column_keeps_raw_rows(rows: list) -> None:
    """Bytewise escaping (invalid UTF-8 allowed) without quotes; raw rows copied as they are."""
    pieces = [p for p, _ in rows]
    raw = np.asarray([r for _, r in rows], dtype=np.bool_)
    got = split(*json_escaped_column(*bytes_column(pieces), raw))
    for (piece, keep), out in zip(rows, got, strict=True):
        if keep:
            assert out == piece
        else:  # latin-1 maps each byte to one character: orjson escapes exactly the same bytes
            want = orjson.dumps(piece.decode("latin-1"))[1:-1].decode().encode("latin-1")
            assert out == want
