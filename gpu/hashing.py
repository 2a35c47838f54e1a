"""Stable 64-bit hashes of byte strings, for deciding a record's split.

The hash of a key must never change between runs, machines, worker counts or backends: it
decides which split a record lands in. Python's ``hash`` is salted per process, so keys are
hashed here with a fixed, documented function written once against an array namespace
(NumPy on CPU, CuPy on a GPU, ``array_api_strict`` in tests to catch calls CuPy lacks).

Algorithm ``poly64-splitmix/v1`` (changing it changes every split, so it is versioned):

1. ``pack_keys`` lays the keys out one after another, each followed by 1 to 8 zero bytes so
   that the next key starts on an 8-byte boundary; the buffer is read as little-endian
   ``uint64`` words ``w``.
2. Per key of ``m`` words, ``poly = sum(w[i] * P**(m-1-i)) mod 2**64`` (a polynomial hash over
   words, computed for all keys at once with one cumulative sum, see :func:`hash_packed`).
3. ``hash = splitmix64(poly + splitmix64(seed) + length * C)``; the splitmix64 finaliser makes
   every output bit depend on every input bit, so the top bits are uniform enough to compare
   against split thresholds.

All arithmetic is unsigned 64-bit and wraps, which NumPy and CuPy do silently for arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ALGORITHM = "poly64-splitmix/v1"
MASK = (1 << 64) - 1
P = 0x9E3779B97F4A7C15  # odd multiplier (2**64 / golden ratio)
C = 0xD6E8FEB86659FD93  # mixes the key length in: keys that differ only by padding differ
_PADDING = [b"\0" * n for n in range(9)]


def pack_keys(keys: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host-side layout of ``keys``: ``(buffer uint8, word_offsets int64[n+1], lengths uint64[n])``.

    Every key is followed by at least one zero byte, so a key boundary is also a word boundary
    and separate keys never run into each other (text kernels rely on that too).
    """
    padded = [k + _PADDING[8 - len(k) % 8] for k in keys]
    buffer = np.frombuffer(b"".join(padded), dtype=np.uint8)
    lengths = np.fromiter((len(k) for k in keys), dtype=np.uint64, count=len(keys))
    words = (lengths + np.uint64(8)) // np.uint64(8)  # len//8 + 1 words per key
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(words.astype(np.int64), out=offsets[1:])
    return buffer, offsets, lengths


def _u64(xp: Any, value: int) -> Any:
    return xp.asarray(value & MASK, dtype=xp.uint64)


def splitmix64(xp: Any, z: Any) -> Any:
    """The splitmix64 finaliser applied element-wise to a ``uint64`` array."""
    z = z ^ (z >> _u64(xp, 30))
    z = z * _u64(xp, 0xBF58476D1CE4E5B9)
    z = z ^ (z >> _u64(xp, 27))
    z = z * _u64(xp, 0x94D049BB133111EB)
    return z ^ (z >> _u64(xp, 31))


def _seed_mix(seed: int) -> int:
    z = np.asarray([seed & MASK], dtype=np.uint64)
    return int(splitmix64(np, z)[0])


def _powers(xp: Any, exponents: Any, root: int = P) -> Any:
    """``root ** e mod 2**64`` for an array of non-negative exponents (binary exponentiation)."""
    result = xp.ones(exponents.shape, dtype=xp.uint64)
    top = int(xp.max(exponents)) if exponents.shape[0] else 0
    base, bit = root, 0
    while (top >> bit) > 0:
        use = ((exponents >> bit) & 1) == 1
        result = xp.where(use, result * _u64(xp, base), result)
        base = (base * base) & MASK
        bit += 1
    return result


def _cumulative_sum(xp: Any, x: Any) -> Any:
    # The array-API name first (array_api_strict, NumPy >= 2.1); CuPy only has ``cumsum``.
    fn = getattr(xp, "cumulative_sum", None)
    if fn is not None:
        return fn(x, include_initial=True)
    return xp.concatenate([xp.zeros(1, dtype=x.dtype), xp.cumsum(x)])


_TABLES: dict[str, tuple[Any, Any]] = {}
Q = pow(P, -1, 1 << 64)  # P is odd, so it has an inverse modulo 2**64


