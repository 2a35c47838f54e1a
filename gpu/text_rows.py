"""Rows of text assembled from columns, for writers without a Python object per row.

A row is a sequence of parts, the same for every row: literal bytes, an integer column (in
decimal, as ``str(int)`` and ``orjson`` write it), a list of integers per row (flat values +
offsets, ``[1,2,3]`` with a chosen separator), or a choice per row among a few byte strings
(codes + options: a string column with few distinct values, or a piece that differs at the
start or end of a group), or a column of byte strings. :func:`render_rows` returns the rows
as one column ``(data uint8, offsets int64 [n+1])`` (see :mod:`gpu.text_escape`), e.g.
everything of a JSONL record but its text, built for a whole chunk at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class IntList:
    """Row ``i`` is ``[v, v, …]`` of ``values[offsets[i]:offsets[i+1]]`` joined by ``sep``."""

    values: np.ndarray
    offsets: np.ndarray
    sep: bytes = b","


@dataclass(frozen=True)
class Choice:
    """Row ``i`` is ``options[codes[i]]``."""

    codes: np.ndarray
    options: Sequence[bytes]


@dataclass(frozen=True)
class Column:
    """Row ``i`` is ``data[offsets[i]:offsets[i+1]]`` (a column of byte strings)."""

    data: np.ndarray
    offsets: np.ndarray


Part = bytes | np.ndarray | IntList | Choice | Column


@numba.njit(cache=True, nogil=True, inline="always")
def _magnitude(v):
    """``|v|`` as uint64: ``-v`` overflows int64 for ``-(2**63)``; a wrapped difference does not."""
    if v < 0:
        return np.uint64(0) - np.uint64(v)
    return np.uint64(v)


@numba.njit(cache=True, nogil=True, inline="always")
def _digits(v):
    """Characters of ``v`` in decimal (a minus sign included)."""
    n = 2 if v < 0 else 1
    m = _magnitude(v)
    while m >= np.uint64(10):
        m //= np.uint64(10)
        n += 1
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _put_int(out, pos, v):
    """Write ``v`` in decimal at ``out[pos:]``; returns the end."""
    end = pos + _digits(v)
    if v < 0:
        out[pos] = 0x2D
    m = _magnitude(v)
    q = end
    while True:
        q -= 1
        out[q] = np.uint8(0x30 + m % np.uint64(10))
        m //= np.uint64(10)
        if m == np.uint64(0):
            break
    return end


@numba.njit(cache=True, nogil=True)
def _int_sizes(values, sizes):
    for i in range(values.shape[0]):
        sizes[i] += _digits(values[i])


@numba.njit(cache=True, nogil=True)
def _list_sizes(values, offsets, sep_len, sizes):
    for i in range(offsets.shape[0] - 1):
        a, b = offsets[i], offsets[i + 1]
        size = 2 + max(b - a - 1, 0) * sep_len
        for j in range(a, b):
            size += _digits(values[j])
        sizes[i] += size


@numba.njit(cache=True, nogil=True)
def _write_literal(lit, out, pos):
    for i in range(pos.shape[0]):
        p = pos[i]
        for q in range(lit.shape[0]):
            out[p + q] = lit[q]
        pos[i] = p + lit.shape[0]


@numba.njit(cache=True, nogil=True)
def _write_ints(values, out, pos):
    for i in range(pos.shape[0]):
        pos[i] = _put_int(out, pos[i], values[i])


@numba.njit(cache=True, nogil=True)
def _write_lists(values, offsets, sep, out, pos):
    for i in range(pos.shape[0]):
        p = pos[i]
        out[p] = 0x5B  # [
        p += 1
        for j in range(offsets[i], offsets[i + 1]):
            if j > offsets[i]:
                for q in range(sep.shape[0]):
                    out[p + q] = sep[q]
                p += sep.shape[0]
            p = _put_int(out, p, values[j])
        out[p] = 0x5D  # ]
        pos[i] = p + 1


@numba.njit(cache=True, nogil=True)
def _write_column(data, offsets, out, pos):
    for i in range(pos.shape[0]):
        p = pos[i]
        a, b = offsets[i], offsets[i + 1]
        for q in range(b - a):
            out[p + q] = data[a + q]
        pos[i] = p + b - a


@numba.njit(cache=True, nogil=True)
def _write_choice(codes, data, offsets, out, pos):
    for i in range(pos.shape[0]):
        p = pos[i]
        a, b = offsets[codes[i]], offsets[codes[i] + 1]
        for q in range(b - a):
            out[p + q] = data[a + q]
        pos[i] = p + b - a


def _bytes_array(value: bytes) -> np.ndarray:
    return np.frombuffer(value, dtype=np.uint8)


def _int64(values: np.ndarray, n: int) -> np.ndarray:
    values = np.ascontiguousarray(values)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"an integer column of {n} rows was expected, got {values.shape}")
    if values.size and int(values.max()) >= 2**63:
        raise ValueError("integers of 2**63 and above are not supported")
    return values.astype(np.int64, copy=False)


def render_rows(n: int, parts: Sequence[Part]) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` rows made of ``parts`` (see the module docstring), as ``(data, offsets)``."""
    prepared: list[tuple[str, tuple]] = []
    sizes = np.zeros(n, dtype=np.int64)
    for part in parts:
        if isinstance(part, bytes):
            if part:
                prepared.append(("literal", (_bytes_array(part),)))
                sizes += len(part)
        elif isinstance(part, IntList):
            offsets = np.ascontiguousarray(part.offsets, dtype=np.int64)
            if offsets.shape != (n + 1,):
                raise ValueError(f"an IntList needs {n + 1} offsets, got {offsets.shape}")
            values = _int64(part.values, int(part.values.shape[0]))
            sep = _bytes_array(part.sep)
            _list_sizes(values, offsets, len(sep), sizes)
            prepared.append(("list", (values, offsets, sep)))
        elif isinstance(part, Column):
            offsets = np.ascontiguousarray(part.offsets, dtype=np.int64)
            if offsets.shape != (n + 1,):
                raise ValueError(f"a Column needs {n + 1} offsets, got {offsets.shape}")
            sizes += np.diff(offsets)
            data = np.ascontiguousarray(part.data, dtype=np.uint8)
            prepared.append(("column", (data, offsets)))
        elif isinstance(part, Choice):
            codes = _int64(part.codes, n)
            if n and (codes.min() < 0 or codes.max() >= len(part.options)):
                raise ValueError("a Choice code is outside its options")
            lengths = np.asarray([len(o) for o in part.options], dtype=np.int64)
            offsets = np.zeros(len(part.options) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            sizes += lengths[codes] if n else 0
            data = _bytes_array(b"".join(part.options))
            prepared.append(("choice", (codes, data, offsets)))
        else:
            values = _int64(part, n)
            _int_sizes(values, sizes)
            prepared.append(("ints", (values,)))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint8)
    pos = offsets[:-1].copy()
    writers = {
        "literal": _write_literal,
        "ints": _write_ints,
        "list": _write_lists,
        "choice": _write_choice,
        "column": _write_column,
    }
    for kind, args in prepared:
        writers[kind](*args, out, pos)
    return out, offsets
