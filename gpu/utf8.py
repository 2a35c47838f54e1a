"""UTF-8 validation and lossy repair for compiled kernels (Numba, nopython).

The replacement rule is the one of Python's ``bytes.decode('utf-8', 'replace')`` and Rust's
``String::from_utf8_lossy`` (Unicode's "maximal subpart" practice): each maximal prefix of a
valid sequence that cannot be completed, and each byte that cannot start one, becomes one
U+FFFD. Well-formed sequences follow Table 3-7 of the Unicode standard (no overlongs, no
surrogates, nothing above U+10FFFF).
"""

from __future__ import annotations

import numba
import numpy as np

from gpu.unaligned import load_u64

_HIGH_BITS = np.uint64(0x8080808080808080)


@numba.njit(cache=True, nogil=True, inline="always")
def seq_len(buf, i, end):
    """Length of a valid UTF-8 sequence at ``buf[i]`` (``end`` exclusive), else minus the
    length of the maximal invalid subpart to replace by one U+FFFD."""
    b0 = buf[i]
    if b0 < 0x80:
        return 1
    if 0xC2 <= b0 <= 0xDF:
        need, lo, hi = 1, 0x80, 0xBF
    elif b0 == 0xE0:
        need, lo, hi = 2, 0xA0, 0xBF
    elif b0 == 0xED:
        need, lo, hi = 2, 0x80, 0x9F
    elif 0xE1 <= b0 <= 0xEF:
        need, lo, hi = 2, 0x80, 0xBF
    elif b0 == 0xF0:
        need, lo, hi = 3, 0x90, 0xBF
    elif b0 == 0xF4:
        need, lo, hi = 3, 0x80, 0x8F
    elif 0xF1 <= b0 <= 0xF3:
        need, lo, hi = 3, 0x80, 0xBF
    else:
        return -1
    j = i + 1
    if j >= end or buf[j] < lo or buf[j] > hi:
        return -1
    j += 1
    for _ in range(need - 1):
        if j >= end or buf[j] < 0x80 or buf[j] > 0xBF:
            return -(j - i)
        j += 1
    return j - i


@numba.njit(cache=True, nogil=True)
def first_invalid(buf, start, end):
    """Index of the first byte of ``buf[start:end]`` not part of valid UTF-8, else ``end``."""
    i = start
    while i < end:
        if i + 8 <= end and load_u64(buf, i) & _HIGH_BITS == 0:
            i += 8  # eight ASCII bytes
            continue
        if buf[i] < 0x80:
            i += 1
            continue
        n = seq_len(buf, i, end)
        if n < 0:
            return i
        i += n
    return end


@numba.njit(cache=True, nogil=True)
def replace_invalid(out, bad, end, cap):
    """Rewrite ``out[bad:end]`` with U+FFFD for each maximal invalid subpart. Returns the new
    end, or -1 when ``cap`` is too small."""
    n = end - bad
    # A copy of the bytes to repair (the rare path: allocated here, not carried by callers).
    scratch = out[bad:end].copy()
    i, pos = 0, bad
    while i < n:
        k = seq_len(scratch, i, n)
        if k > 0:
            if pos + k > cap:
                return -1
            for q in range(k):
                out[pos + q] = scratch[i + q]
            pos += k
            i += k
        else:
            if pos + 3 > cap:
                return -1
            out[pos] = 0xEF
            out[pos + 1] = 0xBF
            out[pos + 2] = 0xBD
            pos += 3
            i += -k
    return pos
