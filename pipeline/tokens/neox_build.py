"""Vectorized builders of GPT-NeoX's sample index arrays (``pipeline.tokens.neox_index`` is the
API).

They reproduce ``megatron/data/gpt2_dataset.py`` and ``helpers.cpp`` of GPT-NeoX (HEAD and the
v1.0 tag used for Pythia) value for value and dtype for dtype, without torch or a C++ build:

* the C++ ``build_sample_idx`` loop becomes one ``searchsorted`` over token prefix sums;
* the greedy ``pack_until_overflow`` loop becomes a pointer-doubling walk over "next sample
  start", ``log2(num_samples)`` vectorized gathers.

The random generator is NumPy's legacy ``RandomState``, used in GPT-NeoX's order: its shuffles
draw the same numbers whatever the dtype of the array, so shuffling the real arrays in place is
the reference itself.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import UserError

_INT32_MAX = int(np.iinfo(np.int32).max)
_UINT32_MAX = int(np.iinfo(np.uint32).max)


def neox_num_epochs(tokens_per_epoch: int, seq_len: int, num_samples: int) -> int:
    """GPT-NeoX's ``_num_epochs``: the fewest epochs with
    ``(epochs * tokens - 1) // seq_len >= N``."""
    need = num_samples * seq_len + 1  # (e * t - 1) // L >= N  <=>  e * t >= N * L + 1
    return max(1, -(-need // tokens_per_epoch))


def sample_idx_dtype(epochs: int, tokens: int, seq_len: int, version: str) -> np.dtype:
    """dtype of a ``packed`` ``sample_idx``: v1.0's helper is int32 only; HEAD picks by size."""
    if version == "v1.0":
        return np.dtype(np.int32)
    # HEAD compares a float division of int64 values (numpy's true_divide), as written there.
    approx = np.true_divide(np.int64(epochs * tokens - 1), np.int64(seq_len))
    return np.dtype(np.int32 if 2 * (approx + 1) < _INT32_MAX else np.int64)


def shuffle_idx_dtype(n_built: int) -> np.dtype:
    """dtype of a ``packed`` ``shuffle_idx`` (``_build_shuffle_idx``)."""
    return np.dtype(np.uint32 if n_built < _UINT32_MAX - 1 else np.int64)


def build_packed(
    sizes: np.ndarray,
    start: int,
    stop: int,
    num_samples: int,
    seq_len: int,
    seed: int,
    version: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``packed`` arrays of documents ``[start, stop)``, which must hold at least one token.

    All epochs' documents are tiled and shuffled together (no separate last epoch); sample
    boundaries run over that stream; the shuffle of samples uses the same generator after it.
    """
    tokens = int(sizes[start:stop].sum(dtype=np.int64))
    epochs = neox_num_epochs(tokens, seq_len, num_samples)
    rng = np.random.RandomState(seed)
    doc_idx = np.tile(np.arange(start, stop, dtype=np.int32), epochs)
    rng.shuffle(doc_idx)
    n_built = (epochs * tokens - 1) // seq_len
    # Computed in int64, stored in the helper's type: astype wraps around like the C++ store.
    sample_idx = packed_sample_idx(sizes, doc_idx, seq_len, n_built)
    sample_idx = sample_idx.astype(sample_idx_dtype(epochs, tokens, seq_len, version))
    shuffle_idx = np.arange(n_built, dtype=shuffle_idx_dtype(n_built))
    rng.shuffle(shuffle_idx)
    return doc_idx, sample_idx, shuffle_idx


def packed_sample_idx(
    sizes: np.ndarray, doc_idx: np.ndarray, seq_len: int, n_built: int
) -> np.ndarray:
    """``build_sample_idx`` as int64 ``[n_built + 1, 2]``.

    The C++ loop takes ``seq_len + 1`` tokens per sample and stops *on* the last one, which the
    next sample takes again; so row ``i >= 1`` is the location of token ``i * seq_len`` of the
    stream, in the document whose token range holds it (an empty document holds none, so it is
    never named). Row 0 is ``(0, 0)`` even when that document is empty, as in the C++ code.
    """
    lengths = sizes[doc_idx].astype(np.int64)
    ends = np.cumsum(lengths)
    target = np.arange(1, n_built + 1, dtype=np.int64) * seq_len
    pos = np.searchsorted(ends, target, side="right")
    out = np.zeros((n_built + 1, 2), np.int64)
    out[1:, 0] = pos
    out[1:, 1] = target - (ends[pos] - lengths[pos])
    return out


def build_pack_until_overflow(
    sizes: np.ndarray, n_docs: int, num_samples: int, seq_len: int, allow_chopped: bool, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pack_until_overflow`` arrays of a split of ``n_docs`` documents.

    GPT-NeoX draws ``shuffle_idx`` first, then walks per-epoch permutations of the *positions*
    ``0..n_docs-1`` (each re-shuffled in place from the previous one) and reads their lengths
    as ``sizes[position]``; for valid/test that means rows of the train part. We do the same.
    """
    rng = np.random.RandomState(seed)
    shuffle_idx = np.arange(num_samples)
    rng.shuffle(shuffle_idx)
    capacity = seq_len + 1
    doc_len = sizes[:n_docs].astype(np.int64)
    perm = np.arange(n_docs)
    rng.shuffle(perm)
    epochs = [perm.copy()]
    while True:
        raw = np.concatenate(epochs)
        keep = np.ones(len(raw), bool) if allow_chopped else doc_len[raw] <= capacity
        kept_at = np.flatnonzero(keep)
        stream = raw[kept_at]
        starts = sample_starts(doc_len[stream], capacity, num_samples)
        done = len(starts) == num_samples
        # GPT-NeoX skips a too-long document without its end-of-epoch check: skipping the last
        # document of a permutation before the last sample has started raises IndexError there.
        bad_ends = np.flatnonzero(~keep[n_docs - 1 :: n_docs]) * n_docs + n_docs - 1
        if len(bad_ends) and (not done or bad_ends[0] < kept_at[starts[-1]]):
            raise UserError(
                f"GPT-NeoX fails to build this index (a document longer than {capacity} tokens "
                "ends an epoch's order while allow_chopped=False); allow chopped samples or "
                "change seq_len or seed"
            )
        if done:
            break
        # Enough further epochs for the rate seen so far (plus 10 %), at least doubling.
        more = max(len(epochs), math.ceil(len(epochs) * (num_samples / len(starts) - 1) * 1.1))
        for _ in range(more):
            rng.shuffle(perm)
            epochs.append(perm.copy())
    last = int(starts[-1])
    sample_idx = np.zeros((num_samples + 1, 2), np.int64)
    sample_idx[:-1, 0] = starts
    sample_idx[-1, 0] = last + 1  # one past doc_idx: GPT2Dataset's IndexError retry handles it
    return stream[: last + 1].astype(np.int64), sample_idx, shuffle_idx


def sample_starts(lengths: np.ndarray, capacity: int, count: int) -> np.ndarray:
    """Stream positions of the first ``count`` greedy sample starts (fewer if the stream ends).

    From a start ``p`` the next start is the first ``q > p`` where the tokens of ``p..q`` exceed
    ``capacity``, or ``p + 1`` when ``p`` is empty (GPT-NeoX starts a new sample whenever the
    running length is 0). The chain from 0 is walked by pointer doubling.
    """
    m = len(lengths)
    cum = np.zeros(m + 1, np.int64)
    np.cumsum(lengths, out=cum[1:])
    first_over = np.searchsorted(cum, cum[:-1] + capacity, side="right")
    following = np.arange(1, m + 1, dtype=np.int64)
    jump = np.empty(m + 1, np.int64)
    jump[:m] = np.where(lengths == 0, following, np.maximum(first_over - 1, following))
    jump[m] = m  # past the end of the stream: stays there
    starts = np.zeros(1, np.int64)
    while len(starts) < count and starts[-1] < m:
        starts = np.concatenate([starts, jump[starts]])  # starts 2^k .. 2^(k+1)-1
        jump = jump[jump]
    starts = starts[:count]
    return starts[starts < m]
