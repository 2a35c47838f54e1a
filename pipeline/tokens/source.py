"""Opening a token dataset and the training run's sample order from user parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.tokens.sample_order import SampleOrder

if TYPE_CHECKING:
    from pipeline.tokens.blend import Blend
    from pipeline.tokens.blend_order import BlendOrder

CONVENTIONS = ("neox", "megatron")


@dataclass(frozen=True)
class TrainingRun:
    """The parameters that fix a training run's sample order."""

    seq_len: int
    seed: int
    convention: str = "neox"
    num_samples: int | None = None
    train_iters: int | None = None
    batch_size: int | None = None
    splits: str = "969,30,1"
    split: str = "train"
    packing: str = "packed"
    allow_chopped: bool = True
    extra_token: bool = True
    index_prefix: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    # When the index files for these parameters are missing: build them (True), or, when the
    # place holds files of this dataset for other parameters only, stop naming the closest
    # (False: the command line without --build-index).
    build_index: bool = True
    # A blended run: prefixes and weights per split (None: the one dataset of the export).
    blend: Blend | None = None
    # How the trainer derives valid/test sample counts from train_iters (its defaults).
    eval_interval: int = 1000
    eval_iters: int = 100

    def check(self) -> None:
        """Raise one UserError listing every invalid parameter."""
        problems = []
        if self.convention not in CONVENTIONS:
            problems.append(f"unknown convention {self.convention!r} (use neox or megatron)")
        if self.seq_len is None or self.seq_len <= 0:
            problems.append("--seq-len must be a positive integer")
        if self.num_samples is None and self.train_iters is None and self.convention == "neox":
            problems.append("give --num-samples N, or --train-iters I with --batch-size B")
        if self.train_iters is not None and self.num_samples is None and self.batch_size is None:
            problems.append("--train-iters needs --batch-size B")
        if self.num_samples is not None and self.num_samples <= 0:
            problems.append("--num-samples must be positive")
        if self.batch_size is not None and self.batch_size <= 0:
            problems.append("--batch-size must be a positive integer")
        if self.train_iters is not None and self.train_iters <= 0:
            problems.append("--train-iters must be a positive integer")
        if self.split not in ("train", "valid", "test"):
            problems.append(f"--split {self.split!r} is not one of train, valid, test")
        if self.convention == "megatron" and self.packing != "packed":
            problems.append("--packing applies to the neox convention only")
        if self.blend is not None and self.blend.convention != self.convention:
            problems.append(
                f"the blend is written in {self.blend.convention}'s syntax but --convention is "
                f"{self.convention}; use one framework's flags and convention"
            )
        if problems:
            raise UserError("; ".join(problems))

    def order_options(self) -> dict[str, Any]:
        """The run's parameters as this convention's order builder takes them (one dataset's,
        or each dataset's of a blend)."""
        common = {
            "seq_len": self.seq_len,
            "seed": self.seed,
            "storage_options": self.storage_options,
            "build_index": self.build_index,
        }
        if self.convention == "neox":
            return {**common, "packing": self.packing, "allow_chopped": self.allow_chopped}
        return {**common, "add_extra_token": self.extra_token}

    def requested_samples(self) -> int | None:
        """Samples the run asked for in this split (given, or derived as the trainer does).

        None (megatron only) means one epoch, as megatron-core builds it without a count.
        """
        if self.num_samples is not None:
            return self.num_samples
        if self.train_iters is None:
            return None
        if self.convention == "neox":
            from pipeline.tokens.neox_index import neox_num_samples

            counts = neox_num_samples(
                self.train_iters, self.batch_size, self.eval_interval, self.eval_iters
            )
        else:
            from pipeline.tokens.megatron_index import megatron_num_samples

            counts = megatron_num_samples(
                self.train_iters, self.batch_size, self.eval_interval, self.eval_iters
            )
        return counts[self.split]

    def as_params(self) -> dict[str, Any]:
        """JSON-ready parameters (credentials left out)."""
        params = asdict(self)
        params.pop("storage_options")
        params.pop("build_index")  # how the order is found, not which order it is
        # Recorded only when they matter, so single-dataset manifests stay as they were.
        params["blend"] = self.blend.as_params() if self.blend is not None else None
        for key, default in (("blend", None), ("eval_interval", 1000), ("eval_iters", 100)):
            if params[key] == default:
                params.pop(key)
        return params


def open_sample_order(
    dataset: IndexedDataset | None, run: TrainingRun, *, defer_save: bool = False
) -> SampleOrder | BlendOrder:
    """Load the cached sample index of ``run`` or build it (and cache it next to the data).

    ``order.source`` says which files were loaded, or that the order was built and where it is
    saved; with ``defer_save`` a built order's files are written by ``order.source.save()``
    (a command calls it once every check has passed, so a refused run writes nothing). With
    ``run.blend`` the order is a :class:`BlendOrder` over its datasets (``dataset`` unused).
    """
    run.check()
    if run.blend is not None:  # every dataset of the blend is opened from its prefix
        from pipeline.tokens.blend_build import open_blend_order

        return open_blend_order(run, defer_save=defer_save)
    if run.convention == "neox":
        from pipeline.tokens.neox_index import neox_sample_order

        return neox_sample_order(
            dataset,
            split=run.split,
            splits=run.splits,
            num_samples=run.requested_samples(),
            index_prefix=run.index_prefix,
            defer_save=defer_save,
            **run.order_options(),
        )
    from pipeline.tokens.megatron_index import megatron_sample_order

    return megatron_sample_order(
        dataset,
        split=run.split,
        splits=run.splits,
        num_samples=run.requested_samples(),
        cache_dir=run.index_prefix,
        save=run.index_prefix is not None,
        defer_save=defer_save,
        **run.order_options(),
    )
