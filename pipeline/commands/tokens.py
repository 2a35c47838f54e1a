"""``dexport tokens``: export token windows (training order) or documents."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from pipeline.commands.common import (
    add_cluster_args,
    add_output_args,
    plan_and_executor_from_args,
    storage_options,
)
from pipeline.errors import UserError
from pipeline.formats.token_formats import FORMATS

if TYPE_CHECKING:
    from pipeline.tokens.job import TokenExport
    from pipeline.tokens.source import TrainingRun

SELECTIONS = ("all", "sequences", "sequence_range", "batches", "batch_range", "documents")


def add_training_run_args(parser: argparse.ArgumentParser) -> None:
    """Flags that fix the training run's sample order (shared with ``inspect``)."""
    group = parser.add_argument_group("training run (sample order)")
    group.add_argument("--seq-len", type=int, help="training sequence length L")
    group.add_argument("--seed", type=int, help="training data seed")
    group.add_argument("--train-iters", type=int, help="training iterations (with --batch-size)")
    group.add_argument("--batch-size", type=int, help="global batch size B")
    group.add_argument(
        "--num-samples", type=int, help="samples of the split (instead of --train-iters)"
    )
    group.add_argument(
        "--convention",
        choices=("neox", "megatron"),
        help="GPT-NeoX/TokenSmith (default; a blend: the framework whose flags it uses) or "
        "megatron-core",
    )
    group.add_argument(
        "--index",
        metavar="PATH",
        help="where the run cached its index files (default: next to the dataset)",
    )
    group.add_argument("--splits", help="train/valid/test weights (default 969,30,1)")
    group.add_argument("--split", default="train", choices=("train", "valid", "test"))
    group.add_argument(
        "--packing",
        # GPT-NeoX's "unpacked" needs a label dataset, which dexport does not read: not offered.
        choices=("packed", "pack_until_overflow"),
        help="GPT-NeoX packing (default packed)",
    )
    group.add_argument(
        "--build-index",
        action="store_true",
        help="build the training order even when the index location holds index files of this "
        "dataset for other parameters only (default: stop and name the closest)",
    )
    group.add_argument(
        "--no-extra-token",
        action="store_true",
        help="megatron-core runs without add_extra_token_to_sequence",
    )
    add_blend_args(parser)


def add_blend_args(parser: argparse.ArgumentParser) -> None:
    """A blended run's datasets (instead of PREFIX), in each framework's own syntax."""
    group = parser.add_argument_group(
        "blended run (instead of PREFIX; see docs/tokens.md, Blended runs)"
    )
    group.add_argument(
        "--config",
        action="append",
        metavar="NEOX.yml",
        help="GPT-NeoX YAML config(s), merged in order: train/valid/test_data_paths and "
        "_weights (or data_path), seq_length, seed, train_iters, train_batch_size, "
        "eval_interval, eval_iters (flags given here win); also a small blend file",
    )
    group.add_argument(
        "--data-path", nargs="+", metavar="W P", help="megatron: W1 P1 W2 P2 … split by --splits"
    )
    for split in ("train", "valid", "test"):
        group.add_argument(
            f"--{split}-data-path",
            nargs="+",
            metavar="W P",
            help=f"megatron: the {split} blend W1 P1 … (each prefix used whole)",
        )
    for split in ("train", "valid", "test"):
        group.add_argument(
            f"--{split}-data-paths", nargs="+", metavar="P", help=f"GPT-NeoX: {split} prefixes"
        )
        group.add_argument(
            f"--{split}-data-weights",
            nargs="+",
            type=float,
            metavar="W",
            help=f"GPT-NeoX: {split} weights (default 1 each)",
        )


def _config(args: argparse.Namespace) -> dict:
    """The GPT-NeoX config values of ``--config`` (read once)."""
    if getattr(args, "_neox_config", None) is None:
        from pipeline.tokens.blend import read_neox_config

        args._neox_config = read_neox_config(args.config) if args.config else {}
    return args._neox_config


def _blend(args: argparse.Namespace):
    """The blend the flags (or the config) give, or None."""
    from pipeline.tokens.blend import SPLITS, megatron_blend, neox_blend

    megatron = [args.data_path] + [getattr(args, f"{s}_data_path") for s in SPLITS]
    neox = [getattr(args, f"{s}_data_paths") for s in SPLITS]
    neox_weights = [getattr(args, f"{s}_data_weights") for s in SPLITS]
    if any(megatron) and (any(neox) or any(neox_weights)):
        raise UserError(
            "megatron's --data-path/--train-data-path and GPT-NeoX's --train-data-paths are two "
            "syntaxes for one thing; use one framework's flags"
        )
    if any(megatron):
        return megatron_blend(
            args.data_path, train=megatron[1], valid=megatron[2], test=megatron[3]
        )
    if any(neox) or any(neox_weights):
        return neox_blend(
            dict(zip(SPLITS, neox, strict=True)), dict(zip(SPLITS, neox_weights, strict=True))
        )
    return _config(args).get("blend")


