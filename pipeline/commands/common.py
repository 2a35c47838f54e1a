"""Arguments shared by several sub-commands, and turning them into runtime objects."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """``--scheduler | --scheduler-file | --workers``, ``--backend``, ``--protocol`` and
    ``--rmm-pool-size`` (the last two for the embedded cluster; see docs/cluster.md)."""
    group = parser.add_argument_group("cluster")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="address of an existing Dask scheduler (tcp://host:8786)",
    )
    where.add_argument(
        "--scheduler-file", metavar="F", help="scheduler file of an existing Dask cluster"
    )
    where.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="worker processes of the embedded local cluster (default: one per core)",
    )
    group.add_argument(
        "--backend",
        choices=("auto", "cpu", "gpu"),
        default="cpu",
        help="compute backend (default cpu); gpu runs on a dask-cuda cluster, one worker per "
        "visible GPU (CUDA_VISIBLE_DEVICES)",
    )
    group.add_argument(
        "--protocol",
        choices=("tcp", "ucx"),
        help="comms of the embedded cluster (default tcp); ucx needs distributed-ucxx",
    )
    group.add_argument(
        "--rmm-pool-size",
        metavar="SIZE",
        help="RMM memory pool per GPU worker of the embedded GPU cluster: 16GB, or 0.9 of "
        "each GPU's memory",
    )


def _worker_count(text: str) -> int:
    """``--workers N``: at least one (0 would quietly run in this process instead)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (e.g. 4)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def add_output_args(
    parser: argparse.ArgumentParser,
    *,
    chunk_size: int,
    chunk_type: Any = int,
    chunk_metavar: str = "N",
    chunk_help: str | None = None,
) -> None:
    """``--chunk-size``, ``--overwrite | --resume`` and ``--storage-options``.

    ``--chunk-size`` counts records for token exports; jobs that cut input by bytes pass their
    own type, metavar and help.
    """
    group = parser.add_argument_group("output")
    help_text = chunk_help or f"records per task and part file (default {chunk_size})"
    group.add_argument(
        "--chunk-size", type=chunk_type, default=chunk_size, metavar=chunk_metavar, help=help_text
    )
    mode = group.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing output")
    mode.add_argument(
        "--resume", action="store_true", help="finish an interrupted run, skipping completed parts"
    )
    group.add_argument(
        "--storage-options",
        metavar="JSON",
        help='fsspec/s3fs options as JSON, e.g. \'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:8333"}}\'',
    )


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """Parsed ``--storage-options``."""
    from pipeline.io.storage import parse_storage_options

    return parse_storage_options(getattr(args, "storage_options", None))


@contextlib.contextmanager
def executor_from_args(
    args: argparse.Namespace,
    *,
    tasks: int | None = None,
    threads: bool = False,
    processes: bool = False,
) -> Iterator[Any]:
    """Where the run's tasks go: Dask when the flags name a cluster; otherwise this process for
    a small job (on processes forked from it when its tasks hold the GIL: ``processes=True``),
    or for any job whose tasks run in GIL-free kernels (``threads=True``), and an embedded
    cluster for the rest."""
    from pipeline.runtime.executor import open_executor

    with open_executor(tasks=tasks, **_executor_options(args, threads, processes)) as executor:
        yield executor


@contextlib.contextmanager
def plan_and_executor_from_args(
    args: argparse.Namespace,
    plan: Callable[[], Any],
    tasks_of: Callable[[Any], int | None],
    *,
    threads: bool = False,
    processes: bool = False,
) -> Iterator[tuple[Any, Any]]:
    """``(plan(), executor)`` as :func:`executor_from_args` chooses it for ``tasks_of(plan)``
    tasks; when the flags name a cluster it starts while ``plan`` runs (see
    ``pipeline.runtime.executor.plan_and_open_executor``)."""
    from pipeline.runtime.executor import plan_and_open_executor

    with plan_and_open_executor(
        plan, tasks_of, **_executor_options(args, threads, processes)
    ) as planned:
        yield planned


def _executor_options(args: argparse.Namespace, threads: bool, processes: bool) -> dict[str, Any]:
    return {
        "scheduler": getattr(args, "scheduler", None),
        "scheduler_file": getattr(args, "scheduler_file", None),
        "workers": getattr(args, "workers", None),
        "backend": getattr(args, "backend", "cpu"),
        "in_process": threads or None,
        "processes": processes,
        "protocol": getattr(args, "protocol", None),
        "rmm_pool_size": getattr(args, "rmm_pool_size", None),
    }


def parse_fraction(text: str) -> float:
    """A number between 0 and 1 (``--max-reject-fraction``)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1 (e.g. 0.5)")
    return value


def add_reject_args(parser: argparse.ArgumentParser, *, product: str) -> None:
    """``--strict`` and ``--max-reject-fraction`` (jobs that keep rejected records aside)."""
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any record was rejected"
    )
    parser.add_argument(
        "--max-reject-fraction",
        type=parse_fraction,
        default=0.5,
        metavar="F",
        help=(
            "exit with status 1 when more than this fraction of the records is rejected, or all "
            f"of them (default 0.5; the {product} is still written)"
        ),
    )


def add_database_args(parser: argparse.ArgumentParser) -> None:
    """``--table``, ``--query`` and ``--key``: a database URL as the input (corpus, encode)."""
    group = parser.add_argument_group(
        "database source (INPUT is a URL: sqlite:///games.db, postgresql://user:pw@host/db)"
    )
    what = group.add_mutually_exclusive_group()
    what.add_argument("--table", metavar="NAME", help="read this table (or schema.table)")
    what.add_argument(
        "--query", metavar="SQL", help="read the rows of this SELECT (run once per partition)"
    )
    group.add_argument(
        "--key",
        metavar="COLUMN",
        help="unique column that orders the records and cuts them into partitions (required)",
    )


def database_inputs(args: argparse.Namespace) -> tuple[list[str], Any]:
    """``(inputs, source)``: the inputs as shown (a database URL with its password masked) and
    the :class:`pipeline.io.sql.SqlSource` they name, or ``(inputs, None)`` for files."""
    from pipeline.io.sql import database_source

    inputs = list(args.inputs)
    source = database_source(
        inputs,
        table=getattr(args, "table", None),
        query=getattr(args, "query", None),
        key=getattr(args, "key", None),
    )
    return ([source.masked_url] if source is not None else inputs), source


def add_incremental_args(parser: argparse.ArgumentParser, *, unit: str) -> None:
    """``--incremental`` and ``--rebuild`` (jobs whose output can grow by new inputs)."""
    group = parser.add_argument_group("incremental runs")
    group.add_argument(
        "--incremental",
        action="store_true",
        help=(
            f"add only input files the output has not consumed yet, as a new generation of "
            f"{unit}; nothing new: 'up to date', exit 0"
        ),
    )
    group.add_argument(
        "--rebuild",
        action="store_true",
        help="with --incremental: export every input again (after an input changed or went away)",
    )
