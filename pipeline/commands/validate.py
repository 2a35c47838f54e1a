"""``dexport validate PATH``: re-check an export (corpus splits or token exports)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport validate``."""
    p = sub.add_parser(
        "validate",
        help="re-check an export record by record; exit 1 when anything fails",
        description=(
            "Check every record of a corpus export (schema, text) or token export "
            "(JSONL/CSV/NPZ/Parquet fields), and the manifest's sizes and sha256."
        ),
    )
    p.add_argument("path", metavar="PATH", help="export directory or file (local or s3://)")
    p.add_argument(
        "--schema",
        metavar="FILE",
        help="schema to check corpus records against (default: the one in _manifest.json)",
    )
    p.add_argument(
        "--show", type=int, default=5, metavar="N", help="errors shown per split (default 5)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec/s3fs options as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 when every split passed, else 1."""
    from pipeline.commands.common import storage_options
    from pipeline.formats.schema import load_schema
    from pipeline.io.storage import check_reachable, storage_errors
    from pipeline.validate.export import format_report, validate_export

    with storage_errors(args.path):
        options = storage_options(args)
        check_reachable([args.path], options)
        schema = load_schema(args.schema, options) if args.schema else None
        report = validate_export(args.path, options, schema=schema, show=max(0, args.show))
    if report.unreadable:  # a garbage file or a folder of them: bad input, not failed data
        from pipeline.errors import UserError

        first = next((e for s in report.splits for e in s.errors), "no valid record")
        raise UserError(
            f"{args.path} is not an export: no valid record and no _manifest.json (first "
            f"problem: {first}); pass a folder or file written by dexport tokens/corpus"
        )
    from pipeline.runtime import report as run_report

    run_report.note(
        records_in=sum(s.documents + s.error_count for s in report.splits),
        rejected=sum(s.error_count for s in report.splits),
    )
    print(
        json.dumps(report.as_dict(), indent=2, ensure_ascii=False)
        if args.json
        else format_report(report)
    )
    return 0 if report.passed else 1
