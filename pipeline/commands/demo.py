"""``dexport demo``: the main job on embedded defaults, with sample data it makes itself."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from pipeline.commands.common import add_cluster_args, executor_from_args
from pipeline.commands.tokens import print_summary
from pipeline.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport demo``."""
    p = sub.add_parser(
        "demo",
        help="make sample data, build its training order and export batches 5-10 as text",
        description=(
            "End to end on one machine: generate a corpus and tokenizer, "
            "tokenize it into a Megatron dataset, build the GPT-NeoX training order, "
            "and export what the model saw in batches 5-9 (text + doc details) "
            "on threads of this process (--workers N for an embedded Dask cluster)."
        ),
    )
    p.add_argument(
        "--out",
        default="demo-output",
        help=(
            "folder for everything the demo writes (default ./demo-output; "
            "a previous demo there is replaced, nothing else is touched)"
        ),
    )
    add_cluster_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and show the first exported record."""
    _clear_previous_demo(args.out)
    before = _files(args.out)
    try:
        return _run_demo(args)
    finally:
        _record_demo_files(args.out, before)


def _run_demo(args: argparse.Namespace) -> int:
    from pipeline.tokens.job import TokenExport, run_token_export
    from pipeline.tokens.sample_data import make_token_dataset
    from pipeline.tokens.source import TrainingRun

    print(
        f"1/3 making sample data in {args.out}/ "
        "(corpus, byte-level BPE tokenizer, Megatron dataset)",
        file=sys.stderr,
    )
    prefix, tokenizer = make_token_dataset(args.out)
    run_ = TrainingRun(
        seq_len=128,
        seed=1234,
        train_iters=50,
        batch_size=16,
        convention="neox",
        index_prefix=os.path.join(args.out, "index", "corpus"),
    )
    out_file = os.path.join(args.out, "export", "batches-5-10.jsonl")
    spec = TokenExport(
        prefix=prefix,
        out=out_file,
        selection_kind="batch_range",
        selection_value=(5, 10),
        run=run_,
        content="text",
        tokenizer=tokenizer,
        doc_details=True,
        chunk_size=32,
        backend=args.backend,
    )
    print(
        "2/3 building the GPT-NeoX training order (seq_len 128, seed 1234, 50 iters x 16)",
        file=sys.stderr,
    )
    print("3/3 exporting batches 5-9 as text (doc details, one JSONL file)", file=sys.stderr)
    with executor_from_args(args, tasks=1) as executor:
        summary = run_token_export(spec, executor)
    print_summary(summary)
    with open(out_file, encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    first["content"] = first["content"][:200] + ("…" if len(first["content"]) > 200 else "")
    print(json.dumps(first, ensure_ascii=False, indent=1))
    print(
        f"\nnext: dexport inspect {prefix} --seq-len 128 --seed 1234 --train-iters 50 "
        f"--batch-size 16 --index {run_.index_prefix} --batch 5 --tokenizer {tokenizer}",
        file=sys.stderr,
    )
    return 0


MARKER = ".dexport-demo"  # JSON list of the files the demo wrote, relative to --out


def _clear_previous_demo(out: str) -> None:
    """Remove the files an earlier demo wrote in ``out``; refuse a folder the demo did not make."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file; pass a folder for the demo")
    if os.path.isdir(out) and os.listdir(out):
        marker = os.path.join(out, MARKER)
        if not os.path.exists(marker):
            raise UserError(
                f"--out {out} is not empty and was not made by dexport demo; "
                "pass a new folder (the demo never deletes what it did not write)"
            )
        with open(marker, encoding="utf-8") as handle:
            written = json.load(handle)
        for rel in written:
            path = os.path.normpath(os.path.join(out, rel))
            if path.startswith(os.path.abspath(out) + os.sep) or path.startswith(
                os.path.normpath(out) + os.sep
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
        for folder, _dirs, _files in sorted(os.walk(out), key=lambda w: -len(w[0])):
            if folder != out:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only folders left empty
        os.remove(marker)
    os.makedirs(out, exist_ok=True)


def _files(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


def _record_demo_files(out: str, before: set[str]) -> None:
    written = sorted(_files(out) - before - {MARKER})
    with open(os.path.join(out, MARKER), "w", encoding="utf-8") as handle:
        json.dump(written, handle, indent=1)
