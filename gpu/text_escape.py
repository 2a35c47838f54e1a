"""String columns as bytes + offsets, escaped for writers without a Python string per row.

A column is ``(data uint8, offsets int64 [n+1])``: string ``i`` is the UTF-8 in
``data[offsets[i]:offsets[i+1]]`` (what :meth:`gpu.detok.Detokenizer.decode_to_bytes` returns).

- :func:`json_string_column`: each string as a JSON string literal, byte-identical to
  ``orjson.dumps(s)`` (quotes; ``\\"`` ``\\\\`` ``\\b`` ``\\t`` ``\\n`` ``\\f`` ``\\r``; other
  controls below U+0020 as ``\\u00xx`` in lower-case hex; everything else, DEL and non-ASCII
  included, as is).
- :func:`csv_field_column`: each string as one field written by Python's ``csv`` module with
  the default dialect (``QUOTE_MINIMAL``): quoted, with ``"`` doubled, when it holds ``,``
  ``"`` ``\\r`` or ``\\n``; otherwise unchanged (leading or trailing spaces and empty strings
  included). The csv module writes a row made of one empty field as ``""``: that case
  belongs to the row writer, not to the field.
- :func:`arrow_string_array`: a ``pyarrow`` string array over the same buffers (no copy).

The escaping kernels make two passes: exact output sizes, then the bytes; both step over
words of 8 bytes that need no escape.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from gpu.unaligned import load_u64, store_u64

# Extra output bytes per input byte in a JSON string: 1 for the two-character escapes, 5 for
# \u00xx, 0 otherwise.
_JSON_EXTRA = np.zeros(256, dtype=np.int64)
_JSON_SHORT = np.zeros(256, dtype=np.uint8)  # the letter after '\' for two-character escapes
for _code in range(0x20):
    _JSON_EXTRA[_code] = 5
for _code, _letter in (
    (0x08, "b"),
    (0x09, "t"),
    (0x0A, "n"),
    (0x0C, "f"),
    (0x0D, "r"),
    (0x22, '"'),
    (0x5C, "\\"),
):
    _JSON_EXTRA[_code] = 1
    _JSON_SHORT[_code] = ord(_letter)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).copy()
# What a kernel that escapes JSON as it writes takes: (extra bytes, short letter, hex digits).
JSON_ESCAPES = (_JSON_EXTRA, _JSON_SHORT, _HEX)
_NO_EXTRA = np.zeros(256, dtype=np.int64)


def _check(data: Any, offsets: Any) -> tuple[np.ndarray, np.ndarray]:
    data = np.ascontiguousarray(data, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if data.ndim != 1 or offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError("expected 1-D uint8 data and 1-D int64 offsets of length n + 1")
    if offsets[0] < 0 or offsets[-1] > data.shape[0] or np.any(offsets[1:] < offsets[:-1]):
        raise ValueError("offsets must be non-decreasing and within the data array")
    return data, offsets


# Word-at-a-time tests (8 bytes per step): most text holds no byte that JSON escapes, so a
# whole word is counted or copied at once; only words that hold one are looked at bytewise.
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_SPACES = np.uint64(0x2020202020202020)
_QUOTES = np.uint64(0x2222222222222222)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)


@numba.njit(cache=True, nogil=True, inline="always")
def _zero_byte(word):
    """High bit set in each byte of ``word`` that is zero (exact for the lowest such byte;
    only "any" is asked here)."""
    return (word - _ONES) & ~word & _HIGHS


@numba.njit(cache=True, nogil=True, inline="always")
def _has_json_special(word):
    """Whether any byte of ``word`` is below 0x20, ``"`` (0x22) or ``\\`` (0x5C)."""
    below_space = (word - _SPACES) & ~word & _HIGHS
    return (below_space | _zero_byte(word ^ _QUOTES) | _zero_byte(word ^ _BACKSLASHES)) != 0


@numba.njit(cache=True, nogil=True)
def _escaped_size(data, start, end, extra):
    size = end - start
    j = start
    while j + 8 <= end:
        if _has_json_special(load_u64(data, j)):
            for q in range(j, j + 8):
                size += extra[data[q]]
        j += 8
    while j < end:
        size += extra[data[j]]
        j += 1
    return size