def dataset_prefix(args: argparse.Namespace) -> str | None:
    """PREFIX as given, else a config's single ``data_path`` (when it has no blend)."""
    if args.prefix is not None:
        return args.prefix
    config = _config(args)
    return None if config.get("blend") else config.get("data_path")


def training_run(args: argparse.Namespace) -> TrainingRun | None:
    """The TrainingRun the flags (and ``--config``) describe (None without --seq-len/--seed)."""
    from pipeline.tokens.source import TrainingRun

    config = _config(args)
    blend = _blend(args)

    def pick(flag: str, key: str, default=None):
        value = getattr(args, flag)
        return value if value is not None else config.get(key, default)

    seq_len, seed = pick("seq_len", "seq_length"), pick("seed", "seed")
    if seq_len is None and seed is None:
        if blend is not None:
            raise UserError(
                "a blended run needs the training run: pass --seq-len L and --seed S (or "
                "--config with seq_length and seed)"
            )
        return None
    if seed is None:
        raise UserError(
            "a training-order selection needs the run's data seed; "
            "pass --seed S (as in the training config)"
        )
    run = TrainingRun(
        seq_len=seq_len,
        seed=seed,
        convention=args.convention or (blend.convention if blend is not None else "neox"),
        num_samples=args.num_samples,
        train_iters=pick("train_iters", "train_iters"),
        batch_size=pick("batch_size", "train_batch_size"),
        splits=str(pick("splits", "split", "969,30,1")),
        split=args.split,
        packing=pick("packing", "pack_impl", "packed"),
        allow_chopped=bool(config.get("allow_chopped", True)),
        extra_token=not args.no_extra_token,
        index_prefix=args.index,
        storage_options=storage_options(args),
        build_index=args.build_index,
        blend=blend,
        eval_interval=config.get("eval_interval", 1000),
        eval_iters=config.get("eval_iters", 100),
    )
    if blend is not None:
        blend.check(run.split)  # before any dataset is opened
    return run


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport tokens``."""
    p = sub.add_parser(
        "tokens",
        help="export token windows or documents (JSONL/CSV/NPZ/Parquet)",
        description=(
            "Export what a model saw: samples in training order, batches, ranges, everything, "
            "or corpus documents."
        ),
    )
    p.add_argument(
        "prefix",
        metavar="PREFIX",
        nargs="?",
        help="dataset prefix (PREFIX.bin + PREFIX.idx), local or s3://; a blended run gives "
        "its data paths instead",
    )
    add_training_run_args(p)
    sel = p.add_argument_group("selection (one of)").add_mutually_exclusive_group(required=True)
    sel.add_argument("--all", action="store_true", help="every sample of the split")
    sel.add_argument("--sequences", metavar="3,5,7", help="samples by id (training order)")
    sel.add_argument("--sequence-range", metavar="A:B", help="samples A..B-1")
    sel.add_argument("--batches", metavar="0,1", help="global batches by id (needs --batch-size)")
    sel.add_argument("--batch-range", metavar="A:B", help="batches A..B-1")
    sel.add_argument(
        "--documents",
        metavar="A:B",
        help="whole corpus documents A..B-1 (no training order needed)",
    )
    shape = p.add_mutually_exclusive_group()
    shape.add_argument(
        "--flatten-batches",
        dest="nested",
        action="store_false",
        help="one record per sequence (default)",
    )
    shape.add_argument(
        "--nested",
        dest="nested",
        action="store_true",
        help="one record per batch: {batch_id, sequences}",
    )
    content = p.add_mutually_exclusive_group()
    content.add_argument(
        "--tokens",
        dest="content",
        action="store_const",
        const="tokens",
        help="raw token ids (default)",
    )
    content.add_argument(
        "--text",
        dest="content",
        action="store_const",
        const="text",
        help="text, exactly as tokenizer.decode",
    )
    p.add_argument(
        "--tokenizer", metavar="PATH", help="local Hugging Face tokenizer folder (for --text)"
    )
    p.add_argument(
        "--skip-special-tokens", action="store_true", help="decode with skip_special_tokens=True"
    )
    p.add_argument("--doc-details", action="store_true", help="add doc_index_f/l and offset_f/l")
    p.add_argument(
        "--format", choices=tuple(FORMATS), help="output format (default jsonl, or from --out FILE)"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR|FILE",
        help="output directory (part files + _manifest.json) or one file (x.jsonl, x.csv.gz, …)",
    )
    p.add_argument("--compression", choices=("gzip", "zstd"), help="compress JSONL/CSV parts")
    add_output_args(p, chunk_size=1000)
    add_cluster_args(p)
    p.set_defaults(func=run, content="tokens", nested=False)


def run(args: argparse.Namespace) -> int:
    """Run the export and print its summary."""
    from pipeline.io.storage import storage_errors

    with storage_errors():  # storage failures: one line, exit 2 (fix it) or 3 (retry)
        summary = _export(args)
    from pipeline.runtime import report

    report.note(records_out=summary["records"], bytes=summary["bytes"], outputs=[summary["out"]])
    print_summary(summary)
    return 0


def build_spec(args: argparse.Namespace) -> TokenExport:
    """The export the arguments describe (reads a ``--config`` file, nothing else)."""
    from pipeline.tokens.job import TokenExport
    from pipeline.tokens.selection import parse_cli_selection

    check_out(args.out)
    kind = next(k for k in SELECTIONS if getattr(args, k) not in (None, False))
    kind, value = parse_cli_selection(kind, getattr(args, kind) if kind != "all" else None)
    return TokenExport(
        prefix=dataset_prefix(args),
        out=args.out,
        selection_kind=kind,
        selection_value=value,
        run=training_run(args),
        content=args.content,
        tokenizer=args.tokenizer,
        skip_special_tokens=args.skip_special_tokens,
        doc_details=args.doc_details,
        nested=args.nested,
        format=args.format,
        compression=args.compression,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        resume=args.resume,
        storage_options=storage_options(args),
        backend=args.backend,
    )


def check_arguments(args: argparse.Namespace) -> None:
    """The checks of the arguments taken together, touching no data (``dexport run`` calls it
    for every step before the first one runs)."""
    build_spec(args).check()


def _export(args: argparse.Namespace) -> dict:
    from pipeline.tokens.job import run_token_export

    # Token export tasks spend their time in GIL-free code (pread gathers, the numba detokenizer,
    # byte-level writers): threads of this process beat worker processes at every size, with no
    # cluster to start and the byte table loaded once. A cluster named by the flags starts
    # while the export is prepared.
    with plan_and_executor_from_args(
        args, lambda: _prepare(args), lambda planned: planned[0].n_parts, threads=True
    ) as ((prepared, order), executor):
        report_order(order)
        return run_token_export(prepared, executor)


def _prepare(args: argparse.Namespace) -> tuple[Any, Any]:
    """Every check of the export: ``(prepared export, the sample order it reads or None)``.
    Writes nothing (the order's index files are saved once the run is sure to start)."""
    from pipeline.tokens.job import prepare_token_export

    spec = build_spec(args)
    run_ = spec.run
    dataset = order = None
    if spec.selection_kind != "documents":
        from pipeline.formats.indexed_dataset import IndexedDataset
        from pipeline.tokens.source import open_sample_order

        spec.check()  # arguments first: no order is built for a command line that is wrong
        check_storage(spec.prefix, run_, spec.storage_options, out=spec.out)
        if spec.prefix is not None:
            dataset = IndexedDataset(spec.prefix, spec.storage_options)
        order = open_sample_order(dataset, spec.run, defer_save=True)
    return prepare_token_export(spec, dataset=dataset, order=order), order


def check_storage(
    prefix: str | None, run: TrainingRun | None, options: dict, *, out: str | None = None
) -> None:
    """StorageUnreachable (exit 3, in seconds) when the S3 endpoint that holds the dataset, a
    blend's datasets, the index files or the output does not answer, before any is opened."""
    from pipeline.io.storage import check_reachable

    urls = [u for u in (prefix, out, run.index_prefix if run is not None else None) if u]
    if run is not None and run.blend is not None:
        urls += run.blend.all_prefixes()
    check_reachable(urls, options)


def check_out(out: str) -> None:
    """Refuse ``--out`` values that cannot name an export (before anything is read)."""
    if out.strip() in ("-", ""):
        raise UserError(
            f"--out {out!r} is not a place to write: exports go to a folder (part files + "
            "_manifest.json) or one named file; pass --out DIR or --out FILE.jsonl"
        )


def report_order(order) -> None:
    """Write a built order's index files (all checks passed) and say on stderr what was done."""
    if order is None or order.source is None:
        return
    order.source.save()
    print(f"dexport: {order.source.describe()}", file=sys.stderr)


def print_summary(summary: dict) -> None:
    """A short table on stderr (stdout stays free for data).

    ``tokens/s`` is the rate of this run's own work; a run that exported nothing (``--resume``
    of a finished export) has no rate, and the line is left out.
    """
    rate = summary["tokens_per_s"]
    rows = [
        ("records", f"{summary['records']:,}"),
        ("tokens", f"{summary['tokens']:,}"),
        ("files", f"{summary['files']:,}"),
        ("bytes", f"{summary['bytes']:,}"),
        ("seconds", f"{summary['seconds']:.2f}"),
        *([("tokens/s", f"{rate:,}")] if rate else []),
        ("output", summary["out"]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", file=sys.stderr)
