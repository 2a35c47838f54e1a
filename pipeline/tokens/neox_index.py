"""GPT-NeoX's training sample order: its cached index files, loaded or rebuilt bit for bit.

GPT-NeoX (``megatron/data/gpt2_dataset.py``; TokenSmith and Pythia run the same code) orders a
split's samples through ``doc_idx``, ``sample_idx`` and ``shuffle_idx``, cached as
``{prefix}_{split}_indexmap_{N}ns_{L}sl_{seed}s_{packing}pi[_ac]_{doc|sample|shuffle}_idx.npy``
(v1.0, the Pythia code, names them without ``_{packing}pi[_ac]``). Semantics reproduced:

``packed`` (the default, and the only packing of v1.0)
    ``epochs`` = the fewest with ``(epochs * tokens - 1) // L >= N``; one ``RandomState(seed)``
    shuffles all epochs' documents together (no separate last epoch; ``doc_idx`` int32), then
    the built samples (``shuffle_idx`` uint32, int64 from ``2**32 - 2`` samples).
    ``(epochs * tokens - 1) // L`` samples are built; sample ``i >= 1`` starts at token
    ``i * L`` of the stream, so windows of ``L + 1`` tokens share one token. ``sample_idx`` is
    int32 when ``2 * ((epochs * tokens - 1) / L + 1) < 2**31 - 1`` (v1.0: always), else int64.
``pack_until_overflow``
    whole documents packed greedily from re-shuffled per-epoch permutations; int64 arrays,
    ``doc_idx`` holds positions in the split (see ``pipeline.tokens.neox_build``).
``unpacked``
    GPT-NeoX builds it only from a label dataset, so it is not supported.

The returned :class:`SampleOrder` reproduces ``GPT2Dataset.__getitem__``'s IndexError retry
(a sample reading past ``doc_idx`` is replaced by sample ``shuffle_idx[i] % len``), and
``len == min(len(shuffle_idx), len(sample_idx)) - 1``.
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.io.storage import atomic_open, join, load_npy, resolve
from pipeline.tokens.neox_build import (
    build_pack_until_overflow,
    build_packed,
    neox_num_epochs,
    sample_idx_dtype,
    shuffle_idx_dtype,
)
from pipeline.tokens.sample_order import OrderSource, SampleOrder, check_build_memory

SPLITS = ("train", "valid", "test")
PACKINGS = ("packed", "pack_until_overflow", "unpacked")
VERSIONS = ("head", "v1.0")
KINDS = ("doc_idx", "sample_idx", "shuffle_idx")

__all__ = [
    "KINDS",
    "PACKINGS",
    "SPLITS",
    "build_neox_arrays",
    "neox_index_filenames",
    "neox_num_epochs",
    "neox_num_samples",
    "neox_sample_order",
    "split_doc_bounds",
]


def neox_num_samples(
    train_iters: int, batch_size: int, eval_interval: int = 1000, eval_iters: int = 100
) -> dict[str, int]:
    """Samples per split as GPT-NeoX's training entry point requests them.

    ``batch_size`` is the global ``train_batch_size`` (micro batch x accumulation x data
    parallel); valid gets ``(train_iters // eval_interval + 1) * eval_iters`` batches.
    """
    checks = (("train_iters", train_iters, 0), ("batch_size", batch_size, 1))
    checks += (("eval_interval", eval_interval, 1), ("eval_iters", eval_iters, 0))
    for name, value, low in checks:
        if not _is_int(value) or value < low:
            raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    valid_iters = (train_iters // eval_interval + 1) * eval_iters
    return {
        "train": int(train_iters * batch_size),
        "valid": int(valid_iters * batch_size),
        "test": int(eval_iters * batch_size),
    }


def split_doc_bounds(splits: str, n_docs: int) -> list[int]:
    """GPT-NeoX's ``get_train_valid_test_split_``: ``"969,30,1"`` -> ``[0, a, b, n_docs]``.

    Weights are separated by ``,`` (else ``/``), padded with zeros to three (extra ones are
    ignored, as GPT-NeoX does) and normalized; each split gets ``round(w * n)`` documents
    (Python's half-to-even), then every bound is shifted so that the last one is ``n_docs``.
    """
    text = str(splits)
    parts = text.split(",") if "," in text else text.split("/") if "/" in text else [text]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise UserError(
            f"splits {text!r} is not a list of numbers; use weights such as '969,30,1' or "
            "'0.9,0.1,0'"
        ) from None
    weights = (weights + [0.0, 0.0])[:3]
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise UserError(
            f"splits {text!r} must be non-negative finite weights with a positive sum, such as "
            "'969,30,1'"
        )
    total = sum(weights)
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + int(round(w / total * float(n_docs))))
    diff = bounds[-1] - n_docs
    bounds = [0] + [b - diff for b in bounds[1:]]
    if bounds[1] < 0:  # GPT-NeoX's rounding fix-up can push it below 0; it would then fail
        raise UserError(
            f"splits {text!r} give document bounds {bounds} for {n_docs} documents, which GPT-NeoX "
            "cannot use; choose other weights"
        )
    return bounds


def neox_index_filenames(
    index_prefix_name: str,
    split: str,
    num_samples: int,
    seq_len: int,
    seed: int,
    packing: str = "packed",
    allow_chopped: bool = True,
    version: str = "head",
) -> dict[str, str]:
    """File names GPT-NeoX caches a split's index under
    (``doc_idx``/``sample_idx``/``shuffle_idx``)."""
    _check_choice("split", split.split("_")[0], SPLITS)
    _check_choice("version", version, VERSIONS)
    stem = f"{index_prefix_name}_{split}_indexmap_{num_samples}ns_{seq_len}sl_{seed}s"
    if version == "head":
        stem += f"_{packing}pi" + ("_ac" if allow_chopped else "")
    return {kind: f"{stem}_{kind}.npy" for kind in KINDS}


def build_neox_arrays(
    sizes: np.ndarray,
    *,
    split: str,
    splits: str,
    num_samples: int,
    seq_len: int,
    seed: int,
    packing: str = "packed",
    allow_chopped: bool = True,
    version: str = "head",
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Build ``(doc_idx, sample_idx, shuffle_idx)`` of one split exactly as GPT-NeoX would.

    ``sizes`` are the dataset's int32 sequence lengths (GPT-NeoX's documents). Returns None when
    the split has no documents: GPT-NeoX builds no dataset for it.
    """
    _check_params(split, num_samples, seq_len, seed, packing, version)
    sizes = np.asarray(sizes)
    start, stop = _split_range(splits, len(sizes), split)
    if stop <= start:
        return None
    if int(sizes[start:stop].sum(dtype=np.int64)) == 0:
        raise UserError(
            f"split {split!r} ({stop - start} documents) holds no tokens, so GPT-NeoX would loop "
            "forever; choose another split or splits string"
        )
    if packing == "pack_until_overflow":
        return build_pack_until_overflow(
            sizes, stop - start, num_samples, seq_len, allow_chopped, seed
        )
    return build_packed(sizes, start, stop, num_samples, seq_len, seed, version)


def neox_sample_order(
    dataset: IndexedDataset,
    *,
    split: str = "train",
    splits: str = "969,30,1",
    num_samples: int,
    seq_len: int,
    seed: int,
    packing: str = "packed",
    allow_chopped: bool = True,
    index_prefix: str | None = None,
    storage_options: dict[str, Any] | None = None,
    save: bool = True,
    version: str = "auto",
    build_index: bool = True,
    defer_save: bool = False,
    label: str | None = None,
) -> SampleOrder:
    """The sample order of one split as a GPT-NeoX run sees it: its cached files, else rebuilt.

    ``index_prefix`` is GPT-NeoX's ``data_prefix`` and TokenSmith's ``batch_info_save_prefix``
    (default: the dataset prefix); a folder (existing, or ending in ``/``) stands for the
    dataset's name inside it. ``storage_options`` default to the dataset's. Files are looked
    up under the current names, then (``version="auto"``) the v1.0 names; when missing they are
    built (as ``version``, HEAD for ``auto``) and, with ``save``, published atomically.

    ``build_index=False`` refuses to build when the place holds index files of this dataset and
    split for other parameters only (a wrong ``seq_len``, ``seed`` or sample count is the likely
    cause): the UserError names the closest of them. ``defer_save`` leaves the files of a built
    order to ``order.source.save()``. ``order.source`` says what was done. ``label`` replaces
    the split in the file names (a blend's component ``k`` of ``train`` is ``train_k``).
    """
    _check_choice("version", version, ("auto", *VERSIONS))
    build_version = "head" if version == "auto" else version
    _check_params(split, num_samples, seq_len, seed, packing, build_version)
    start, stop = _split_range(splits, len(dataset.sizes), split)
    if stop <= start:
        raise UserError(
            f"split {split!r} has no documents with splits {splits!r}; choose another split or "
            "splits string"
        )
    fs, folder, name = _index_location(dataset, index_prefix, storage_options)
    lookups = [build_version] if version != "auto" else ["head"]
    if version == "auto" and packing == "packed":
        lookups.append("v1.0")
    params = (label or split, num_samples, seq_len, seed, packing, allow_chopped)
    arrays = None
    for candidate in lookups:
        paths = _paths(folder, neox_index_filenames(name, *params, candidate))
        if all(fs.exists(p) for p in paths.values()):
            arrays = tuple(_load(fs, paths[kind]) for kind in KINDS)
            _check_cached(
                arrays, paths, dataset.sizes, start, stop, num_samples, seq_len, packing, candidate
            )
            source = OrderSource("neox", False, tuple(paths[kind] for kind in KINDS))
            break
    if arrays is None:
        if not build_index:
            _refuse_other_runs(fs, folder, name, params)
        check_build_memory(
            "the GPT-NeoX order",
            _build_bytes(dataset.sizes, start, stop, num_samples, seq_len, packing),
        )
        arrays = build_neox_arrays(
            dataset.sizes,
            split=split,
            splits=splits,
            num_samples=num_samples,
            seq_len=seq_len,
            seed=seed,
            packing=packing,
            allow_chopped=allow_chopped,
            version=build_version,
        )
        if arrays is None:  # unreachable: the split was checked to have documents
            raise UserError(f"split {split!r} has no documents with splits {splits!r}")
        source = OrderSource("neox", True)
        if save:
            paths = _paths(folder, neox_index_filenames(name, *params, build_version))
            source.files = tuple(paths[kind] for kind in KINDS)
            source.pending = (_save, (fs, paths, arrays))
            if not defer_save:
                source.save()
    doc_idx, sample_idx, shuffle_idx = arrays
    return SampleOrder(
        "neox",
        doc_idx,
        sample_idx,
        shuffle_idx,
        seq_len,
        extra_tokens=1,
        pad_token=0,
        retry_out_of_range=True,
        source=source,
    )


def _build_bytes(
    sizes: np.ndarray, start: int, stop: int, num_samples: int, seq_len: int, packing: str
) -> int:
    """Rough peak memory of building a split's arrays (to refuse absurd sample counts)."""
    n_docs = stop - start
    tokens = max(int(sizes[start:stop].sum(dtype=np.int64)), 1)
    if packing == "packed":
        epochs = neox_num_epochs(tokens, seq_len, num_samples)
        return epochs * n_docs * 16 + (epochs * tokens // seq_len + 1) * 40
    per_sample = max(1, -(-(seq_len + 1) * n_docs // tokens))  # documents a sample spans
    return num_samples * (per_sample * 48 + 40)


_INDEX_NAME = re.compile(
    r"_((?:train|valid|test)(?:_\d+)?)_indexmap_(\d+)ns_(\d+)sl_(\d+)s"
    r"(?:_(packed|pack_until_overflow|unpacked)pi(_ac)?)?_doc_idx\.npy$"
)


def _other_runs(fs: Any, folder: str, name: str, split: str) -> list[tuple[str, dict[str, Any]]]:
    """``(file, parameters)`` of the GPT-NeoX ``doc_idx`` files of ``name`` and ``split``."""
    try:
        listed = fs.ls(folder or ".", detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for path in sorted(listed):
        base = posixpath.basename(str(path).rstrip("/"))
        if not base.startswith(f"{name}_"):
            continue
        match = _INDEX_NAME.fullmatch(base[len(name) :])
        if match is None or match.group(1) != split:
            continue
        packing = match.group(5) or "packed"
        found.append(
            (
                str(path),
                {
                    "num_samples": int(match.group(2)),
                    "seq_len": int(match.group(3)),
                    "seed": int(match.group(4)),
                    "packing": packing,
                    "allow_chopped": bool(match.group(6)) if match.group(5) else None,
                },
            )
        )
    return found


def _refuse_other_runs(fs: Any, folder: str, name: str, params: tuple) -> None:
    """UserError naming the closest index files of another run of this dataset and split."""
    split, num_samples, seq_len, seed, packing, allow_chopped = params
    wanted = {
        "num_samples": num_samples,
        "seq_len": seq_len,
        "seed": seed,
        "packing": packing,
        "allow_chopped": allow_chopped,
    }

    def differences(got: dict[str, Any]) -> list[str]:
        return [k for k, v in got.items() if v is not None and v != wanted[k]]

    # A set for exactly these parameters that is incomplete (a killed save) is rebuilt.
    others = [item for item in _other_runs(fs, folder, name, split) if differences(item[1])]
    if not others:
        return

    def distance(item: tuple[str, dict[str, Any]]) -> tuple[int, float]:
        got = item[1]
        differ = differences(got)
        spread = sum(
            abs(math.log(max(got[k], 1) / max(wanted[k], 1))) for k in ("num_samples", "seq_len")
        )
        return len(differ), spread + (got["seed"] != seed)

    path, got = min(others, key=distance)
    differ = ", ".join(
        f"{k}={v} (not {wanted[k]})" for k, v in got.items() if v is not None and v != wanted[k]
    )
    more = f" and {len(others) - 1} other run(s)" if len(others) > 1 else ""
    raise UserError(
        f"no GPT-NeoX index for split={split}, num_samples={num_samples}, seq_len={seq_len}, "
        f"seed={seed}, packing={packing} in {folder or '.'}, which holds {path}{more}: closest "
        f"has {differ}; check --seq-len, --seed and --num-samples/--train-iters/--batch-size "
        "against the training config, or pass --build-index to build a new order there"
    )


# -- cached files -----------------------------------------------------------------------------
def _index_location(
    dataset: IndexedDataset, index_prefix: str | None, storage_options: dict[str, Any] | None
) -> tuple[Any, str, str]:
    """``(fs, folder, file-name prefix)`` of the index files."""
    if index_prefix is None:
        fs, path = dataset.fs, dataset.idx_path[: -len(".idx")]
    else:
        options = storage_options if storage_options is not None else dataset.storage_options
        fs, path = resolve(index_prefix, options)
        if str(index_prefix).endswith("/") or fs.isdir(path):
            dataset_name = posixpath.basename(dataset.idx_path[: -len(".idx")])
            return fs, path.rstrip("/"), dataset_name
    folder, _, name = path.rpartition("/")
    return fs, folder, name


def _paths(folder: str, names: dict[str, str]) -> dict[str, str]:
    return {kind: join(folder, file) if folder else file for kind, file in names.items()}


def _save(fs: Any, paths: dict[str, str], arrays: tuple[np.ndarray, ...]) -> None:
    """Publish each file atomically; shuffle_idx last, as GPT-NeoX only uses complete sets."""
    for kind, array in zip(KINDS, arrays, strict=True):
        try:
            with atomic_open(fs, paths[kind], "wb") as handle:
                np.save(handle, array)  # byte for byte what GPT-NeoX's np.save writes
        except OSError as exc:
            raise UserError(
                f"cannot write the GPT-NeoX index {paths[kind]} ({exc}); pass a writable --index "
                "(API: batch_info_save_prefix)"
            ) from None


def _load(fs: Any, path: str) -> np.ndarray:
    try:
        return load_npy(fs, path)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(
            f"cached GPT-NeoX index {path} is unreadable ({exc}); delete it to rebuild or pass "
            "another index_prefix"
        ) from None


def _check_cached(
    arrays: tuple[np.ndarray, ...],
    paths: dict[str, str],
    sizes: np.ndarray,
    start: int,
    stop: int,
    num_samples: int,
    seq_len: int,
    packing: str,
    version: str,
) -> None:
    """Cheap checks (dtypes, shapes, end rows) that cached files fit these parameters."""
    doc_idx, sample_idx, _ = arrays
    tokens = int(sizes[start:stop].sum(dtype=np.int64))
    if packing == "packed":
        epochs = neox_num_epochs(max(tokens, 1), seq_len, num_samples)
        n_built = max((epochs * tokens - 1) // seq_len, 0)
        expect = {
            "doc_idx": (np.int32, (epochs * (stop - start),)),
            "sample_idx": (sample_idx_dtype(epochs, tokens, seq_len, version), (n_built + 1, 2)),
            "shuffle_idx": (shuffle_idx_dtype(n_built), (n_built,)),
        }
    else:
        expect = {
            "doc_idx": (np.int64, (doc_idx.size,)),  # any length, but 1-D
            "sample_idx": (np.int64, (num_samples + 1, 2)),
            "shuffle_idx": (np.int64, (num_samples,)),
        }
    for kind, array in zip(KINDS, arrays, strict=True):
        dtype, shape = np.dtype(expect[kind][0]), expect[kind][1]
        if array.dtype != dtype or array.shape != shape or array.ndim != len(shape):
            raise UserError(
                f"cached GPT-NeoX index {paths[kind]} is {array.dtype}{list(array.shape)}, "
                f"expected {dtype}{list(shape)}: "
                "it is corrupt or belongs to another dataset, splits or run; delete it to rebuild "
                "or pass another --index folder (batch_info_save_prefix in the API)"
            )
    last = int(sample_idx[-1, 0])
    if packing == "packed":
        fits = 0 <= last < len(doc_idx) and all(start <= int(v) < stop for v in doc_idx[[0, -1]])
    else:
        fits = last == len(doc_idx)
    if tokens == 0 or not fits:
        raise UserError(
            f"cached GPT-NeoX index {paths['sample_idx']} does not fit {paths['doc_idx']} and this "
            "split: "
            "the files are corrupt or from different runs; delete them to rebuild or pass another "
            "index_prefix"
        )


# -- arguments --------------------------------------------------------------------------------
def _split_range(splits: str, n_docs: int, split: str) -> tuple[int, int]:
    bounds = split_doc_bounds(splits, n_docs)
    i = SPLITS.index(split)
    return bounds[i], bounds[i + 1]


def _check_params(
    split: str, num_samples: int, seq_len: int, seed: int, packing: str, version: str
) -> None:
    _check_choice("split", split, SPLITS)
    _check_choice("packing", packing, PACKINGS)
    _check_choice("version", version, VERSIONS)
    if packing == "unpacked":
        raise UserError(
            "packing 'unpacked' is not supported: GPT-NeoX builds it only from a label dataset; "
            "use packed or pack_until_overflow"
        )
    if version == "v1.0" and packing != "packed":
        raise UserError(
            f"GPT-NeoX v1.0 only has packing 'packed', not {packing!r}; use packing='packed' or "
            "version='head'"
        )
    limits = (("num_samples", num_samples, 1, None), ("seq_len", seq_len, 1, 2**31 - 2))
    for name, value, low, high in (*limits, ("seed", seed, 0, 2**32 - 1)):
        if not _is_int(value) or value < low or (high is not None and value > high):
            upper = f"..{high}" if high is not None else " or more"
            raise UserError(f"{name} must be an integer {low}{upper}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
