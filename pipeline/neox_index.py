"""GPT-NeoX's training sample order: its cached index files, loaded or rebuilt bit for bit.

GPT-NeoX (``megatron/data/gpt2_dataset.py`` + ``helpers.cpp``; TokenSmith and Pythia use the
same code) orders one split's samples through three arrays cached as
``{prefix}_{split}_indexmap_{N}ns_{L}sl_{seed}s_{packing}pi[_ac]_{doc|sample|shuffle}_idx.npy``
(v1.0, the Pythia code, has no ``_{packing}pi[_ac]`` part). We rebuild them without torch or
the C++ helper, with the same values and dtypes:

``packed`` (the default, and the only packing of v1.0)
    ``epochs`` = the fewest with ``(epochs * tokens - 1) // L >= N``; all epochs' documents
    are tiled and shuffled together by one ``RandomState(seed)`` (no separate last epoch);
    ``doc_idx`` int32. Sample ``i >= 1`` starts at the token ``i * L`` of that stream (so each
    window of ``L + 1`` tokens shares its last token with the next) and sample 0 at ``(0, 0)``;
    ``(epochs * tokens - 1) // L`` samples are built. ``sample_idx`` is int32 when
    ``2 * ((epochs * tokens - 1) / L + 1) < 2**31 - 1`` (always int32 in v1.0), else int64; values
    are computed in int64 and stored with C's wrap-around. ``shuffle_idx`` (same generator,
    after ``doc_idx``) is uint32, or int64 from ``2**32 - 2`` samples on.
``pack_until_overflow``
    ``shuffle_idx = arange(N)`` shuffled first (int64); then whole documents are packed greedily
    from per-epoch permutations, each re-shuffled in place from the previous one, a new sample
    starting when the next document would overflow ``L + 1`` tokens or after a sample whose
    tokens so far are 0. ``doc_idx`` holds *positions* in the split and lengths are read as
    ``sizes[position]``, exactly like GPT-NeoX (for valid/test that means rows of the train
    part). ``sample_idx`` is int64 ``[N + 1, 2]`` with offsets 0. The last sample reads one
    document past ``doc_idx``: ``GPT2Dataset`` retries such ids as ``shuffle_idx[i] % len``,
    which the returned :class:`SampleOrder` reproduces (``retry_out_of_range``).
``unpacked``
    GPT-NeoX builds it only with a label dataset (its loop reads ``label_dataset``), so it is not
    supported.

Everything is vectorized: the C++ ``build_sample_idx`` loop becomes a ``searchsorted`` over the
token prefix sums, and greedy packing becomes a pointer-doubling walk over "next sample start".
"""

from __future__ import annotations

import io
import math
import posixpath
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.indexed_dataset import IndexedDataset
from pipeline.sample_order import SampleOrder
from pipeline.storage import atomic_open, is_local, join, resolve

SPLITS = ("train", "valid", "test")
PACKINGS = ("packed", "pack_until_overflow", "unpacked")
VERSIONS = ("head", "v1.0")
KINDS = ("doc_idx", "sample_idx", "shuffle_idx")
_INT32_MAX = np.iinfo(np.int32).max


