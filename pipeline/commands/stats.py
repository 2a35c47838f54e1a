"""``dexport stats PATH``: recompute the statistics of a corpus export from its files."""

from __future__ import annotations

import argparse
import json
import sys

COMPARED = ("total_documents", "total_chars", "total_words", "total_rejected")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport stats``."""
    p = sub.add_parser(
        "stats",
        help="recompute dataset_stats.json of a corpus export",
        description=(
            "Read the split files and rejects of a corpus export and print its statistics as JSON "
            "(the dataset_stats.json layout); "
            "exit 1 when they disagree with the stored dataset_stats.json."
        ),
    )
    p.add_argument("path", metavar="PATH", help="corpus export directory (local or s3://)")
    p.add_argument(
        "--tokenizer", metavar="PATH", help="also count tokens with this local tokenizer"
    )
    p.add_argument("--output", metavar="FILE", help="write the JSON here instead of stdout")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec/s3fs options as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print (or write) the recomputed statistics; 1 when they differ from the stored ones."""
    from pipeline.commands.common import storage_options
    from pipeline.io.storage import check_reachable, storage_errors

    with storage_errors(args.path):
        options = storage_options(args)
        check_reachable([args.path], options)
        return _run(args, options)


def _run(args: argparse.Namespace, options: dict) -> int:
    from pipeline.errors import DataCheckFailed, UserError
    from pipeline.io.storage import resolve
    from pipeline.validate.api import corpus_stats

    stats = corpus_stats(args.path, options, tokenizer=args.tokenizer)
    invalid = stats.get("records_without_text") or 0
    if invalid and not stats.get("total_documents"):
        raise UserError(
            f"{args.path} holds no corpus records ({invalid:,} lines without a text field); pass "
            "a corpus export or a JSONL/Parquet file of records"
        )
    text = json.dumps(stats, indent=2, ensure_ascii=False)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        print(text)
    if invalid:
        raise DataCheckFailed(
            f"{invalid:,} lines of {args.path} are not corpus records (no text field); the "
            "statistics leave them out"
        )
    fs, path = resolve(args.path, options)
    stored_path = f"{path.rstrip('/')}/dataset_stats.json"
    if fs.isdir(path) and fs.exists(stored_path):
        stored = json.loads(fs.cat_file(stored_path))
        differ = [k for k in COMPARED if k in stored and stored[k] != stats.get(k)]
        differ += [
            f"splits.{n}.count"
            for n, s in (stored.get("splits") or {}).items()
            if (stats["splits"].get(n) or {}).get("count") != s.get("count")
        ]
        if differ:
            print(
                "dexport: recomputed statistics differ from dataset_stats.json "
                f"in {', '.join(differ)}",
                file=sys.stderr,
            )
            return 1
    return 0
