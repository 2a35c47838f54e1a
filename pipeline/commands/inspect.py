"""``dexport inspect``: facts about a token dataset and one sample, batch or document."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.commands.common import storage_options
from pipeline.commands.tokens import (
    add_training_run_args,
    check_storage,
    dataset_prefix,
    report_order,
    training_run,
)
from pipeline.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport inspect``."""
    p = sub.add_parser(
        "inspect",
        help="print a dataset's facts and one sample, batch or document",
        description=(
            "Print documents, tokens, dtype (and with the training run: epochs, samples, batches) "
            "and optionally one sample, batch or document."
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
    what = p.add_mutually_exclusive_group()
    what.add_argument("--sequence", type=int, metavar="I", help="show sample I (training order)")
    what.add_argument(
        "--batch", type=int, metavar="B", help="show global batch B (needs --batch-size)"
    )
    what.add_argument("--document", type=int, metavar="D", help="show corpus document D")
    p.add_argument(
        "--tokenizer", metavar="PATH", help="show text through this local Hugging Face tokenizer"
    )
    p.add_argument("--skip-special-tokens", action="store_true")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec/s3fs options as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the facts, then the chosen records."""
    from pipeline.io.storage import storage_errors

    with storage_errors():  # storage failures: one line, exit 2 (fix it) or 3 (retry)
        facts, shown = _collect(args)
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    for title, text in shown:
        print(f"\n== {title}")
        print(text)
    return 0


def _collect(args: argparse.Namespace) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The facts and each chosen record as (title, tokens or text): every check, every read
    and every decode happens here, so a refused command prints nothing on stdout."""
    import numpy as np

    from pipeline.formats.indexed_dataset import IndexedDataset
    from pipeline.tokens.source import open_sample_order

    run_ = training_run(args)
    prefix = dataset_prefix(args)
    blend = run_.blend if run_ is not None else None
    if blend is not None and (prefix is not None or args.document is not None):
        raise UserError(
            "a blend's facts need no PREFIX and show no --document; inspect one dataset's "
            "documents with PREFIX --document D"
        )
    if blend is None and prefix is None:
        raise UserError("give the dataset PREFIX (or a blend: data paths with weights)")
    check_storage(prefix, run_, storage_options(args))
    dataset = facts = None
    if blend is None:
        dataset = IndexedDataset(prefix, storage_options(args))
        facts = {
            "dataset": prefix,
            "dtype": str(dataset.dtype),
            "documents": f"{len(dataset):,}",
            "tokens": f"{dataset.num_tokens:,}",
        }
    order = ids = None
    if args.document is not None and not 0 <= args.document < len(dataset):
        raise UserError(
            f"document {args.document} is out of range: the dataset has {len(dataset)} "
            f"documents (0..{len(dataset) - 1})"
        )
    if (args.sequence is not None or args.batch is not None) and run_ is None:
        raise UserError(
            "--sequence and --batch need the training run: pass --seq-len, --seed and "
            "--num-samples or --train-iters/--batch-size"
        )
    if args.batch is not None and not run_.batch_size:
        raise UserError("--batch needs --batch-size B")
    if run_ is not None:
        order = open_sample_order(dataset, run_, defer_save=True)
        if args.batch is not None:
            size, n_batches = run_.batch_size, len(order) // run_.batch_size
            if not 0 <= args.batch < n_batches:
                raise UserError(
                    f"batch {args.batch} is out of range: {len(order)} samples make {n_batches} "
                    f"full batches of {size} (0..{n_batches - 1})"
                )
            ids = np.arange(args.batch * size, (args.batch + 1) * size)
        elif args.sequence is not None:
            ids = order.check_ids(np.array([args.sequence]))
    detok = None
    if args.tokenizer:
        from gpu.detok import Detokenizer

        detok = Detokenizer.from_pretrained(
            args.tokenizer, skip_special_tokens=args.skip_special_tokens
        )
    # (title, tokens, the dataset they come from)
    records: list[tuple[str, Any, str]] = []
    if args.document is not None:
        records.append((f"document {args.document}", dataset.sequence(args.document), prefix))
    elif ids is not None:
        windows = order.windows(dataset, ids)
        details = order.doc_details(ids)
        sources = order.provenance(ids) if blend is not None else None
        for row, sample_id in enumerate(ids.tolist()):
            where = ", ".join(f"{k}={int(details[k][row])}" for k in details)
            source = prefix
            if sources is not None:
                source = str(sources[0][row])
                where = f"dataset {source}, dataset_sample_id={int(sources[1][row])}, " + where
            records.append((f"sample {sample_id} ({where})", windows[row], source))
    shown = [
        (f"{title}: {len(tokens)} tokens", _render(tokens, detok, source))
        for title, tokens, source in records
    ]
    if blend is not None:
        report_order(order)
        facts = _blend_facts(order, run_)
    elif order is not None:
        report_order(order)  # every check passed: save a built order, say what was done
        used = np.unique(np.asarray(order.doc_idx))
        facts["convention"] = run_.convention
        facts["split"] = f"{run_.split} ({len(used):,} documents)"
        facts["epochs"] = str(int(-(-len(order.doc_idx) // max(len(used), 1))))
        facts["samples"] = f"{len(order):,} of {order.window_len} tokens"
        if run_.batch_size:
            facts["batches"] = f"{len(order) // run_.batch_size:,} of {run_.batch_size}"
    return facts, shown


def _blend_facts(order: Any, run: Any) -> dict[str, str]:
    """A blend's composition: per dataset its weight, samples built and asked, epochs."""
    facts = {
        "blend": f"{len(order.components)} datasets ({run.convention}), split {run.split}",
        "samples": f"{len(order):,} of {order.window_len} tokens",
    }
    if run.batch_size:
        facts["batches"] = f"{len(order) // run.batch_size:,} of {run.batch_size}"
    for k, (component, reads) in enumerate(
        zip(order.components, order.counts().tolist(), strict=True)
    ):
        asked = "one epoch" if component.num_samples is None else f"{component.num_samples:,}"
        epochs = f"{component.epochs} epoch" + ("s" if component.epochs != 1 else "")
        facts[f"dataset {k}"] = (
            f"{component.prefix}: weight {component.weight:.6g}, {component.dataset.dtype}, "
            f"{len(component.dataset):,} documents, samples asked {asked}, built "
            f"{len(component.order):,} ({epochs}), read by {reads:,} positions"
        )
    return facts


def _render(tokens: Any, detok: Any, prefix: str) -> str:
    """The token ids as a list, or their text when a tokenizer is given (which must know every
    id: a tokenizer the dataset was not made with is refused, as ``dexport tokens`` does)."""
    import numpy as np

    from pipeline.tokens.job import check_vocabulary

    tokens = np.asarray(tokens)
    if detok is None:
        return str(tokens.tolist())
    check_vocabulary(tokens, detok, prefix)
    return detok.decode(tokens, np.array([0, len(tokens)], np.int64))[0]
