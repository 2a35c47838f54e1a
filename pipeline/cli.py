"""The ``dexport`` command line: one sub-command module per job under ``pipeline.commands``."""

from __future__ import annotations

import argparse
import errno
import gc
import importlib
import logging
import os
import sys

from pipeline.errors import exit_code_of

# Each module defines ``add_parser(subparsers)`` which registers the sub-command and sets
# ``func`` (a callable taking the parsed args and returning an exit status).
COMMANDS = (
    "demo",
    "tokens",
    "inspect",
    "encode",
    "corpus",
    "validate",
    "stats",
    "summary",
    "run",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all sub-commands)."""
    parser = argparse.ArgumentParser(
        prog="dexport",
        description=(
            "Export ML training data (Megatron/GPT-NeoX token datasets, curated corpora) on Dask."
        ),
    )
    parser.add_argument("--version", action="version", version=f"dexport {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pipeline.commands.{name}").add_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dexport")
    except PackageNotFoundError:  # a source tree that was not installed
        return "0+unknown"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for errors the user can fix)."""
    # Start-up (imports, tokenizer and index loading) makes long-lived objects only, and the
    # collector would walk them again and again (~0.1 s): it stays off until tasks run
    # (``pipeline.runtime.runner`` turns it back on).
    gc.disable()
    logging.basicConfig(level=logging.WARNING, format="dexport: %(message)s")
    return run_command(build_parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Call ``args.func(args)``; errors the user can act on become one stderr line and a status.

    Shared by :func:`main` and ``dexport run`` (each job step), so both map errors the same way.
    """
    try:
        return int(args.func(args) or 0)
    except PermissionError as exc:
        print(
            f"dexport: error: permission denied ({_one_line(exc)}); "
            "check credentials or --storage-options",
            file=sys.stderr,
        )
        return 2
    except FileNotFoundError as exc:
        print(f"dexport: error: not found ({_one_line(exc)}); check the path", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `dexport inspect … | head`: the reader left; exit quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("dexport: interrupted; re-run with --resume to finish", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(
            f"dexport: error: no space left ({_one_line(exc)}); "
            "free space, then re-run with --resume",
            file=sys.stderr,
        )
        return 3
    except Exception as exc:
        code = exit_code_of(exc)
        if code is None:
            raise
        print(f"dexport: error: {_one_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