@numba.njit(cache=True, nogil=True, inline="always")
def put_escaped(out, pos, c, extra, short, hexdigits):
    """Write byte ``c`` as it stands in a JSON string at ``out[pos:]`` (``1 + extra[c]``
    bytes: itself, ``\\x`` or ``\\u00xx``); returns the end."""
    e = extra[c]
    if e == 0:
        out[pos] = c
        return pos + 1
    out[pos] = 0x5C
    if e == 1:
        out[pos + 1] = short[c]
        return pos + 2
    out[pos + 1] = 0x75  # u
    out[pos + 2] = 0x30
    out[pos + 3] = 0x30
    out[pos + 4] = hexdigits[c >> 4]
    out[pos + 5] = hexdigits[c & 0xF]
    return pos + 6


@numba.njit(cache=True, nogil=True)
def _escape_into(data, start, end, extra, short, hexdigits, out, pos):
    """Write ``data[start:end]`` JSON-escaped at ``out[pos:]``; returns the end position."""
    j = start
    while j < end:
        if j + 8 <= end:
            word = load_u64(data, j)
            if not _has_json_special(word):
                store_u64(out, pos, word)
                pos += 8
                j += 8
                continue
        pos = put_escaped(out, pos, data[j], extra, short, hexdigits)
        j += 1
    return pos


@numba.njit(cache=True, nogil=True)
def _json_sizes(data, offsets, extra, quotes, out_off, before, after):
    """Output offsets of ``before[i] + '"' + escaped string i + '"' + after[i]`` (no quotes
    and no escapes when ``quotes`` is 0 and ``extra`` all zero)."""
    out_off[0] = 0
    for i in range(offsets.shape[0] - 1):
        size = quotes + _escaped_size(data, offsets[i], offsets[i + 1], extra)
        size += before[i + 1] - before[i] + after[i + 1] - after[i]
        out_off[i + 1] = out_off[i] + size


@numba.njit(cache=True, nogil=True)
def _copy(src, start, end, out, pos):
    for q in range(end - start):
        out[pos + q] = src[start + q]
    return pos + end - start


@numba.njit(cache=True, nogil=True)
def _json_write(
    data, offsets, extra, short, hexdigits, quoted, out, out_off, b_data, b_off, a_data, a_off
):
    for i in range(offsets.shape[0] - 1):
        pos = _copy(b_data, b_off[i], b_off[i + 1], out, out_off[i])
        if quoted:
            out[pos] = 0x22
            pos += 1
        pos = _escape_into(data, offsets[i], offsets[i + 1], extra, short, hexdigits, out, pos)
        if quoted:
            out[pos] = 0x22
            pos += 1
        _copy(a_data, a_off[i], a_off[i + 1], out, pos)