def _tables(xp: Any, n: int) -> tuple[Any, Any]:
    """``(P**i, Q**i)`` for ``i < n`` (cached per namespace; grown in powers of two)."""
    key = xp.__name__
    cached = _TABLES.get(key)
    if cached is None or cached[0].shape[0] < n:
        size = 1 << max(20, (n - 1).bit_length())
        cached = (_power_table(xp, P, size), _power_table(xp, Q, size))
        _TABLES[key] = cached
    return cached


def _power_table(xp: Any, root: int, size: int) -> Any:
    """``root ** i`` for ``i < size`` (a power of two >= 1024) as an outer product of two short
    tables."""
    low = _powers(xp, xp.arange(1024, dtype=xp.int64), root)
    high = _powers(xp, xp.arange(size // 1024, dtype=xp.int64) * 1024, root)
    return xp.reshape(high[:, None] * low[None, :], (size,))


def hash_packed(xp: Any, words: Any, word_offsets: Any, lengths: Any, seed: int) -> Any:
    """Hashes of packed keys (``words`` uint64, ``word_offsets`` int64[n+1], ``lengths`` uint64[n]).

    Arrays must come from ``xp``; the result is a ``uint64[n]`` array of ``xp``.

    ``sum(w[i] * P**(end-1-i))`` over a key equals ``P**(end-1) * sum(w[i] * Q**i)`` with
    ``Q = P**-1 mod 2**64`` and ``i`` the global word index, so one multiplication by a cached
    table, one cumulative sum and one gather per key give every key's polynomial at once.
    """
    n = lengths.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=xp.uint64)
    total = words.shape[0]
    p_pow, q_pow = _tables(xp, total + 1)
    running = _cumulative_sum(xp, words * q_pow[:total])
    starts, ends = word_offsets[:-1], word_offsets[1:]
    poly = (xp.take(running, ends) - xp.take(running, starts)) * xp.take(p_pow, ends - 1)
    mixed = poly + _u64(xp, _seed_mix(seed)) + lengths * _u64(xp, C)
    return splitmix64(xp, mixed)


def hash_keys(keys: list[bytes], seed: int, xp: Any = np, batch_bytes: int = 4 << 20) -> Any:
    """Hash byte-string keys with ``seed`` (packing on the host, hashing with ``xp``).

    Keys are hashed in batches of about ``batch_bytes``: the kernel makes several temporary
    arrays the size of the batch, and small batches let the allocator reuse warm memory
    instead of faulting in fresh pages for every array (which dominates on large inputs).
    """
    pieces = []
    start, size = 0, 0
    for i, key in enumerate(keys):
        size += len(key) + 8
        if size >= batch_bytes:
            pieces.append(_hash_batch(keys[start : i + 1], seed, xp))
            start, size = i + 1, 0
    if start < len(keys) or not pieces:
        pieces.append(_hash_batch(keys[start:], seed, xp))
    return (
        pieces[0]
        if len(pieces) == 1
        else xp.concat(pieces)
        if hasattr(xp, "concat")
        else xp.concatenate(pieces)
    )


def _hash_batch(keys: list[bytes], seed: int, xp: Any) -> Any:
    buffer, offsets, lengths = pack_keys(keys)
    words = buffer.view("<u8")
    if xp is not np:
        words, offsets, lengths = (
            xp.asarray(a) for a in (words.astype(np.uint64), offsets, lengths)
        )
    return hash_packed(xp, words, offsets, lengths, seed)


def bucket(xp: Any, hashes: Any, thresholds: list[int]) -> Any:
    """Index of the bucket each hash falls in: the number of ``thresholds`` it reaches.

    ``thresholds`` are increasing ``uint64`` cut points; with cut points ``t_k = floor(c_k *
    2**64)`` for cumulative ratios ``c_k`` a uniform hash lands in bucket ``k`` with
    probability ``ratio_k``.
    """
    out = xp.zeros(hashes.shape, dtype=xp.int64)
    for t in thresholds:
        out = out + _astype(xp, hashes >= _u64(xp, t), xp.int64)
    return out


def _astype(xp: Any, x: Any, dtype: Any) -> Any:
    # ``xp.astype`` is the array-API spelling; CuPy arrays have the method instead.
    fn = getattr(xp, "astype", None)
    return fn(x, dtype) if fn is not None else x.astype(dtype)
