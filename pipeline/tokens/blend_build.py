"""Opening a blended run's order: each dataset's order (cached or built), then the blend.

The per-framework rules are in :mod:`pipeline.tokens.blend_order`; the dataset orders come from
the single-dataset builders (:mod:`pipeline.tokens.neox_index`,
:mod:`pipeline.tokens.megatron_index`) with the names and document ranges a blend gives them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.io.storage import resolve
from pipeline.tokens.blend_index import (
    MEGATRON_SURPLUS,
    build_blending_indices,
    megatron_samples_per_dataset,
    neox_samples_per_dataset,
    neox_weights,
    numpy_normalize,
)
from pipeline.tokens.blend_order import BlendComponent, BlendOrder, BlendSource

if TYPE_CHECKING:
    from pipeline.tokens.source import TrainingRun


def open_blend_order(run: TrainingRun, *, defer_save: bool = False) -> BlendOrder:
    """Load or build the blended order of ``run.split`` (``run.blend`` set).

    ``defer_save`` leaves writing built files to ``order.source.save()``.
    """
    blend = run.blend
    blend.check(run.split)
    num_samples = run.requested_samples()
    if num_samples is None:
        raise UserError(
            "a blend needs the number of samples: pass --train-iters I with --batch-size B "
            "(or --num-samples N)"
        )
    prefixes = blend.prefixes(run.split)
    datasets = [IndexedDataset(p, run.storage_options) for p in prefixes]
    if run.convention == "neox":
        order = _neox_blend(run, datasets, num_samples)
    else:
        order = _megatron_blend(run, datasets, num_samples)
    if not defer_save:
        order.source.save()
    return order


def _neox_blend(run: TrainingRun, datasets: list[IndexedDataset], n: int) -> BlendOrder:
    from pipeline.tokens.neox_index import neox_sample_order

    given = run.blend.weights(run.split) or (1.0,) * len(datasets)
    weights = neox_weights(given)
    counts = neox_samples_per_dataset(weights, n)
    # GPT-NeoX caches every dataset's index next to its prefix (data_prefix); --index names a
    # folder that holds them all.
    index = None if run.index_prefix is None else run.index_prefix.rstrip("/") + "/"
    components = []
    for k, (dataset, count) in enumerate(zip(datasets, counts, strict=True)):
        order = neox_sample_order(
            dataset,
            split="train",
            splits="1,0,0",  # every document: GPT-NeoX's blend ignores `split`
            label=f"{run.split}_{k}",
            num_samples=count,
            index_prefix=index,
            defer_save=True,
            **run.order_options(),
        )
        components.append((dataset, order, count, len(dataset.sizes)))
    size = sum(len(order) for _, order, _, _ in components)
    # BlendableDataset normalises the normalised weights once more (numpy) before the loop.
    loop_weights = numpy_normalize(weights)
    dataset_index, dataset_sample_index = build_blending_indices(loop_weights, size, "neox")
    source = BlendSource("neox", [order.source for _, order, _, _ in components])
    return BlendOrder(
        "neox",
        [
            BlendComponent(p, ds, order, w, count, docs)
            for p, w, (ds, order, count, docs) in zip(
                run.blend.prefixes(run.split), loop_weights, components, strict=True
            )
        ],
        dataset_index,
        dataset_sample_index,
        source,
    )


def _megatron_blend(run: TrainingRun, datasets: list[IndexedDataset], n: int) -> BlendOrder:
    from pipeline.tokens.megatron_build import megatron_split_matrix, split_range
    from pipeline.tokens.megatron_cache import megatron_description
    from pipeline.tokens.megatron_index import megatron_sample_order

    blend, split = run.blend, run.split
    prefixes, given = blend.prefixes(split), blend.weights(split)
    trivial = len(prefixes) == 1 and (given is None or not blend.shared_split)
    if trivial or given is None:
        targets, built_for = None, [None if len(prefixes) > 1 else n] * len(prefixes)
    else:
        weights = numpy_normalize(given)
        targets = megatron_samples_per_dataset(weights, n)
        built_for = megatron_samples_per_dataset(weights, n, MEGATRON_SURPLUS)
    # A per-split blend uses each dataset whole: megatron-core's split matrix (0, 1) there.
    splits = (
        run.splits
        if blend.shared_split
        else ",".join("1" if s == split else "0" for s in ("train", "valid", "test"))
    )
    matrix = megatron_split_matrix(splits) if blend.shared_split else None
    components, descriptions = [], []
    for dataset, count in zip(datasets, built_for, strict=True):
        order = megatron_sample_order(
            dataset,
            split=split,
            splits=splits,
            num_samples=count,
            cache_dir=run.index_prefix,
            save=run.index_prefix is not None,
            defer_save=True,
            whole_file=not blend.shared_split,
            **run.order_options(),
        )
        start, stop = split_range(splits, len(dataset.sizes), split)
        components.append((dataset, order, count, stop - start))
        descriptions.append(
            {
                "class": "GPTDataset",
                "dataset_path": dataset.prefix,
                "num_samples": count,
                "index_split": split,
                "random_seed": run.seed,
                "sequence_length": run.seq_len,
                "split_matrix": matrix,
                "description": megatron_description(
                    dataset_path=dataset.prefix,
                    split=split,
                    splits=run.splits if blend.shared_split else None,
                    split_matrix=matrix,
                    num_samples=count,
                    seq_len=run.seq_len,
                    seed=run.seed,
                    tokenizer_identifiers=None,
                ),
            }
        )
    lengths = [len(order) for _, order, _, _ in components]
    source = BlendSource("megatron", [order.source for _, order, _, _ in components])
    if trivial:  # megatron-core builds the dataset alone: every sample in its own order
        loop_weights = [1.0]
        arrays = (np.zeros(lengths[0], np.int16), np.arange(lengths[0], dtype=np.int64))
    else:
        if targets is None:  # no weights: blend by dataset length, at most N samples
            loop_weights, size = numpy_normalize(lengths), min(n, sum(lengths))
        else:
            loop_weights, size = numpy_normalize(numpy_normalize(given)), sum(targets)
        arrays = _megatron_blend_arrays(run, source, descriptions, loop_weights, size, lengths)
    members = [
        BlendComponent(p, ds, order, w, count, docs)
        for p, w, (ds, order, count, docs) in zip(prefixes, loop_weights, components, strict=True)
    ]
    return BlendOrder("megatron", members, *arrays, source)


def _megatron_blend_arrays(
    run: TrainingRun,
    source: BlendSource,
    datasets: list[dict[str, Any]],
    weights: list[float],
    size: int,
    lengths: list[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Load the cached blend from ``--index`` (megatron-core's path_to_cache), else build it
    and (with ``--index``) save it under megatron-core's name."""
    from pipeline.tokens.blend_cache import (
        blended_description,
        entry_paths,
        find_blend_entry,
        load_blend_entry,
        save_blend_entry,
    )

    fs = folder = None
    if run.index_prefix is not None:
        fs, folder = resolve(run.index_prefix, run.storage_options)
        paths = find_blend_entry(
            fs, folder, split=run.split, size=size, weights=weights, datasets=datasets
        )
        if paths is not None:
            arrays = load_blend_entry(fs, paths, size, lengths)
            source.blend_files, source.blend_loaded = (paths["description"],), True
            return arrays
    arrays = build_blending_indices(weights, size, "megatron")
    counts = np.bincount(arrays[0].astype(np.int64), minlength=len(lengths))
    for k, (asked, have) in enumerate(zip(counts.tolist(), lengths, strict=True)):
        if asked > have:  # megatron-core raises IndexError here
            raise UserError(
                f"the {run.split} blend asks {asked} samples of dataset {k} "
                f"({run.blend.prefixes(run.split)[k]}), which has {have}; megatron-core refuses "
                "this blend too (raise mid_level_dataset_surplus in the run)"
            )
    if folder is not None:
        description = blended_description(
            [d["description"] for d in datasets], run.split, weights, size
        )
        source.blend_files = (entry_paths(folder, run.split, description)["description"],)
        source.pending = (save_blend_entry, (fs, folder, run.split, description, arrays))
    return arrays