def _framed(
    data: Any,
    offsets: Any,
    before: tuple[Any, Any] | None,
    after: tuple[Any, Any] | None,
    *,
    json: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    data, offsets = _check(data, offsets)
    n = offsets.shape[0] - 1
    empty = (np.zeros(0, dtype=np.uint8), np.zeros(n + 1, dtype=np.int64))
    b_data, b_off = _check(*(before or empty))
    a_data, a_off = _check(*(after or empty))
    if b_off.shape[0] != n + 1 or a_off.shape[0] != n + 1:
        raise ValueError("before/after columns must have as many rows as the strings")
    extra = _JSON_EXTRA if json else _NO_EXTRA
    out_off = np.empty_like(offsets)
    _json_sizes(data, offsets, extra, 2 if json else 0, out_off, b_off, a_off)
    out = np.empty(int(out_off[-1]) + 8, dtype=np.uint8)  # 8-byte stores may run past the end
    _json_write(
        data, offsets, extra, _JSON_SHORT, _HEX, json, out, out_off, b_data, b_off, a_data, a_off
    )
    return out[: out_off[-1]], out_off


def json_string_column(data: Any, offsets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Encode each string as a JSON string literal, exactly as ``orjson.dumps(str)`` does.

    Returns ``(data uint8, offsets int64 [n+1])`` of the literals (quotes included).
    """
    return _framed(data, offsets, None, None)


def json_framed_column(
    data: Any, offsets: Any, before: tuple[Any, Any], after: tuple[Any, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Each string as a JSON literal between two byte columns: ``before[i] literal after[i]``.

    ``before`` and ``after`` are ``(data, offsets)`` columns with as many rows as the strings
    (for example the start of a JSON object up to a key, and the rest of the line), so a writer
    gets whole JSON lines in one buffer without a Python object per row.
    """
    return _framed(data, offsets, before, after)


def framed_column(
    data: Any,
    offsets: Any,
    frames: tuple[tuple[Any, Any], tuple[Any, Any]] | None,
    *,
    json: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Each string, as a JSON literal when ``json`` (else as is), between the rows of the
    ``frames = (before, after)`` byte columns (None: no frame)."""
    before, after = frames if frames is not None else (None, None)
    return _framed(data, offsets, before, after, json=json)


@numba.njit(cache=True, nogil=True)
def _escape_rows(data, offsets, raw, extra, no_extra, short, hexdigits, out, out_off, write):
    for i in range(offsets.shape[0] - 1):
        table = no_extra if raw[i] else extra
        if write:
            _escape_into(data, offsets[i], offsets[i + 1], table, short, hexdigits, out, out_off[i])
        else:
            out_off[i + 1] = out_off[i] + _escaped_size(data, offsets[i], offsets[i + 1], table)


def json_escaped_column(data: Any, offsets: Any, raw: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Each string JSON-escaped as inside a literal (no quotes); rows where ``raw`` (bool
    ``[n]``) is true are copied unchanged. Strings need not be valid UTF-8: escaping is
    bytewise."""
    data, offsets = _check(data, offsets)
    n = offsets.shape[0] - 1
    raw = np.zeros(n, dtype=np.bool_) if raw is None else np.asarray(raw, dtype=np.bool_)
    out_off = np.zeros(n + 1, dtype=np.int64)
    out = np.empty(8, dtype=np.uint8)
    args = (_JSON_EXTRA, _NO_EXTRA, _JSON_SHORT, _HEX)
    _escape_rows(data, offsets, raw, *args, out, out_off, False)
    out = np.empty(int(out_off[-1]) + 8, dtype=np.uint8)  # 8-byte stores may run past the end
    _escape_rows(data, offsets, raw, *args, out, out_off, True)
    return out[: out_off[-1]], out_off


@numba.njit(cache=True, nogil=True)
def _csv_sizes(data, offsets, out_off, quoted):
    out_off[0] = 0
    for i in range(offsets.shape[0] - 1):
        quotes = 0
        special = False
        for j in range(offsets[i], offsets[i + 1]):
            c = data[j]
            if c == 0x22:
                quotes += 1
            elif c == 0x2C or c == 0x0D or c == 0x0A:
                special = True
        quoted[i] = special or quotes > 0
        size = offsets[i + 1] - offsets[i]
        if quoted[i]:
            size += 2 + quotes
        out_off[i + 1] = out_off[i] + size


@numba.njit(cache=True, nogil=True)
def _csv_write(data, offsets, out, out_off, quoted):
    for i in range(offsets.shape[0] - 1):
        pos = out_off[i]
        if quoted[i]:
            out[pos] = 0x22
            pos += 1
        for j in range(offsets[i], offsets[i + 1]):
            c = data[j]
            out[pos] = c
            pos += 1
            if c == 0x22:
                out[pos] = 0x22
                pos += 1
        if quoted[i]:
            out[pos] = 0x22


def csv_field_column(data: Any, offsets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Encode each string as a CSV field the way ``csv.writer`` (default dialect) writes it.

    Returns ``(data uint8, offsets int64 [n+1])`` of the fields (quoted where needed).
    """
    data, offsets = _check(data, offsets)
    n = offsets.shape[0] - 1
    out_off = np.empty_like(offsets)
    quoted = np.empty(n, dtype=np.bool_)
    _csv_sizes(data, offsets, out_off, quoted)
    out = np.empty(int(out_off[-1]), dtype=np.uint8)
    _csv_write(data, offsets, out, out_off, quoted)
    return out, out_off


def arrow_string_array(data: Any, offsets: Any, *, large: bool = True) -> Any:
    """A ``pyarrow`` string array over ``data`` / ``offsets`` (UTF-8, no nulls).

    ``large=True`` gives ``large_string`` sharing both NumPy buffers (no copy); ``large=False``
    gives ``string`` (int32 offsets: the offsets are converted, the data is shared).
    """
    import pyarrow as pa

    data, offsets = _check(data, offsets)
    n = offsets.shape[0] - 1
    if large:
        return pa.Array.from_buffers(
            pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError("more than 2 GiB of text: use large=True")
    small = offsets.astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(small), pa.py_buffer(data)])
