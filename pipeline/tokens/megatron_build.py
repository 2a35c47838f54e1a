"""Building megatron-core ``GPTDataset``'s sample index arrays, bit for bit (values and dtypes).

Reproduced from ``megatron/core/datasets/gpt_dataset.py`` and the C++ ``build_sample_idx``
(megatron-core 0.16), for one split of a single-prefix blend:

* **Split.** ``"969,30,1"``: the numbers (``[.0-9]+``), padded with zeros to three, are
  normalized; split ``k`` holds sequences ``round(c_k * n)`` to ``round(c_{k+1} * n)`` of the
  cumulative weights ``c``. GPT datasets split *sequences* (``IndexedDataset.sizes``), not the
  ``.idx`` documents. A zero weight means megatron-core builds no dataset for that split.
* **Epochs.** The fewest ``E >= 1`` with ``E * tokens >= num_samples * L + extra`` (one epoch
  when ``num_samples`` is None); ``extra`` is 1 with ``add_extra_token_to_sequence``.
* **Separate final epoch.** With ``E > 1``, when the last epoch supplies fewer than
  ``int(0.8 * ((tokens - extra) // L))`` of the requested samples, the first ``E - 1`` epochs
  are shuffled together and the last one on its own (``document_index``), and the samples
  built from the first ``E - 1`` epochs are shuffled apart from the rest (``shuffle_index``).
  One ``RandomState(seed)`` draws, in order: documents, (last epoch's documents), samples.
* **Samples.** ``(E * tokens - extra) // L`` samples (valid split with
  ``drop_last_partial_validation_sequence=False``: the float32 ``ceil`` of the C++ code, the
  last one partial). Sample ``s`` starts at token ``s * L`` of the concatenated documents and
  its row is ``[position in document_index, offset]``; a start on a document boundary belongs
  to the document that ends there when ``extra = 0``, else to the next one.
* **Dtypes.** ``document_index`` int32; ``sample_index`` int32 unless
  ``max(len(document_index), max sequence length) > 2**31 - 1`` (then int64);
  ``shuffle_index`` uint32 unless ``samples >= 2**32 - 2`` (then int64).
* **Windows.** ``GPTDataset`` has ``len(sample_index) - 1`` samples; sample ``i`` reads
  ``sample_index[shuffle_index[i]]`` to ``sample_index[shuffle_index[i] + 1]`` plus ``extra``
  tokens, padded with the tokenizer's pad id (``-1`` when it has none or it collides with
  another special token) up to ``L + extra``; ``__getitem__`` then maps pads to 0.
"""

from __future__ import annotations

import math
import re

import numpy as np

from pipeline.errors import UserError

SPLITS = ("train", "valid", "test")
FINAL_EPOCH_THRESHOLD = 0.80
_INT32_MAX = int(np.iinfo(np.int32).max)
_UINT32_MAX = int(np.iinfo(np.uint32).max)
_NOT_SPLITS = re.compile(r"[^0-9.,/\s]")


def megatron_split_matrix(splits: str) -> list[tuple[float, float] | None]:
    """megatron-core's ``split_matrix`` of a splits string (None for a split of weight 0)."""
    edges = _split_edges(splits)
    return [(a, b) if b > a else None for a, b in zip(edges[:-1], edges[1:], strict=True)]


def megatron_split_bounds(splits: str, n_docs: int) -> list[int]:
    """``[0, a, b, n_docs]``: split ``k`` holds sequences ``bounds[k]:bounds[k + 1]``.

    megatron-core rounds each end of ``split_matrix`` the same way, so a split of weight 0 (no
    dataset in megatron-core) gets an empty range here.
    """
    if not is_int(n_docs) or n_docs < 0:
        raise UserError(f"n_docs must be a non-negative integer, got {n_docs!r}")
    return [int(round(edge * float(n_docs))) for edge in _split_edges(splits)]


def _split_edges(splits: str) -> list[float]:
    """Cumulative normalized weights ``[0, c1, c2, c3]`` computed as megatron-core does."""
    text = str(splits)
    problem = None
    try:
        weights = [float(n) for n in re.findall(r"[.0-9]+", text)]
    except ValueError:
        problem = "is not a list of numbers"
    if problem is None and (_NOT_SPLITS.search(text) or not 1 <= len(weights) <= 3):
        problem = "must be one to three non-negative numbers"
    if problem is None and sum(weights) <= 0:
        problem = "must have a positive sum"
    if problem is not None:
        raise UserError(f"splits {text!r} {problem}; use weights such as '969,30,1' or '0.9,0.1,0'")
    vector = np.array(weights + [0.0] * (3 - len(weights)), dtype=np.float64)
    # The running sum starts from the int 0, as megatron-core's does: its description shows it.
    edges: list[float] = [0]
    for weight in (vector / np.sum(vector)).tolist():
        edges.append(edges[-1] + weight)
    return edges


