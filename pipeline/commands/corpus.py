"""``dexport corpus``: curated records → train/validation/test files, statistics, dataset card."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from pipeline.commands.common import (
    add_cluster_args,
    add_database_args,
    add_incremental_args,
    add_output_args,
    add_reject_args,
    database_inputs,
    plan_and_executor_from_args,
    storage_options,
)
from pipeline.errors import UserError

DEFAULT_PARTITION = 64 << 20
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``67108864``, ``64M``, ``64MiB``, ``1G`` → bytes."""
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if value and value[-1] in _UNITS:
            return int(float(value[:-1]) * _UNITS[value[-1]])
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (e.g. 64M, 1G, 1048576)"
        ) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport corpus``."""
    p = sub.add_parser(
        "corpus",
        help="curated JSONL/Parquet → train/validation/test files + stats + dataset card",
        description=(
            "Map curated records to the training schema, validate every record "
            "(rejects aside, with reasons), "
            "split them deterministically by a stable key and seed, and write split files, "
            "dataset_stats.json, a dataset card and a manifest."
        ),
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=(
            "JSONL (.jsonl, .jsonl.gz, .jsonl.zst) or Parquet files, directories or globs; "
            "local or s3://; or a database URL with --table/--query and --key"
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (local or s3://)")
    p.add_argument(
        "--schema",
        metavar="FILE",
        help=(
            "schema file (YAML/JSON): rename, nest, drop, static values, types "
            "(default: the training schema)"
        ),
    )
    p.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="static field for every record, e.g. metadata.source=wikipedia (repeatable)",
    )
    p.add_argument(
        "--split",
        default="0.95,0.03,0.02",
        help=(
            "ratios (0.95,0.03,0.02 or train=0.95,validation=0.03,test=0.02); "
            "with --exact-counts also counts such as train=rest,test=500"
        ),
    )
    p.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    p.add_argument(
        "--split-key",
        metavar="FIELD",
        help="input field that identifies a record (e.g. id); default: the text",
    )
    p.add_argument(
        "--exact-counts",
        action="store_true",
        help="exact split sizes (a first pass ranks every record; still deterministic)",
    )
    p.add_argument(
        "--format",
        choices=("jsonl", "parquet"),
        default="jsonl",
        help="output format (default jsonl)",
    )
    p.add_argument("--compression", choices=("gzip", "zstd"), help="compress JSONL output")
    p.add_argument(
        "--parts",
        action="store_true",
        help="keep part files per split (train/part-00000.jsonl …) instead of one file per split",
    )
    p.add_argument(
        "--tokenizer",
        metavar="PATH",
        help=(
            "local Hugging Face tokenizer (folder or tokenizer.json): "
            "adds token counts to the statistics"
        ),
    )
    add_reject_args(p, product="output")
    add_database_args(p)
    p.add_argument(
        "--no-card", dest="card", action="store_false", help="do not write README.md and histograms"
    )
    add_incremental_args(p, unit="split files")
    add_cluster_args(p)
    add_output_args(
        p,
        chunk_size=DEFAULT_PARTITION,
        chunk_type=parse_size,
        chunk_metavar="BYTES",
        chunk_help="input bytes per task (default 64M; accepts 64M, 1G)",
    )
    p.set_defaults(func=run)


def build_spec(args: argparse.Namespace) -> Any:
    """The CorpusExport the arguments describe; every argument problem in one UserError."""
    from pipeline.corpus.job import CorpusExport
    from pipeline.corpus.splits import parse_split
    from pipeline.formats.schema import Schema, load_schema

    problems: list[str] = []
    options: dict = {}
    schema = split = database = None
    inputs = list(args.inputs)
    for step in ("database", "options", "schema", "split"):
        try:
            if step == "database":
                inputs, database = database_inputs(args)
            elif step == "options":
                options = storage_options(args)
            elif step == "schema":
                schema = load_schema(args.schema, options, args.set_values)
            else:
                split = parse_split(
                    args.split, seed=args.seed, key=args.split_key, exact=args.exact_counts
                )
        except UserError as exc:
            problems.append(str(exc))
    spec = CorpusExport(
        inputs=inputs,
        out=args.out,
        schema=schema or Schema(),
        format=args.format,
        compression=args.compression,
        parts=args.parts,
        tokenizer=args.tokenizer,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        resume=args.resume,
        storage_options=options,
        card=args.card,
        command="dexport corpus " + " ".join(shlex.quote(a) for a in _command_args(args)),
        max_reject_fraction=args.max_reject_fraction,
        database=database,
        backend=args.backend,
        incremental=args.incremental,
        rebuild=args.rebuild,
    )
    if split is not None:
        spec.split = split
    try:
        spec.check()
    except UserError as exc:
        problems.append(str(exc))
    if problems:
        raise UserError("; ".join(problems))
    return spec


def _command_args(args: argparse.Namespace) -> list[str]:
    from pipeline.io.sql import mask_url

    inputs = [mask_url(i) for i in args.inputs]  # a database password is never shown
    out = [*inputs, "--out", args.out, "--split", args.split, "--seed", str(args.seed)]
    for flag, value in (
        ("--table", args.table),
        ("--query", args.query),
        ("--key", args.key),
        ("--schema", args.schema),
        ("--split-key", args.split_key),
        ("--compression", args.compression),
        ("--tokenizer", args.tokenizer),
    ):
        if value:
            out += [flag, value]
    out += [x for v in args.set_values for x in ("--set", v)]
    out += [
        f
        for f, on in (
            ("--exact-counts", args.exact_counts),
            ("--parts", args.parts),
            ("--no-card", not args.card),
            ("--incremental", args.incremental),
        )
        if on
    ]
    if args.format != "jsonl":
        out += ["--format", args.format]
    return out


def check_arguments(args: argparse.Namespace) -> None:
    """The checks of the arguments taken together, touching no data (``dexport run`` calls it
    for every step before the first one runs)."""
    build_spec(args).check()


def run(args: argparse.Namespace) -> int:
    """Run the export; 0 on success, 1 with --strict when records were rejected, or when too
    many were (``--max-reject-fraction``). The summary goes to stderr (stdout stays free)."""
    from pipeline.corpus.job import plan_corpus_export, run_corpus_export
    from pipeline.errors import DataCheckFailed
    from pipeline.io.storage import storage_errors

    with storage_errors():
        # Input and output problems are found while a cluster named by the flags starts.
        with plan_and_executor_from_args(
            args,
            lambda: plan_corpus_export(build_spec(args)),
            lambda plan: len(plan.partitions),
            processes=True,
        ) as (plan, executor):
            if executor.name == "dask" and (args.scheduler or args.scheduler_file):
                from cluster.client import dashboard_link  # imports distributed: only here

                link = dashboard_link(executor.client)
                if link:
                    print(f"dexport: dashboard {link}", file=sys.stderr)
            try:
                summary = run_corpus_export(plan, executor, progress=True)
            except DataCheckFailed as exc:
                if getattr(exc, "summary", None):
                    print(format_summary(exc.summary), file=sys.stderr)
                raise
    note_summary(summary)
    print(format_summary(summary), file=sys.stderr)
    if args.strict and summary["rejected"]:
        print(
            f"dexport: {summary['rejected']:,} records rejected (--strict); "
            f"see {summary['out']}/rejects/",
            file=sys.stderr,
        )
        return 1
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    """The short table printed at the end of a run."""
    docs = summary["documents"]
    done = " (already complete)" if summary.get("already_complete") else ""
    if summary.get("up_to_date"):
        return (
            f"dexport corpus: {summary['out']} is up to date ({summary['inputs']:,} inputs in "
            f"{summary['generation'] + 1} generation(s), {docs:,} documents); nothing to do"
        )
    added = summary.get("added")
    if added is not None:
        done += (
            f", generation {summary['generation']}: {added['inputs']:,} new inputs, "
            f"{added['documents']:,} documents added"
        )
    lines = [
        f"dexport corpus: {docs:,} documents -> {summary['out']} "
        f"in {summary['seconds']:.1f} s{done}",
        f"  {'split':<14}{'documents':>12}{'share':>9}",
    ]
    for name, n in summary["splits"].items():
        lines.append(f"  {name:<14}{n:>12,}{(100 * n / docs if docs else 0):>8.1f}%")
    lines.append(f"  {'rejected':<14}{summary['rejected']:>12,}")
    acct = summary.get("accounting") or {}
    if acct.get("input_lines") is not None:
        lines.append(
            f"  input lines {acct['input_lines']:,} = {acct['exported']:,} exported + "
            f"{acct['rejected']:,} rejected + {acct['blank_lines']:,} blank"
        )
    if summary.get("rejected_by_reason"):
        lines.append(
            "  rejected by reason: "
            + ", ".join(f"{k} {v:,}" for k, v in summary["rejected_by_reason"].items())
        )
    return "\n".join(lines)


def note_summary(summary: dict[str, Any]) -> None:
    """Put the run's figures into the run report (``--report``)."""
    from pipeline.runtime import report

    acct = summary.get("accounting") or {}
    added = summary.get("added")
    report.note(
        status="up to date" if summary.get("up_to_date") else "done",
        records_in=(added or acct).get("input_lines"),
        records_out=added["documents"] if added else summary["documents"],
        rejected=added["rejected"] if added else summary["rejected"],
        bytes=summary.get("bytes"),
        generation=summary.get("generation"),
        outputs=[summary["out"]],
        totals={"documents": summary["documents"], "splits": summary["splits"]},
    )
