"""megatron-core's cache of ``BlendedDataset`` blending indices: finding, reading, writing.

With ``path_to_cache`` (Megatron-LM's ``--data-cache-path``) megatron-core saves a blend's two
arrays beside its datasets' indexes::

    {md5}-BlendedDataset-{split}-description.txt
    {md5}-BlendedDataset-{split}-dataset_index.npy          int16 [size]
    {md5}-BlendedDataset-{split}-dataset_sample_index.npy   int64 [size]

The description is ``json.dumps`` (indent 4) of ``class``, ``datasets`` (each dataset's own
identifiers, as in its ``GPTDataset`` description), ``split``, ``weights`` (normalised) and
``size``; ``md5`` is its hex MD5. As for single datasets, the tokenizer identifiers and exact
paths of the run are unknown here, so entries are found by matching the parameters that decide
the arrays. (GPT-NeoX caches no blending index: it rebuilds it at every start.)
"""

from __future__ import annotations

import json
import math
import posixpath
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.io.storage import atomic_open, join, load_npy
from pipeline.tokens.megatron_cache import description_md5, same_split_matrix

CLASS_NAME = "BlendedDataset"
ARRAYS = ("dataset_index", "dataset_sample_index")
# What must agree between a cached blend's datasets and ours (megatron-core's key names).
DATASET_KEYS = ("class", "num_samples", "index_split", "random_seed", "sequence_length")


def blended_description(
    datasets: list[str], split: str, weights: list[float], size: int | None
) -> str:
    """The description megatron-core writes (and hashes) for a blend of ``datasets``
    (their ``GPTDataset`` description texts)."""
    identifiers = {
        "class": CLASS_NAME,
        "datasets": [json.loads(d) for d in datasets],
        "split": split,
        "weights": weights,
        "size": size,
    }
    return json.dumps(identifiers, indent=4)


def entry_paths(folder: str, split: str, description: str) -> dict[str, str]:
    """The description and array paths of a blend entry."""
    base = join(folder, f"{description_md5(description)}-{CLASS_NAME}-{split}")
    return {"description": f"{base}-description.txt", **{k: f"{base}-{k}.npy" for k in ARRAYS}}


def find_blend_entry(
    fs: Any,
    folder: str,
    *,
    split: str,
    size: int,
    weights: list[float],
    datasets: list[dict[str, Any]],
) -> dict[str, str] | None:
    """Paths of a complete cached blend that matches, or None.

    ``datasets`` hold, per dataset, its ``dataset_path``, ``split_matrix`` and the
    :data:`DATASET_KEYS` values as megatron-core describes them.
    """
    try:
        found = sorted(fs.glob(join(folder, f"*-{CLASS_NAME}-{split}-description.txt")))
    except FileNotFoundError:
        return None
    for path in found:
        try:
            described = json.loads(fs.cat_file(path))
        except (ValueError, UnicodeDecodeError, OSError):
            continue
        if not _matches(described, split, size, weights, datasets):
            continue
        base = path[: -len("-description.txt")]
        paths = {"description": path, **{k: f"{base}-{k}.npy" for k in ARRAYS}}
        if all(fs.exists(paths[k]) for k in ARRAYS):
            return paths
    return None


def _matches(
    described: Any, split: str, size: int, weights: list[float], datasets: list[dict[str, Any]]
) -> bool:
    if not isinstance(described, dict) or described.get("class") != CLASS_NAME:
        return False
    if described.get("split") != split or described.get("size") != size:
        return False
    got_weights, got_datasets = described.get("weights"), described.get("datasets")
    if not isinstance(got_weights, list) or len(got_weights) != len(weights):
        return False
    if not all(
        isinstance(a, int | float) and math.isclose(a, b, rel_tol=1e-12, abs_tol=0)
        for a, b in zip(got_weights, weights, strict=True)
    ):
        return False
    if not isinstance(got_datasets, list) or len(got_datasets) != len(datasets):
        return False
    for got, want in zip(got_datasets, datasets, strict=True):
        if not isinstance(got, dict) or any(got.get(k) != want[k] for k in DATASET_KEYS):
            return False
        if _name(got.get("dataset_path")) != _name(want["dataset_path"]):
            return False
        if not same_split_matrix(got.get("split_matrix"), want["split_matrix"]):
            return False
    return True


def _name(path: Any) -> str | None:
    if not isinstance(path, str):
        return None
    return posixpath.basename(path.replace("\\", "/").rstrip("/"))


def load_blend_entry(
    fs: Any, paths: dict[str, str], size: int, lengths: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Read a cached blend and check it fits: dtypes, length, and each dataset's samples."""
    arrays = []
    for kind in ARRAYS:
        try:
            arrays.append(load_npy(fs, paths[kind]))
        except (ValueError, OSError, EOFError) as exc:
            raise UserError(
                f"cached megatron-core blend {paths[kind]} cannot be read ({exc}); delete this "
                "cache entry to rebuild it"
            ) from None
    dataset_index, dataset_sample_index = arrays
    fits = (
        dataset_index.dtype == np.int16
        and dataset_sample_index.dtype == np.int64
        and dataset_index.shape == (size,)
        and dataset_sample_index.shape == (size,)
    )
    if fits and size:
        counts = np.bincount(dataset_index.astype(np.int64), minlength=len(lengths))
        fits = (
            int(dataset_index.min()) >= 0
            and len(counts) == len(lengths)
            and all(int(c) <= n for c, n in zip(counts, lengths, strict=True))
            and int(dataset_sample_index.min()) >= 0
        )
    if not fits:
        raise UserError(
            f"cached megatron-core blend {paths['dataset_index']} does not fit this blend's "
            f"{len(lengths)} datasets and {size} samples; delete this cache entry to rebuild it"
        )
    return dataset_index, dataset_sample_index


def save_blend_entry(
    fs: Any, folder: str, split: str, description: str, arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    """Write the arrays, then the description (as megatron-core, which looks for all three)."""
    paths = entry_paths(folder, split, description)
    try:
        for kind, array in zip(ARRAYS, arrays, strict=True):
            with atomic_open(fs, paths[kind], "wb") as handle:
                np.save(handle, array, allow_pickle=True)  # the bytes megatron-core writes
        with atomic_open(fs, paths["description"], "wb") as handle:
            handle.write(description.encode("utf-8"))
    except OSError as exc:
        raise UserError(
            f"cannot write the megatron-core blend to {folder} ({exc}); pass a writable --index"
        ) from None
