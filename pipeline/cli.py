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


# Options of every command (and of ``dexport run`` as a whole, not of its steps).
COMMON_DESTS = ("report", "log_format", "quiet", "verbose")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--report FILE.json``, ``--log-format text|json`` and ``-q | -v``."""
    group = parser.add_argument_group("reporting")
    group.add_argument(
        "--report",
        metavar="FILE.json",
        help="write a run report: per step status, exit code, records, bytes, durations, outputs",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr as text lines (default) or one JSON object per line",
    )
    level = group.add_mutually_exclusive_group()
    level.add_argument("-q", "--quiet", action="store_true", help="errors only")
    level.add_argument("-v", "--verbose", action="store_true", help="more detail")


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
    for command in sub.choices.values():
        add_common_args(command)
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
    # (``pipeline.runtime.runner`` turns it back on), and as it was for a caller in-process.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from pipeline.runtime.log import CurrentStderr

        logging.basicConfig(
            level=logging.WARNING, format="dexport: %(message)s", stream=CurrentStderr()
        )
        return run_command(build_parser().parse_args(argv))
    finally:
        if collecting:
            gc.enable()


def run_command(args: argparse.Namespace) -> int:
    """Call ``args.func(args)``; errors the user can act on become one stderr line and a status.

    Shared by :func:`main` and ``dexport run`` (each job step), so both map errors the same way.
    The outermost call also sets up logging (``-q``/``-v``, ``--log-format``) and writes the run
    report (``--report``); every call is one step of that report (``run`` itself is not).
    """
    from pipeline.runtime import log, report

    if report.current() is not None:  # a step of `dexport run`
        step = report.start_step(args.command)
        code, message = _call(args)
        report.end_step(step, code, message)
        return code
    log.configure(
        quiet=getattr(args, "quiet", False),
        verbose=getattr(args, "verbose", False),
        fmt=getattr(args, "log_format", "text"),
    )
    report.begin(args.command)
    step = None if args.command == "run" else report.start_step(args.command)
    target = getattr(args, "report", None)
    with log.capture_stderr():
        try:
            code, message = _call(args)
        except BaseException as exc:  # a bug: its traceback follows, the report says so too
            report.end_step(step, 1, f"internal error: {_one_line(exc)}")
            _write_report(report.finish(1), target)
            raise
        report.end_step(step, code, message)
        if not _write_report(report.finish(code), target):
            return code or 2
    return code


def _write_report(finished: object, target: str | None) -> bool:
    """Write the run report if one was asked for; False when it could not be written."""
    from pipeline.runtime import log, report

    if not target or finished is None:
        return True
    try:
        report.write(finished, target)  # type: ignore[arg-type]
    except OSError as exc:
        log.error(f"cannot write the run report {target} ({_one_line(exc)})")
        return False
    return True


def _call(args: argparse.Namespace) -> tuple[int, str | None]:
    """``(exit status, error line)`` of ``args.func(args)``."""
    from pipeline.runtime import log

    def fail(code: int, message: str) -> tuple[int, str]:
        log.error(message)
        return code, message

    try:
        return int(args.func(args) or 0), None
    except PermissionError as exc:
        return fail(
            2,
            f"permission denied ({_one_line(exc)}); check credentials or --storage-options",
        )
    except FileNotFoundError as exc:
        return fail(2, f"not found ({_one_line(exc)}); check the path")
    except BrokenPipeError:
        # `dexport inspect … | head`: the reader left; exit quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0, None
    except KeyboardInterrupt:
        message = "interrupted; re-run with --resume to finish"
        log.emit("error", f"dexport: {message}")
        return 130, message
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        return fail(3, f"no space left ({_one_line(exc)}); free space, then re-run with --resume")
    except Exception as exc:
        code = exit_code_of(exc)
        if code is None:
            raise
        return fail(code, _one_line(exc))


if __name__ == "__main__":
    sys.exit(main())
