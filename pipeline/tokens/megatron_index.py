"""megatron-core ``GPTDataset``'s sample order: its cached index files, loaded or rebuilt bit for
bit.

:func:`megatron_sample_order` finds a split's arrays in megatron-core's cache folder
(:mod:`pipeline.tokens.megatron_cache`), verifies them against the dataset, else builds them exactly
as megatron-core does (:mod:`pipeline.tokens.megatron_build`, where the rules are spelled out) and
optionally saves them in megatron-core's layout. The returned :class:`SampleOrder` has
megatron-core's length (``len(sample_index) - 1``) and windows (``L + extra`` tokens, pad
``-1`` for a partial last validation window, as megatron-core's raw window before
``GPTDataset.__getitem__`` maps pads to 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.io.storage import resolve
from pipeline.tokens.megatron_build import (
    SPLITS,
    build_megatron_arrays,
    build_sample_index,
    check_params,
    is_int,
    megatron_split_bounds,
    megatron_split_matrix,
    num_epochs,
    shuffle_index_dtype,
    split_range,
)
from pipeline.tokens.megatron_cache import (
    ARRAY_KINDS,
    default_cache_dir,
    entry_for,
    find_cache_entries,
    load_cache_entry,
    megatron_description,
    other_runs,
    same_split_matrix,
    save_cache_entry,
)
from pipeline.tokens.sample_order import OrderSource, SampleOrder, check_build_memory

MEGATRON_PAD_TOKEN = -1  # megatron-core's _PAD_TOKEN_ID, used when the tokenizer has no pad id

__all__ = [
    "MEGATRON_PAD_TOKEN",
    "SPLITS",
    "build_megatron_arrays",
    "build_sample_index",
    "megatron_num_samples",
    "megatron_sample_order",
    "megatron_split_bounds",
    "megatron_split_matrix",
]


def megatron_num_samples(
    train_iters: int, global_batch_size: int, eval_interval: int = 1000, eval_iters: int = 100
) -> dict[str, int]:
    """Samples per split as Megatron-LM's ``get_train_valid_test_num_samples`` requests them."""
    checks = (("train_iters", train_iters, 0), ("global_batch_size", global_batch_size, 1))
    for name, value, low in (
        *checks,
        ("eval_interval", eval_interval, 1),
        ("eval_iters", eval_iters, 0),
    ):
        if not is_int(value) or value < low:
            raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    valid_iters = (train_iters // eval_interval + 1) * eval_iters
    return {
        "train": int(train_iters * global_batch_size),
        "valid": int(valid_iters * global_batch_size),
        "test": int(eval_iters * global_batch_size),
    }


def megatron_sample_order(
    dataset: IndexedDataset,
    *,
    split: str = "train",
    splits: str = "969,30,1",
    num_samples: int | None,
    seq_len: int,
    seed: int,
    add_extra_token: bool = True,
    cache_dir: str | None = None,
    storage_options: dict[str, Any] | None = None,
    save: bool = False,
    load_only: bool = False,
    tokenizer_identifiers: dict[str, Any] | None = None,
    drop_last_partial_validation_sequence: bool = True,
    pad_token: int = MEGATRON_PAD_TOKEN,
    build_index: bool = True,
    defer_save: bool = False,
    whole_file: bool = False,
) -> SampleOrder:
    """The sample order of one split as megatron-core's ``GPTDataset`` sees it.

    Looks for the split's cached files in ``cache_dir`` (Megatron-LM's ``--data-cache-path``;
    default: megatron-core's own ``{prefix}/cache/GPTDataset_indices``) by matching their
    descriptions, preferring entries of this dataset; verifies them; else builds the arrays
    (``load_only``: raise instead) and, with ``save``, writes them in megatron-core's layout
    with its file names: given the run's ``tokenizer_identifiers`` (the tokenizer's
    ``unique_identifiers``) and the dataset prefix it was given, megatron-core reuses them.
    ``storage_options`` (default: the dataset's) apply to ``cache_dir``. ``pad_token`` fills
    the partial last window of a valid split built without dropping it: megatron-core's raw
    window has the tokenizer's pad id there (``-1`` without one), ``__getitem__`` turns it into 0.

    ``build_index=False`` refuses to build when the cache folder holds entries of this dataset
    and split for other parameters only (the UserError names the closest); ``defer_save``
    leaves writing a built entry to ``order.source.save()``. ``order.source`` says what was done.
    ``whole_file``: the split uses every sequence (a per-split blend's dataset: megatron-core's
    description has neither splits string nor split matrix, as megatron-core's blend_per_split).
    """
    check_params(split, num_samples, seq_len, seed)
    described_splits: str | None = splits
    if whole_file:
        splits = ",".join("1" if s == split else "0" for s in SPLITS)
        described_splits = None
    matrix = None if whole_file else megatron_split_matrix(splits)
    start, stop = split_range(splits, len(dataset.sizes), split)
    extra = int(bool(add_extra_token))
    drop_last = split != "valid" or drop_last_partial_validation_sequence
    options = storage_options if storage_options is not None else dataset.storage_options
    fs, folder = resolve(
        cache_dir if cache_dir is not None else default_cache_dir(dataset.prefix), options
    )
    params = {"split": split, "num_samples": num_samples, "seq_len": seq_len, "seed": seed}
    entries = find_cache_entries(
        fs, folder, dataset_path=dataset.prefix, split_matrix=matrix, **params
    )
    arrays, problems = None, []
    for entry in entries:
        try:
            loaded = load_cache_entry(fs, entry)
        except UserError as exc:
            problems += [str(exc)] if entry.same_dataset else []
            continue
        problem = _check_loaded(
            loaded, dataset.sizes, start, stop, num_samples, seq_len, extra, drop_last
        )
        if problem is None:
            arrays = loaded
            source = OrderSource("megatron", False, tuple(entry.path(k) for k in ARRAY_KINDS))
            break
        if entry.same_dataset:  # files of another dataset that happen to match are skipped
            problems.append(f"cached megatron-core index {entry.path('sample_index')} {problem}")
    if arrays is None and problems:
        raise UserError(problems[0])
    if arrays is None:
        if load_only:
            raise UserError(
                f"no megatron-core GPTDataset index for split={split}, num_samples={num_samples}, "
                f"seq_len={seq_len}, "
                f"seed={seed}, splits={splits!r} in {cache_dir or folder}; check these parameters "
                "against the run or build the index"
            )
        if not build_index:
            _refuse_other_runs(fs, folder, dataset.prefix, params, matrix, cache_dir)
        check_build_memory(
            "the megatron-core order", _build_bytes(dataset.sizes, start, stop, num_samples, params)
        )
        arrays = build_megatron_arrays(
            dataset.sizes,
            **params,
            splits=splits,
            add_extra_token=add_extra_token,
            drop_last_partial_validation_sequence=drop_last_partial_validation_sequence,
        )
        source = OrderSource("megatron", True)
        if save:
            description = megatron_description(
                dataset_path=dataset.prefix,
                splits=described_splits,
                split_matrix=matrix,
                tokenizer_identifiers=tokenizer_identifiers,
                **params,
            )
            entry = entry_for(folder, split, description)
            source.files = (*(entry.path(k) for k in ARRAY_KINDS), entry.path("description"))
            source.pending = (_save, (fs, folder, split, description, arrays))
            if not defer_save:
                source.save()
    doc_idx, sample_idx, shuffle_idx = arrays
    return SampleOrder(
        "megatron",
        doc_idx,
        sample_idx,
        shuffle_idx,
        seq_len,
        extra_tokens=extra,
        pad_token=pad_token,
        source=source,
    )


def _save(fs: Any, folder: str, split: str, description: str, arrays: tuple) -> None:
    try:
        save_cache_entry(fs, folder, split, description, arrays)
    except OSError as exc:
        raise UserError(
            f"cannot write the megatron-core index to {folder} ({exc}); pass a writable "
            "cache_dir (--index) or save=False"
        ) from None


def _build_bytes(
    sizes: np.ndarray, start: int, stop: int, num_samples: int | None, params: dict[str, Any]
) -> int:
    """Rough peak memory of building a split's arrays (to refuse absurd sample counts)."""
    tokens = max(int(sizes[start:stop].sum(dtype=np.int64)), 1)
    epochs = num_epochs(tokens, num_samples, params["seq_len"], 1)
    return epochs * (stop - start) * 16 + (epochs * tokens // params["seq_len"] + 1) * 40


def _refuse_other_runs(
    fs: Any,
    folder: str,
    dataset_path: str,
    params: dict[str, Any],
    matrix: list | None,
    cache_dir: str | None,
) -> None:
    """UserError naming the closest cache entry of this dataset and split for other parameters."""
    others = other_runs(fs, folder, dataset_path=dataset_path, split=params["split"])
    if not others:
        return
    keys = {"num_samples": "num_samples", "sequence_length": "seq_len", "random_seed": "seed"}

    def shown(value: Any) -> Any:
        return "one epoch" if value is None else value  # megatron-core's count for no count

    def differences(described: dict[str, Any]) -> list[str]:
        out = [
            f"{ours}={shown(described.get(theirs))} (not {shown(params[ours])})"
            for theirs, ours in keys.items()
            if described.get(theirs) != params[ours]
        ]
        if not same_split_matrix(described.get("split_matrix"), matrix):
            out.append(f"splits={described.get('split')!r}")
        return out

    others = [item for item in others if differences(item[1])]
    if not others:
        return
    entry, described = min(others, key=lambda item: len(differences(item[1])))
    more = f" and {len(others) - 1} other run(s)" if len(others) > 1 else ""
    raise UserError(
        f"no megatron-core index for split={params['split']}, "
        f"num_samples={shown(params['num_samples'])}, seq_len={params['seq_len']}, "
        f"seed={params['seed']} in {cache_dir or folder}, which holds "
        f"{entry.path('description')}{more}: closest has {', '.join(differences(described))}; "
        "check --seq-len, --seed and --num-samples/--train-iters/--batch-size against the "
        "training config, or pass --build-index to build a new order"
    )


def _check_loaded(
    arrays: tuple[np.ndarray, ...],
    sizes: np.ndarray,
    start: int,
    stop: int,
    num_samples: int | None,
    seq_len: int,
    extra: int,
    drop_last: bool,
) -> str | None:
    """What is wrong with cached arrays for this dataset and split, or None.

    ``sample_index`` is recomputed from the cached ``document_index`` (as fast as reading it):
    that catches another dataset and a corrupt file, and tells which
    ``add_extra_token_to_sequence`` built it, which megatron-core's cache key does not record.
    """
    doc_idx, sample_idx, shuffle_idx = arrays
    tokens = int(sizes[start:stop].sum(dtype=np.int64))
    # Either setting of the extra token may have built them (see below).
    lengths = {num_epochs(max(tokens, 1), num_samples, seq_len, e) * (stop - start) for e in (0, 1)}
    delete = "delete this cache entry to rebuild it, or pass another cache_dir"
    if doc_idx.dtype != np.int32 or doc_idx.ndim != 1 or len(doc_idx) not in lengths:
        return (
            f"does not fit this dataset and split ({stop - start} sequences, {tokens} tokens);"
            f" {delete}"
        )
    if len(doc_idx) and (int(doc_idx.min()) < start or int(doc_idx.max()) >= stop):
        return f"holds sequences outside this split ({start}..{stop - 1}); {delete}"
    if sample_idx.ndim != 2 or sample_idx.shape[1:] != (2,) or shuffle_idx.ndim != 1:
        return f"has the wrong shape; {delete}"
    expected = build_sample_index(sizes, np.asarray(doc_idx), seq_len, extra, drop_last)
    if not _same_array(expected, sample_idx):
        other = build_sample_index(sizes, np.asarray(doc_idx), seq_len, 1 - extra, drop_last)
        if not _same_array(other, sample_idx):
            return f"does not fit this dataset and its document_index; {delete}"
        # megatron-core's cache key ignores add_extra_token_to_sequence: a run reuses files
        # built with the other setting and reads them with its own, and so do we.
    n = len(sample_idx) - 1
    if (
        shuffle_idx.dtype != shuffle_index_dtype(n)
        or len(shuffle_idx) != n
        or (n and int(shuffle_idx.max()) >= n)
    ):
        return f"has a shuffle_index that does not fit its {n} samples; {delete}"
    return None


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
