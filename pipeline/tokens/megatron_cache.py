"""megatron-core's cache of ``GPTDataset`` sample indexes: finding, reading and writing it.

megatron-core caches each split's arrays under ``path_to_cache`` (Megatron-LM's
``--data-cache-path``; without it ``{prefix}/cache/GPTDataset_indices``) as::

    {md5}-GPTDataset-{split}-description.txt
    {md5}-GPTDataset-{split}-document_index.npy   int32 [epochs * docs]
    {md5}-GPTDataset-{split}-sample_index.npy     int32 (int64 past 2**31 - 1) [samples + 1, 2]
    {md5}-GPTDataset-{split}-shuffle_index.npy    uint32 (int64 from 2**32 - 2 samples) [samples]

The description is ``json.dumps(identifiers, indent=4)`` of the dataset's identifiers
(class, dataset_path, num_samples, index_split, random_seed, sequence_length, split,
split_matrix, tokenizer) and ``md5`` is the hex MD5 of that text. The tokenizer's identifiers
and the exact ``dataset_path`` string of the training run are generally unknown here, so cached
files are found by reading the descriptions and matching the parameters that decide the arrays;
``add_extra_token_to_sequence`` is not among them (megatron-core's key ignores it), so the
caller verifies the arrays. This module only does I/O; :mod:`pipeline.tokens.megatron_index`
decides.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.io.storage import atomic_open, join, load_npy

ARRAY_KINDS = ("document_index", "sample_index", "shuffle_index")
CLASS_NAME = "GPTDataset"


def default_cache_dir(prefix: str) -> str:
    """Where megatron-core caches indexes when ``path_to_cache`` is not set."""
    return join(prefix, "cache", f"{CLASS_NAME}_indices")


def megatron_description(
    *,
    dataset_path: str,
    split: str,
    splits: str | None,
    split_matrix: list[tuple[float, float] | None] | None,
    num_samples: int | None,
    seq_len: int,
    seed: int,
    tokenizer_identifiers: dict[str, Any] | None,
) -> str:
    """The description text megatron-core writes (and hashes) for one split's indexes."""
    identifiers = {
        "class": CLASS_NAME,
        "dataset_path": dataset_path,
        "num_samples": num_samples,
        "index_split": split,
        "random_seed": seed,
        "sequence_length": seq_len,
        "split": splits,
        "split_matrix": split_matrix,
        "tokenizer": tokenizer_identifiers,
    }
    return json.dumps(identifiers, indent=4)


