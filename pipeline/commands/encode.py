"""``dexport encode``: tokenize a corpus into a Megatron indexed dataset (or NPZ shards)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from pipeline.commands.common import (
    add_cluster_args,
    add_database_args,
    add_incremental_args,
    add_reject_args,
    database_inputs,
    plan_and_executor_from_args,
    storage_options,
)

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 1 << 10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 1 << 20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 1 << 30,
}


def parse_size(text: str) -> int:
    """``64MiB``, ``256MB``, ``1g`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}; use bytes or a unit such as 64MiB, 256MB, 1GiB"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport encode``."""
    p = sub.add_parser(
        "encode",
        help=(
            "tokenize JSONL/Parquet text into a Megatron dataset (PREFIX.bin + PREFIX.idx) "
            "or NPZ shards"
        ),
        description=(
            "Tokenize a corpus with a local Hugging Face fast tokenizer, "
            "one shard per input partition in "
            "parallel, merged into one Megatron/GPT-NeoX indexed dataset in input order."
        ),
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=(
            "JSONL/Parquet files, folders, globs or a corpus export directory (local or s3://); "
            "or a database URL with --table/--query and --key"
        ),
    )
    p.add_argument(
        "--tokenizer",
        required=True,
        metavar="PATH",
        help="local Hugging Face tokenizer folder (save_pretrained) or tokenizer.json",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="PREFIX",
        help=(
            "dataset prefix: data/ds writes data/ds.bin, data/ds.idx, data/ds.manifest.json "
            "(a directory for --format npz)"
        ),
    )
    p.add_argument("--field", default="text", help="record field holding the text (default text)")
    p.add_argument(
        "--append-eod",
        action="store_true",
        help="append the end-of-document token to every document (Megatron --append-eod)",
    )
    p.add_argument(
        "--eod-id",
        type=int,
        metavar="ID",
        help="end-of-document token id (default: the tokenizer's eos_token_id)",
    )
    p.add_argument(
        "--add-bos",
        action="store_true",
        help="start every document with BOS unless the tokenizer already adds it",
    )
    p.add_argument(
        "--bos-id",
        type=int,
        metavar="ID",
        help="BOS token id (default: the tokenizer's bos_token_id)",
    )
    p.add_argument(
        "--format",
        choices=("megatron", "npz"),
        default="megatron",
        help="one merged .bin/.idx (default) or NPZ shards (flat tokens + offsets)",
    )
    add_reject_args(p, product="dataset")
    add_database_args(p)
    group = p.add_argument_group("output")
    group.add_argument(
        "--partition-size",
        type=parse_size,
        default=64 << 20,
        metavar="SIZE",
        help="input bytes per task and shard (default 64MiB)",
    )
    mode = group.add_mutually_exclusive_group()
    mode.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset at PREFIX"
    )
    mode.add_argument(
        "--resume", action="store_true", help="finish an interrupted run, skipping completed shards"
    )
    group.add_argument(
        "--storage-options",
        metavar="JSON",
        help='fsspec/s3fs options as JSON, e.g. \'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:8333"}}\'',
    )
    add_incremental_args(p, unit="documents appended to the dataset")
    add_cluster_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check everything, run the job on the cluster, print the summary."""
    from pipeline.encode.job import run_encode
    from pipeline.errors import DataCheckFailed
    from pipeline.io.storage import storage_errors

    with storage_errors():
        # Inputs, output and flags, then the tokenizer, checked while a cluster named by the
        # flags starts.
        with plan_and_executor_from_args(
            args, lambda: _checked_job(args), lambda job: len(job.partitions or ())
        ) as (job, executor):
            try:
                summary = run_encode(job, executor)
            except DataCheckFailed as exc:
                if getattr(exc, "summary", None):
                    print_summary(exc.summary)
                raise
    note_summary(summary)
    print_summary(summary)
    if args.strict and summary["rejected_total"]:
        where = f"{args.out}.rejects.jsonl" if args.format == "megatron" else f"{args.out}/rejects/"
        print(
            f"dexport: {summary['rejected_total']:,} records rejected (--strict); see {where}",
            file=sys.stderr,
        )
        return 1
    return 0


def note_summary(summary: dict[str, Any]) -> None:
    """Put the run's figures into the run report (``--report``)."""
    from pipeline.runtime import report

    added = summary.get("added")
    report.note(
        status="up to date" if summary.get("up_to_date") else "done",
        records_in=added["records"] if added else summary["records"],
        records_out=added["documents"] if added else summary["documents"],
        rejected=added["rejected"] if added else summary["rejected_total"],
        generation=summary.get("generation"),
        outputs=[summary["out"]],
        totals={"documents": summary["documents"], "tokens": summary["tokens"]},
    )


def _checked_job(args: argparse.Namespace) -> Any:
    job = _job(args)
    job.check()
    return job


def _job(args: argparse.Namespace) -> Any:
    from pipeline.encode.job import EncodeJob

    inputs, database = database_inputs(args)
    return EncodeJob(
        inputs=inputs,
        out=args.out,
        tokenizer=args.tokenizer,
        field=args.field,
        append_eod=args.append_eod,
        add_bos=args.add_bos,
        eod_id=args.eod_id,
        bos_id=args.bos_id,
        format=args.format,
        partition_bytes=args.partition_size,
        overwrite=args.overwrite,
        resume=args.resume,
        storage_options=storage_options(args),
        max_reject_fraction=args.max_reject_fraction,
        database=database,
        backend=args.backend,
        incremental=args.incremental,
        rebuild=args.rebuild,
    )


def print_summary(summary: dict[str, Any]) -> None:
    """A short table on stderr."""
    if summary.get("up_to_date"):
        print(
            f"dexport encode: {summary['out']} is up to date ({summary['inputs']:,} inputs in "
            f"{summary['generation'] + 1} generation(s), {summary['documents']:,} documents); "
            "nothing to do",
            file=sys.stderr,
        )
        return
    rejected = ", ".join(f"{k} {v:,}" for k, v in summary["rejected"].items()) or "none"
    tok = summary["tokenizer"]
    rows = [
        ("records", f"{summary['records']:,}"),
        ("documents", f"{summary['documents']:,}"),
        ("tokens", f"{summary['tokens']:,}"),
        ("rejected", rejected),
        ("dtype", summary["dtype"]),
        ("tokenizer", f"{tok['name']} (vocabulary {tok['vocab_size']:,})"),
        ("shards", f"{summary['shards']:,}"),
        *(
            [
                (
                    "generation",
                    f"{summary['generation']} (+{summary['added']['documents']:,} documents)",
                )
            ]
            if summary.get("added")
            else []
        ),
        ("seconds", f"{summary['seconds']:.2f}"),
        ("tokens/s", f"{summary['tokens_per_s']:,}"),
        ("output", summary["out"]),
        ("manifest", summary["manifest"]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", file=sys.stderr)