def neox_num_samples(
    train_iters: int, batch_size: int, eval_interval: int = 1000, eval_iters: int = 100
) -> dict[str, int]:
    """Samples per split as GPT-NeoX's training entry point requests them (``train_batch_size`` global)."""
    for name, value, low in (
        ("train_iters", train_iters, 0),
        ("batch_size", batch_size, 1),
        ("eval_interval", eval_interval, 1),
        ("eval_iters", eval_iters, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    valid_iters = (train_iters // eval_interval + 1) * eval_iters
    return {
        "train": int(train_iters * batch_size),
        "valid": int(valid_iters * batch_size),
        "test": int(eval_iters * batch_size),
    }


def split_doc_bounds(splits: str, n_docs: int) -> list[int]:
    """GPT-NeoX's ``get_train_valid_test_split_``: ``"969,30,1"`` (or ``"0.9/0.1"``) -> ``[0, a, b, n]``.

    Weights are separated by ``,`` (else ``/``), padded with 0 to three, extra ones ignored, and
    normalized; each split gets ``round(w * n)`` documents (Python's half-to-even) and all bounds
    are then shifted so the last equals ``n``, as GPT-NeoX does.
    """
    text = str(splits)
    parts = text.split(",") if "," in text else text.split("/") if "/" in text else [text]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise UserError(
            f"splits {text!r} is not a list of numbers; use weights such as '969,30,1' or '0.9,0.1,0'"
        ) from None
    weights = (weights + [0.0, 0.0])[:3]
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise UserError(
            f"splits {text!r} must be non-negative finite weights with a positive sum, such as '969,30,1'"
        )
    total = sum(weights)
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + int(round(w / total * float(n_docs))))
    diff = bounds[-1] - n_docs
    bounds = [0] + [b - diff for b in bounds[1:]]
    if any(b < 0 for b in bounds):
        raise UserError(
            f"splits {text!r} give document bounds {bounds} for {n_docs} documents (GPT-NeoX would fail); choose other weights"
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
    """File names (``doc_idx``/``sample_idx``/``shuffle_idx`` -> name) GPT-NeoX caches the index under."""
    _check_choice("split", split, SPLITS)
    _check_choice("version", version, VERSIONS)
    stem = f"{index_prefix_name}_{split}_indexmap_{num_samples}ns_{seq_len}sl_{seed}s"
    if version == "head":
        stem += f"_{packing}pi" + ("_ac" if allow_chopped else "")
    return {kind: f"{stem}_{kind}.npy" for kind in KINDS}


def neox_num_epochs(tokens_per_epoch: int, seq_len: int, num_samples: int) -> int:
    """GPT-NeoX's ``_num_epochs``: the fewest epochs with ``(epochs * tokens - 1) // seq_len >= N``."""
    need = num_samples * seq_len + 1  # (e * t - 1) // L >= N  <=>  e * t >= N * L + 1
    return max(1, -(-need // tokens_per_epoch))


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

    ``sizes`` are the dataset's sequence lengths (GPT-NeoX's documents). Returns None when the
    split has no documents: GPT-NeoX builds no dataset for it.
    """
    _check_params(split, num_samples, seq_len, seed, packing, version)
    sizes = np.asarray(sizes)
    bounds = split_doc_bounds(splits, len(sizes))
    start, stop = bounds[SPLITS.index(split)], bounds[SPLITS.index(split) + 1]
    if stop <= start:
        return None
    tokens = int(sizes[start:stop].sum(dtype=np.int64))
    if tokens == 0:
        raise UserError(
            f"split {split!r} ({stop - start} documents) holds no tokens, so GPT-NeoX would loop forever; choose another split or splits string"
        )
    rng = np.random.RandomState(seed)
    if packing == "pack_until_overflow":
        return _build_pack_until_overflow(
            sizes, stop - start, num_samples, seq_len, allow_chopped, rng
        )
    epochs = neox_num_epochs(tokens, seq_len, num_samples)
    doc_idx = np.tile(np.arange(start, stop, dtype=np.int32), epochs)
    rng.shuffle(doc_idx)
    n_built = (epochs * tokens - 1) // seq_len
    sample_idx = _packed_sample_idx(sizes, doc_idx, seq_len, n_built).astype(
        _sample_idx_dtype(epochs, tokens, seq_len, version)
    )
    shuffle_idx = np.arange(n_built, dtype=_shuffle_idx_dtype(n_built))
    rng.shuffle(shuffle_idx)
    return doc_idx, sample_idx, shuffle_idx


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
) -> SampleOrder:
    """The sample order of one split as a GPT-NeoX run sees it: cached files, else rebuilt.

    ``index_prefix`` is GPT-NeoX's ``data_prefix`` / TokenSmith's ``batch_info_save_prefix``
    (default: the dataset prefix); a folder (existing, or ending in ``/``) means the dataset's
    name inside it. Files are looked up under the current names, then (``version="auto"``) the
    v1.0 names; missing ones are built and, with ``save``, published atomically.
    """
    _check_choice("version", version, ("auto", *VERSIONS))
    build_version = "head" if version == "auto" else version
    _check_params(split, num_samples, seq_len, seed, packing, build_version)
    fs, folder, name = _index_location(dataset, index_prefix, storage_options)
    bounds = split_doc_bounds(splits, len(dataset.sizes))
    if bounds[SPLITS.index(split) + 1] <= bounds[SPLITS.index(split)]:
        raise UserError(
            f"split {split!r} has no documents with splits {splits!r}; choose another split or splits string"
        )
    candidates = (
        [build_version]
        if version != "auto"
        else (["head", "v1.0"] if packing == "packed" else ["head"])
    )
    arrays = None
    for candidate in candidates:
        names = neox_index_filenames(
            name, split, num_samples, seq_len, seed, packing, allow_chopped, candidate
        )
        paths = {kind: join(folder, file) if folder else file for kind, file in names.items()}
        if all(fs.exists(p) for p in paths.values()):
            arrays = tuple(_load(fs, paths[kind]) for kind in KINDS)
            _check_cached(
                arrays,
                paths,
                dataset.sizes,
                bounds,
                split,
                num_samples,
                seq_len,
                packing,
                candidate,
            )
            break
    if arrays is None:
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
        assert arrays is not None  # the split was checked to have documents
        if save:
            names = neox_index_filenames(
                name, split, num_samples, seq_len, seed, packing, allow_chopped, build_version
            )
            for kind, array in zip(KINDS, arrays, strict=True):
                with atomic_open(
                    fs, join(folder, names[kind]) if folder else names[kind], "wb"
                ) as handle:
                    np.save(handle, array)
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
    )


# -- building ---------------------------------------------------------------------------------
def _sample_idx_dtype(epochs: int, tokens: int, seq_len: int, version: str) -> np.dtype:
    if version == "v1.0":
        return np.dtype(np.int32)  # v1.0's helper has only an int32 build
    # GPT-NeoX decides with a float division of int64 values, then calls the int32 or int64 helper.
    approx = np.true_divide(np.int64(epochs * tokens - 1), np.int64(seq_len))
    return np.dtype(np.int32 if 2 * (approx + 1) < _INT32_MAX else np.int64)


def _shuffle_idx_dtype(n_built: int) -> np.dtype:
    return np.dtype(np.uint32 if n_built < np.iinfo(np.uint32).max - 1 else np.int64)


def _packed_sample_idx(
    sizes: np.ndarray, doc_idx: np.ndarray, seq_len: int, n_built: int
) -> np.ndarray:
    """``build_sample_idx`` as int64: row i >= 1 locates token ``i * seq_len`` of the stream.

    The C++ loop consumes ``seq_len + 1`` tokens per sample and stops *on* the last one, which the
    next sample re-reads; so boundary i is the token ``i * seq_len``, found in the document whose
    token range contains it (empty documents contain none, so they are never chosen).
    """
    lengths = sizes[doc_idx].astype(np.int64)
    ends = np.cumsum(lengths)
    target = np.arange(1, n_built + 1, dtype=np.int64) * seq_len
    pos = np.searchsorted(ends, target, side="right")
    out = np.zeros((n_built + 1, 2), np.int64)
    out[1:, 0] = pos
    out[1:, 1] = target - (ends[pos] - lengths[pos])
    return out


def _build_pack_until_overflow(
    sizes: np.ndarray,
    n_docs: int,
    num_samples: int,
    seq_len: int,
    allow_chopped: bool,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shuffle_idx = np.arange(num_samples)
    rng.shuffle(shuffle_idx)
    capacity = seq_len + 1
    doc_len = sizes[:n_docs].astype(np.int64)  # GPT-NeoX reads sizes[position], see module doc
    if not allow_chopped and not (doc_len <= capacity).any():
        raise UserError(
            f"no document fits {capacity} tokens with allow_chopped=False, so GPT-NeoX fails to build this index; allow chopped samples or raise seq_len"
        )
    perm = np.arange(n_docs)
    rng.shuffle(perm)
    epochs = [perm.copy()]
    while True:
        raw = np.concatenate(epochs)
        keep = np.ones(len(raw), bool) if allow_chopped else doc_len[raw] <= capacity
        kept_at = np.flatnonzero(keep)
        stream = raw[kept_at]
        starts = _sample_starts(doc_len[stream], capacity, num_samples)
        # GPT-NeoX skips a too-long document without wrapping to the next epoch: skipping the
        # last one of a permutation before the last sample starts ends in an IndexError.
        bad_ends = np.flatnonzero(~keep[n_docs - 1 :: n_docs]) * n_docs + n_docs - 1
        done = len(starts) == num_samples
        if len(bad_ends) and (not done or bad_ends[0] < kept_at[starts[-1]]):
            raise UserError(
                f"GPT-NeoX fails on this index (a document longer than {capacity} tokens ends an epoch with allow_chopped=False); allow chopped samples or change the seed"
            )
        if done:
            break
        more = max(len(epochs), math.ceil(len(epochs) * (num_samples / len(starts) - 1) * 1.1))
        for _ in range(more):
            rng.shuffle(perm)  # in place, from the previous epoch's order, as GPT-NeoX does
            epochs.append(perm.copy())
    last = int(starts[-1])
    sample_idx = np.zeros((num_samples + 1, 2), np.int64)
    sample_idx[:-1, 0] = starts
    sample_idx[-1, 0] = last + 1
    return stream[: last + 1].astype(np.int64), sample_idx, shuffle_idx


def _sample_starts(lengths: np.ndarray, capacity: int, count: int) -> np.ndarray:
    """Stream positions of the first ``count`` greedy sample starts (fewer if the stream ends).

    From a start p, the next start is the first q > p where the tokens of ``p..q`` exceed
    ``capacity``, or p + 1 when p is empty (GPT-NeoX restarts while the running length is 0).
    The chain from 0 is then walked by pointer doubling: ``log2(count)`` vectorized gathers.
    """
    m = len(lengths)
    cum = np.zeros(m + 1, np.int64)
    np.cumsum(lengths, out=cum[1:])
    first_over = np.searchsorted(cum, cum[:-1] + capacity, side="right")
    following = np.arange(1, m + 1, dtype=np.int64)
    jump = np.empty(m + 1, np.int64)
    jump[:m] = np.where(lengths == 0, following, np.maximum(first_over - 1, following))
    jump[m] = m  # past the stream: stays there
    starts = np.zeros(1, np.int64)
    while len(starts) < count and starts[-1] < m:
        starts = np.concatenate([starts, jump[starts]])
        jump = jump[jump]
    starts = starts[:count]
    return starts[starts < m]


# -- cached files -----------------------------------------------------------------------------
def _index_location(
    dataset: IndexedDataset, index_prefix: str | None, storage_options: dict[str, Any] | None
) -> tuple[Any, str, str]:
    """``(fs, folder, file-name prefix)`` of the index files."""
    dataset_name = posixpath.basename(dataset.prefix.rstrip("/"))
    if index_prefix is None:
        fs, path = dataset.fs, dataset.idx_path[: -len(".idx")]
    else:
        options = storage_options if storage_options is not None else dataset.storage_options
        fs, path = resolve(index_prefix, options)
        if str(index_prefix).endswith("/") or fs.isdir(path):
            return fs, path.rstrip("/"), dataset_name
    folder, _, name = path.rpartition("/")
    return fs, folder, name


def _load(fs: Any, path: str) -> np.ndarray:
    try:
        if is_local(fs):
            return np.load(path, mmap_mode="r", allow_pickle=False)
        return np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(
            f"cached GPT-NeoX index {path} is unreadable ({exc}); delete it to rebuild or pass another index_prefix"
        ) from None


def _check_cached(
    arrays: tuple[np.ndarray, ...],
    paths: dict[str, str],
    sizes: np.ndarray,
    bounds: list[int],
    split: str,
    num_samples: int,
    seq_len: int,
    packing: str,
    version: str,
) -> None:
    """Cheap checks (dtypes, shapes, end rows) that the cached files fit these parameters."""
    doc_idx, sample_idx, shuffle_idx = arrays
    start, stop = bounds[SPLITS.index(split)], bounds[SPLITS.index(split) + 1]
    if packing == "packed":
        tokens = int(sizes[start:stop].sum(dtype=np.int64))
        epochs = neox_num_epochs(max(tokens, 1), seq_len, num_samples)
        n_built = max((epochs * tokens - 1) // seq_len, 0)
        expect = {
            "doc_idx": (np.int32, (epochs * (stop - start),)),
            "sample_idx": (_sample_idx_dtype(epochs, tokens, seq_len, version), (n_built + 1, 2)),
            "shuffle_idx": (_shuffle_idx_dtype(n_built), (n_built,)),
        }
    else:
        expect = {
            "doc_idx": (np.int64, doc_idx.shape),
            "sample_idx": (np.int64, (num_samples + 1, 2)),
            "shuffle_idx": (np.int64, (num_samples,)),
        }
    for kind, array in zip(KINDS, arrays, strict=True):
        dtype, shape = expect[kind]
        if array.dtype != np.dtype(dtype) or array.shape != shape:
            found, wanted = f"{array.dtype}{list(array.shape)}", f"{np.dtype(dtype)}{list(shape)}"
            raise UserError(
                f"cached GPT-NeoX index {paths[kind]} is {found}, expected {wanted}: it is corrupt or belongs to another dataset or splits; delete it to rebuild or pass another index_prefix"
            )
    last = int(sample_idx[-1, 0]) if len(sample_idx) else -1
    ends_ok = last == len(doc_idx) if packing != "packed" else 0 <= last < len(doc_idx)
    if len(doc_idx) and packing == "packed":
        ends_ok = ends_ok and all(start <= int(v) < stop for v in (doc_idx[0], doc_idx[-1]))
    if not ends_ok:
        raise UserError(
            f"cached GPT-NeoX index {paths['sample_idx']} does not fit {paths['doc_idx']}: the files are corrupt or from different runs; delete them to rebuild or pass another index_prefix"
        )


def _check_params(
    split: str, num_samples: int, seq_len: int, seed: int, packing: str, version: str
) -> None:
    _check_choice("split", split, SPLITS)
    _check_choice("packing", packing, PACKINGS)
    _check_choice("version", version, VERSIONS)
    if packing == "unpacked":
        raise UserError(
            "packing 'unpacked' is not supported: GPT-NeoX builds it only from a label dataset; use packed or pack_until_overflow"
        )
    if version == "v1.0" and packing != "packed":
        raise UserError(
            f"GPT-NeoX v1.0 only packs with 'packed', not {packing!r}; use packing='packed' or version='head'"
        )
    for name, value, low, high in (
        ("num_samples", num_samples, 1, None),
        ("seq_len", seq_len, 1, _INT32_MAX - 1),
        ("seed", seed, 0, 2**32 - 1),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < low
            or (high is not None and value > high)
        ):
            raise UserError(
                f"{name} must be an integer in [{low}, {high if high is not None else 'inf'}], got {value!r}"
            )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