def description_md5(description: str) -> str:
    """The hash that prefixes megatron-core's cache file names."""
    return hashlib.md5(description.encode("utf-8"), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One split's cached files in a cache folder."""

    base: str  # folder/{md5}-GPTDataset-{split}
    dataset_path: str | None
    same_dataset: bool  # its dataset_path names our dataset (exactly or by file name)

    def path(self, kind: str) -> str:
        """Path of ``description.txt`` or one of the ``.npy`` arrays."""
        suffix = "description.txt" if kind == "description" else f"{kind}.npy"
        return f"{self.base}-{suffix}"


def find_cache_entries(
    fs: Any,
    folder: str,
    *,
    dataset_path: str,
    split: str,
    split_matrix: list[tuple[float, float] | None] | None,
    num_samples: int | None,
    seq_len: int,
    seed: int,
) -> list[CacheEntry]:
    """Complete cache entries whose description matches, those of this dataset first.

    An entry lacking one of its three arrays is skipped, as megatron-core treats it as a miss.
    """
    want = {"class": CLASS_NAME, "index_split": split, "num_samples": num_samples}
    want |= {"random_seed": seed, "sequence_length": seq_len}
    found = []
    for path, described in read_descriptions(fs, folder, split):
        if any(described.get(k) != v or type(described.get(k)) is bool for k, v in want.items()):
            continue
        if not _same_matrix(described.get("split_matrix"), split_matrix):
            continue
        base = path[: -len("-description.txt")]
        entry = CacheEntry(
            base,
            described.get("dataset_path"),
            _same_path(described.get("dataset_path"), dataset_path),
        )
        if all(fs.exists(entry.path(kind)) for kind in ARRAY_KINDS):
            found.append(entry)
    return sorted(found, key=lambda e: (not e.same_dataset, e.dataset_path != dataset_path))


def read_descriptions(fs: Any, folder: str, split: str) -> list[tuple[str, dict[str, Any]]]:
    """``(path, parsed description)`` of every ``split`` description in ``folder``."""
    pattern = join(folder, f"*-{CLASS_NAME}-{split}-description.txt")
    try:
        paths = sorted(fs.glob(pattern))
    except FileNotFoundError:
        return []
    found = []
    for path in paths:
        try:
            described = json.loads(fs.cat_file(path))
        except (ValueError, UnicodeDecodeError, OSError):
            continue  # not a description megatron-core wrote; it could never match either
        if isinstance(described, dict):
            found.append((path, described))
    return found


def other_runs(
    fs: Any, folder: str, *, dataset_path: str, split: str
) -> list[tuple[CacheEntry, dict[str, Any]]]:
    """Complete entries of this dataset and split in ``folder``, whatever their parameters."""
    found = []
    for path, described in read_descriptions(fs, folder, split):
        if described.get("class") != CLASS_NAME or described.get("index_split") != split:
            continue
        if not _same_path(described.get("dataset_path"), dataset_path):
            continue
        entry = CacheEntry(path[: -len("-description.txt")], described.get("dataset_path"), True)
        if all(fs.exists(entry.path(kind)) for kind in ARRAY_KINDS):
            found.append((entry, described))
    return found


def entry_for(folder: str, split: str, description: str) -> CacheEntry:
    """The entry :func:`save_cache_entry` writes for ``description``."""
    base = join(folder, f"{description_md5(description)}-{CLASS_NAME}-{split}")
    return CacheEntry(base, None, True)


def load_cache_entry(fs: Any, entry: CacheEntry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an entry's ``document_index``, ``sample_index`` and ``shuffle_index``."""
    return tuple(_load_npy(fs, entry.path(kind)) for kind in ARRAY_KINDS)  # type: ignore[return-value]


def save_cache_entry(
    fs: Any, folder: str, split: str, description: str, arrays: tuple[np.ndarray, ...]
) -> CacheEntry:
    """Write the arrays and then the description (readers look for the description first)."""
    entry = entry_for(folder, split, description)
    for kind, array in zip(ARRAY_KINDS, arrays, strict=True):
        with atomic_open(fs, entry.path(kind), "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    with atomic_open(fs, entry.path("description"), "wb") as handle:
        handle.write(description.encode("utf-8"))
    return entry


def _load_npy(fs: Any, path: str) -> np.ndarray:
    try:
        return load_npy(fs, path)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(
            f"cached megatron-core index {path} cannot be read ({exc}); delete the files of this "
            "cache entry to rebuild them"
        ) from None


def same_split_matrix(described: object, ours: list[tuple[float, float] | None] | None) -> bool:
    """True when a description's ``split_matrix`` is ours (up to float rounding)."""
    return _same_matrix(described, ours)


def _same_matrix(described: object, ours: list[tuple[float, float] | None] | None) -> bool:
    if ours is None or described is None:  # a per-split blend's datasets have none
        return described is ours
    # The description stores floats through JSON, which round-trips them exactly; the same
    # weights written differently ("969,30,1" vs "0.969,0.03,0.001") may differ in the last bit.
    if not isinstance(described, list) or len(described) != len(ours):
        return False
    for got, exp in zip(described, ours, strict=True):
        if got is None or exp is None:
            if got is not exp:
                return False
        elif not (
            isinstance(got, list) and len(got) == 2 and all(isinstance(v, int | float) for v in got)
        ):
            return False
        elif not all(
            math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15) for a, b in zip(got, exp, strict=True)
        ):
            return False
    return True


def _same_path(described: object, ours: str) -> bool:
    # Data are often moved between training and export: the file name must still agree.
    if not isinstance(described, str):
        return False
    name = posixpath.basename(described.replace("\\", "/").rstrip("/"))
    return described == ours or name == posixpath.basename(ours.rstrip("/"))
