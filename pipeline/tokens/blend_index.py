"""The blending index of GPT-NeoX's ``BlendableDataset`` and megatron-core's ``BlendedDataset``.

Both frameworks run the same greedy loop (``helpers.cpp: build_blending_indices``): position
``i`` goes to the dataset that lags its share most, ``argmax_k(w[k] * max(i, 1) - taken[k])``
with ties to the lowest ``k``, and reads that dataset's next sample. The loop is sequential
(each choice depends on the counts so far), so it runs compiled (numba) in plain IEEE doubles:
no fused multiply-add, the same rounding as the C++ code, bit for bit. Only the two output
arrays are allocated (the frameworks hold the same two). They differ in the dtype of the
dataset index (GPT-NeoX ``uint8``, at most 254 datasets; megatron-core ``int16``) and in how
many samples each dataset is asked for (the functions below).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from pipeline.errors import UserError

# The dataset-index dtype and the most datasets each framework's blend takes.
INDEX_DTYPES = {"neox": np.uint8, "megatron": np.int16}
MAX_DATASETS = {"neox": 254, "megatron": 32766}
# megatron-core's BlendedMegatronDatasetConfig.mid_level_dataset_surplus default.
MEGATRON_SURPLUS = 0.005
# GPT-NeoX's margin in get_normalized_weights_and_num_samples.
NEOX_MARGIN = 1.005


@numba.njit(cache=True, nogil=True)
def _blend_loop(weights, size, dataset_index, dataset_sample_index):  # pragma: no cover
    taken = np.zeros(weights.shape[0], np.int64)
    for i in range(size):
        x = max(float(i), 1.0)  # positions 0 and 1 both use 1.0, as the C++ code does
        best = 0
        best_error = weights[0] * x - float(taken[0])
        for k in range(1, weights.shape[0]):
            error = weights[k] * x - float(taken[k])
            if error > best_error:  # strict: ties go to the lowest k
                best_error = error
                best = k
        dataset_index[i] = best
        dataset_sample_index[i] = taken[best]
        taken[best] += 1


def build_blending_indices(
    weights: Sequence[float], size: int, convention: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(dataset_index, dataset_sample_index)`` of a blend of ``size`` positions.

    ``weights`` are the doubles the framework passes to its C++ helper (already normalised);
    ``dataset_index`` has the framework's dtype, ``dataset_sample_index`` is int64.
    """
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if not 1 <= len(w) <= MAX_DATASETS[convention]:
        raise UserError(
            f"a {convention} blend takes 1..{MAX_DATASETS[convention]} datasets, not {len(w)}"
        )
    dataset_index = np.zeros(size, INDEX_DTYPES[convention])
    dataset_sample_index = np.zeros(size, np.int64)
    if size:
        _blend_loop(w, int(size), dataset_index, dataset_sample_index)
    return dataset_index, dataset_sample_index


def neox_weights(weights: Sequence[float]) -> list[float]:
    """GPT-NeoX's ``get_normalized_weights_and_num_samples`` normalisation: ``x / sum(x)``
    in Python floats (``sum`` as the running interpreter adds)."""
    total = sum(weights)
    return [float(w) / total for w in weights]


def neox_samples_per_dataset(weights: Sequence[float], num_samples: int) -> list[int]:
    """GPT-NeoX's per-dataset sample counts: ``ceil(N * w_k * 1.005)`` (normalised weights)."""
    return [int(math.ceil(num_samples * w * NEOX_MARGIN)) for w in weights]


def numpy_normalize(weights: Sequence[float]) -> list[float]:
    """megatron-core's ``normalize`` and GPT-NeoX's second normalisation in ``BlendableDataset``:
    ``w / numpy.sum(w)`` in float64 (numpy's pairwise sum)."""
    w = np.array(weights, dtype=np.float64)
    return (w / np.sum(w)).tolist()


def megatron_samples_per_dataset(
    weights: Sequence[float], num_samples: int, surplus: float = 0.0
) -> list[int]:
    """megatron-core's ``_get_size_per_split_per_dataset`` for one split:
    ``ceil(ceil(N * w_k) * (1 + surplus))`` (normalised weights)."""
    return [int(math.ceil(math.ceil(num_samples * w) * (1 + surplus))) for w in weights]
