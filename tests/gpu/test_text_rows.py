"""Rows rendered from columns (gpu.text_rows) against Python's own formatting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu.text_rows import Choice, Column, IntList, render_rows

SETTINGS = settings(max_examples=150, deadline=None)
INT64 = st.integers(-(2**63), 2**63 - 1)


def split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    buf = data.tobytes()
    return [buf[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


@st.composite
def tables(draw):
    """Rows of an int, a list of ints, a choice and a byte string, with the expected bytes."""
    n = draw(st.integers(0, 12))
    ints = draw(st.lists(INT64, min_size=n, max_size=n))
    lists = draw(st.lists(st.lists(INT64, max_size=5), min_size=n, max_size=n))
    options = draw(st.lists(st.binary(max_size=6), min_size=1, max_size=4))
    codes = draw(st.lists(st.integers(0, len(options) - 1), min_size=n, max_size=n))
    texts = draw(st.lists(st.binary(max_size=8), min_size=n, max_size=n))
    sep = draw(st.sampled_from([b",", b", "]))
    want = [
        b"{"
        + str(ints[i]).encode()
        + b"|["
        + sep.join(str(v).encode() for v in lists[i])
        + b"]|"
        + options[codes[i]]
        + b"|"
        + texts[i]
        + b"}\n"
        for i in range(n)
    ]
    flat = np.asarray([v for row in lists for v in row], dtype=np.int64)
    list_off = np.cumsum([0] + [len(row) for row in lists]).astype(np.int64)
    text_off = np.cumsum([0] + [len(t) for t in texts]).astype(np.int64)
    parts = [
        b"{",
        np.asarray(ints, dtype=np.int64),
        b"|",
        IntList(flat, list_off, sep),
        b"|",
        Choice(np.asarray(codes, dtype=np.int64), options),
        b"|",
        Column(np.frombuffer(b"".join(texts), dtype=np.uint8), text_off),
        b"}\n",
    ]
    return n, parts, want


@SETTINGS
@given(tables())
def test_rows_match_python_formatting(table) -> None:
    n, parts, want = table
    data, offsets = render_rows(n, parts)
    assert split(data, offsets) == want
    assert offsets[0] == 0 and data.shape[0] == offsets[-1]


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.uint32, np.int64, np.uint64])
def test_integer_columns_of_any_width(dtype) -> None:
    info = np.iinfo(dtype)
    low, high = info.min, min(info.max, 2**63 - 1)
    values = np.asarray([low, -1 if low else 1, 0, 7, 10, high], dtype=dtype)
    data, offsets = render_rows(6, [values, b";"])
    assert split(data, offsets) == [str(int(v)).encode() + b";" for v in values]


def test_extreme_int64_in_lists() -> None:
    """-(2**63) has no int64 magnitude; it is written from its uint64 one (datasets can hold it)."""
    values = np.asarray([-(2**63), 2**63 - 1, -1, -(2**63) + 1], dtype=np.int64)
    data, offsets = render_rows(1, [IntList(values, np.asarray([0, 4]), b", ")])
    assert split(data, offsets) == [b"[" + b", ".join(str(int(v)).encode() for v in values) + b"]"]


def test_no_rows() -> None:
    data, offsets = render_rows(0, [b"x", np.zeros(0, dtype=np.int64)])
    assert data.shape == (0,) and offsets.tolist() == [0]


@pytest.mark.parametrize(
    "parts",
    [
        [np.zeros(3, dtype=np.int64)],  # wrong number of rows
        [np.zeros(2, dtype=np.float64)],  # not integers
        [np.asarray([2**63], dtype=np.uint64), np.zeros(1, dtype=np.uint64)],  # beyond int64
        [Choice(np.asarray([0, 2]), [b"a", b"b"])],  # code outside the options
        [IntList(np.zeros(2, dtype=np.int64), np.asarray([0, 2]))],  # offsets of 1 row
        [Column(np.zeros(2, dtype=np.uint8), np.asarray([0, 2]))],
    ],
)
def test_bad_parts_are_refused(parts) -> None:
    with pytest.raises(ValueError):
        render_rows(2, parts)
