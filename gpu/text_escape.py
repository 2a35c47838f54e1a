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

The escaping kernels make two passes: exact output sizes, then the bytes.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

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


def _check(data: Any, offsets: Any) -> tuple[np.ndarray, np.ndarray]:
    data = np.ascontiguousarray(data, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if data.ndim != 1 or offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError("expected 1-D uint8 data and 1-D int64 offsets of length n + 1")
    if offsets[0] < 0 or offsets[-1] > data.shape[0] or np.any(offsets[1:] < offsets[:-1]):
        raise ValueError("offsets must be non-decreasing and within the data array")
    return data, offsets


@numba.njit(cache=True, nogil=True)
def _json_sizes(data, offsets, extra, out_off):
    out_off[0] = 0
    for i in range(offsets.shape[0] - 1):
        size = 2 + offsets[i + 1] - offsets[i]
        for j in range(offsets[i], offsets[i + 1]):
            size += extra[data[j]]
        out_off[i + 1] = out_off[i] + size


@numba.njit(cache=True, nogil=True)
def _json_write(data, offsets, extra, short, hexdigits, out, out_off):
    for i in range(offsets.shape[0] - 1):
        pos = out_off[i]
        out[pos] = 0x22
        pos += 1
        for j in range(offsets[i], offsets[i + 1]):
            c = data[j]
            e = extra[c]
            if e == 0:
                out[pos] = c
                pos += 1
            elif e == 1:
                out[pos] = 0x5C
                out[pos + 1] = short[c]
                pos += 2
            else:
                out[pos] = 0x5C
                out[pos + 1] = 0x75  # u
                out[pos + 2] = 0x30
                out[pos + 3] = 0x30
                out[pos + 4] = hexdigits[c >> 4]
                out[pos + 5] = hexdigits[c & 0xF]
                pos += 6
        out[pos] = 0x22


def json_string_column(data: Any, offsets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Encode each string as a JSON string literal, exactly as ``orjson.dumps(str)`` does.

    Returns ``(data uint8, offsets int64 [n+1])`` of the literals (quotes included).
    """
    data, offsets = _check(data, offsets)
    out_off = np.empty_like(offsets)
    _json_sizes(data, offsets, _JSON_EXTRA, out_off)
    out = np.empty(int(out_off[-1]), dtype=np.uint8)
    _json_write(data, offsets, _JSON_EXTRA, _JSON_SHORT, _HEX, out, out_off)
    return out, out_off


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
