"""``dexport summary DIR...``: documents per pipeline stage and the reduction between stages."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport summary``."""
    p = sub.add_parser(
        "summary",
        help="documents per curation stage folder and the reduction from the previous one",
        description=(
            "Count the documents of each stage folder "
            "(JSONL/Parquet files, or a corpus export's dataset_stats.json), "
            "in the order given, and the reduction from the previous stage."
        ),
    )
    p.add_argument(
        "dirs", nargs="+", metavar="DIR", help="stage folders in pipeline order (local or s3://)"
    )
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec/s3fs options as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the summary table."""
    from pipeline.commands.common import storage_options
    from pipeline.io.storage import check_reachable, storage_errors
    from pipeline.validate.api import pipeline_summary

    with storage_errors():
        options = storage_options(args)
        check_reachable(args.dirs, options)
        rows = pipeline_summary(args.dirs, options)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(12, *(len(r["stage"]) for r in rows)) + 2
    print(f"{'stage':<{width}}{'documents':>12}{'reduction':>12}")
    for r in rows:
        red = "-" if r["reduction_pct"] is None else f"{r['reduction_pct']:.1f}%"
        print(f"{r['stage']:<{width}}{r['documents']:>12,}{red:>12}")
    if len(rows) > 1 and rows[0]["documents"]:
        kept = rows[-1]["documents"] / rows[0]["documents"]
        print(
            f"overall: {rows[-1]['documents']:,} of {rows[0]['documents']:,} documents kept "
            f"({100 * kept:.1f}%)"
        )
    return 0