def build_megatron_arrays(
    sizes: np.ndarray,
    *,
    split: str,
    splits: str,
    num_samples: int | None,
    seq_len: int,
    seed: int,
    add_extra_token: bool = True,
    drop_last_partial_validation_sequence: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(document_index, sample_index, shuffle_index)`` of one split, as megatron-core builds them.

    ``sizes`` are all the dataset's int32 sequence lengths (megatron-core's documents).
    """
    check_params(split, num_samples, seq_len, seed)
    sizes = np.asarray(sizes)
    start, stop = split_range(splits, len(sizes), split)
    extra = int(bool(add_extra_token))
    tokens = int(sizes[start:stop].sum(dtype=np.int64))
    if tokens == 0:
        raise UserError(
            f"split {split!r} ({stop - start} sequences) holds no tokens, so megatron-core would "
            "loop forever; choose another split or splits string"
        )
    epochs = num_epochs(tokens, num_samples, seq_len, extra)
    separate, samples_before_final = False, 0
    if epochs > 1 and num_samples is not None:
        samples_before_final = ((epochs - 1) * tokens - extra) // seq_len
        per_epoch = (tokens - extra) // seq_len
        separate = num_samples - samples_before_final < int(FINAL_EPOCH_THRESHOLD * per_epoch)
    rng = np.random.RandomState(seed)
    documents = np.arange(start, stop, dtype=np.int32)
    if separate:
        doc_idx = np.concatenate(
            (_shuffled_epochs(documents, epochs - 1, rng), _shuffled_epochs(documents, 1, rng))
        )
    else:
        doc_idx = _shuffled_epochs(documents, epochs, rng)
    drop_last = split != "valid" or drop_last_partial_validation_sequence
    sample_idx = build_sample_index(sizes, doc_idx, seq_len, extra, drop_last)
    n_samples = len(sample_idx) - 1
    shuffle_idx = _shuffle_index(samples_before_final if separate else n_samples, n_samples, rng)
    return doc_idx, sample_idx, shuffle_idx


def build_sample_index(
    sizes: np.ndarray, doc_idx: np.ndarray, seq_len: int, extra: int, drop_last: bool = True
) -> np.ndarray:
    """megatron-core's ``build_sample_idx``, vectorized: a count of document ends per sample.

    ``sizes`` are all the dataset's sequence lengths (they also decide the dtype).
    """
    lengths = np.asarray(sizes)[doc_idx].astype(np.int64)
    ends = np.cumsum(lengths)  # token position where each document of doc_idx ends
    total = int(ends[-1]) if len(ends) else 0
    if drop_last:
        n_samples = (total - extra) // seq_len
    else:
        # The C++ code divides in single precision (float): past 2**24 tokens it rounds.
        n_samples = math.ceil(np.float32(total - extra) / np.float32(seq_len))
    n_samples = max(int(n_samples), 0)
    largest = max(len(doc_idx), int(np.max(sizes)) if len(sizes) else 0)
    out = np.zeros((n_samples + 1, 2), np.int32 if largest <= _INT32_MAX else np.int64)
    if n_samples == 0:
        return out
    # Sample s >= 1 starts at token s * L; the sample before it needs tokens up to s * L + extra
    # and ends in the first document reaching that far, i.e. after every document ending short
    # of it. Document k ends short of samples s > (ends[k] - extra) // L: count those per sample
    # (O(samples + documents), no binary search).
    short_of = np.clip((ends - extra) // seq_len, 0, n_samples)
    position = np.cumsum(np.bincount(short_of, minlength=n_samples + 1)[:n_samples])
    starts = np.arange(1, n_samples + 1, dtype=np.int64) * seq_len
    past_end = position >= len(doc_idx)  # only the partial last samples of drop_last=False
    position[past_end] = len(doc_idx) - 1
    offset = starts - (ends[position] - lengths[position])
    offset[past_end] = lengths[-1] - extra
    out[1:, 0] = position
    out[1:, 1] = offset
    return out


# -- pieces of the build ----------------------------------------------------------------------
def num_epochs(tokens: int, num_samples: int | None, seq_len: int, extra: int) -> int:
    """The fewest epochs of ``tokens`` holding ``num_samples`` windows (1 for None)."""
    if num_samples is None:
        return 1
    return max(1, -(-(num_samples * seq_len + extra) // tokens))


def _shuffled_epochs(documents: np.ndarray, epochs: int, rng: np.random.RandomState) -> np.ndarray:
    doc_idx = np.tile(documents, epochs)
    rng.shuffle(doc_idx)
    return doc_idx


def shuffle_index_dtype(n_samples: int) -> np.dtype:
    """megatron-core's shuffle index dtype: uint32, int64 from ``2**32 - 2`` samples."""
    return np.dtype(np.int64 if n_samples >= _UINT32_MAX - 1 else np.uint32)


def _shuffle_index(first: int, total: int, rng: np.random.RandomState) -> np.ndarray:
    dtype = shuffle_index_dtype(total)
    head = np.arange(first, dtype=dtype)
    rng.shuffle(head)
    if first == total:
        return head
    tail = np.arange(first, total, dtype=dtype)
    rng.shuffle(tail)
    return np.concatenate((head, tail))


# -- arguments --------------------------------------------------------------------------------
def split_range(splits: str, n_docs: int, split: str) -> tuple[int, int]:
    """``(start, stop)`` sequences of ``split``; a UserError when it has none."""
    i = SPLITS.index(split)
    start, stop = megatron_split_bounds(splits, n_docs)[i : i + 2]
    if stop <= start:
        raise UserError(
            f"split {split!r} has no sequences with splits {splits!r} over {n_docs} sequences; "
            "choose another split or splits string"
        )
    return start, stop


def check_params(split: str, num_samples: int | None, seq_len: int, seed: int) -> None:
    """Raise one UserError naming every invalid parameter."""
    problems = []
    if split not in SPLITS:
        problems.append(f"unknown split {split!r} (choose one of {', '.join(SPLITS)})")
    if num_samples is not None and (not is_int(num_samples) or num_samples < 0):
        problems.append(f"num_samples must be a non-negative integer or None, got {num_samples!r}")
    if not is_int(seq_len) or not 1 <= seq_len <= _INT32_MAX:
        problems.append(f"seq_len must be an integer 1..{_INT32_MAX}, got {seq_len!r}")
    if not is_int(seed) or not 0 <= seed <= _UINT32_MAX:
        problems.append(f"seed must be an integer 0..{_UINT32_MAX}, got {seed!r}")
    if problems:
        raise UserError("; ".join(problems))


def is_int(value: object) -> bool:
    """True for Python and NumPy integers (not bools)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
