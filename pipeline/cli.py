"""The ``dexport`` command line: one sub-command module per job under ``pipeline.commands``."""

from __future__ import annotations

import argparse
import difflib
import errno
import gc
import importlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from pipeline.errors import Terminated, exit_code_of

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


# What argparse reads as a value, not an option, although it starts with "-".
_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")
_HELP = ("-h", "--help")


class CommandLineError(SystemExit):
    """A command line argparse refused (exit status 2); ``line`` is the error line shown."""

    def __init__(self, line: str) -> None:
        super().__init__(2)
        self.line = line


class DexportParser(argparse.ArgumentParser):
    """argparse with dexport's error contract, for the top-level parser and every sub-command.

    A refused command line ends in one ``dexport: error: <what>; see 'dexport CMD --help'``
    line and exit status 2 (:class:`CommandLineError`), instead of a usage block; an unknown
    option is reported first, by name and with the closest known one, before argparse would
    complain about a required option the typo was meant to be.
    """

    _commands: argparse._SubParsersAction | None = None

    def add_subparsers(self, **kwargs: Any) -> argparse._SubParsersAction:
        kwargs.setdefault("parser_class", DexportParser)
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        self._refuse_unknown_options(argv)
        parsed, extras = self.parse_known_args(argv, namespace)
        if extras:  # positional leftovers: blame the sub-command that got them
            where: argparse.ArgumentParser = self
            if self._commands is not None:
                chosen = getattr(parsed, self._commands.dest or "", None)
                where = self._commands.choices.get(chosen, self)
            where.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        """Show argparse's complaint as one error line and exit with status 2."""
        from pipeline.runtime import log

        if self._commands is not None and message.endswith("required: COMMAND"):
            message = f"no command given (one of {', '.join(self._commands.choices)})"
        line = f"{' '.join(message.split())}; see '{self.prog} --help'"
        log.error(line)
        raise CommandLineError(line)

    def _refuse_unknown_options(self, argv: list[str]) -> None:
        """Refuse the first option neither this parser nor its chosen sub-command knows."""
        end = argv.index("--") if "--" in argv else len(argv)
        mine, command, rest = argv[:end], None, []
        if self._commands is not None:  # options of dexport itself come before the command
            at = next((i for i, arg in enumerate(mine) if not arg.startswith("-")), len(mine))
            if at < len(mine):
                command = self._commands.choices.get(mine[at])
                mine, rest = mine[:at], argv[at + 1 :]
        if any(arg in _HELP for arg in mine):
            return  # help was asked for: argparse shows it
        known = [flag for action in self._actions for flag in action.option_strings]
        for arg in mine:
            if arg == "-" or not arg.startswith("-") or " " in arg:
                continue
            if _NEGATIVE_NUMBER.fullmatch(arg):
                continue
            name = arg.split("=", 1)[0]
            if self._knows(name, known):
                continue
            longs = [flag for flag in known if flag.startswith("--")]
            close = difflib.get_close_matches(name, longs if name.startswith("--") else known, 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.error(f"unknown option {name} for '{self.prog}'{hint}")
        if isinstance(command, DexportParser):
            command._refuse_unknown_options(rest)

    def _knows(self, name: str, known: list[str]) -> bool:
        if name in known:
            return True
        if name.startswith("--"):  # an abbreviation argparse expands (or calls ambiguous)
            return self.allow_abbrev and any(flag.startswith(name) for flag in known)
        return name[:2] in known  # -qv, or a short option with its value attached


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all sub-commands)."""
    parser = DexportParser(
        prog="dexport",
        description=(
            "Export ML training data (Megatron/GPT-NeoX token datasets, curated corpora) on Dask."
        ),
    )
    parser.add_argument("--version", action="version", version=f"dexport {_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=DexportParser
    )
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
    # Kernels and tasks are this process's parallelism: an OpenBLAS thread pool would only
    # spin beside them (numpy reads this when it is first imported, i.e. below).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    previous_sigterm = _stop_on_sigterm()
    try:
        from pipeline.runtime import log

        logging.basicConfig(
            level=logging.WARNING, format="dexport: %(message)s", stream=log.CurrentStderr()
        )
        argv = list(sys.argv[1:] if argv is None else argv)
        given = _reporting_options(argv)
        # Set before parsing: a refused command line is reported in the format asked for.
        log.configure(quiet=given.quiet, verbose=given.verbose, fmt=given.log_format)
        try:
            args = build_parser().parse_args(argv)
        except CommandLineError as exc:
            return _refused(given, exc.line)
        return run_command(args)
    finally:
        if collecting:
            gc.enable()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop the run as Ctrl-C does (tasks cancelled, the lock released, one line,
    exit 143) instead of ending the process on the spot; returns the handler it replaced (None
    off the main thread, where Python cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> NoReturn:
        raise Terminated()

    return signal.signal(signal.SIGTERM, stop)


def _reporting_options(argv: list[str]) -> argparse.Namespace:
    """The command and ``--report``, ``--log-format``, ``-q``/``-v`` as they appear in
    ``argv``, read without argparse: they still apply when argparse refuses the rest."""
    given = argparse.Namespace(
        command=None, report=None, log_format="text", quiet=False, verbose=False
    )
    i = 0
    while i < len(argv) and argv[i] != "--":
        arg = argv[i]
        name, equals, value = arg.partition("=")
        if name in ("--report", "--log-format"):
            if not equals and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                value = argv[i]
            if name == "--report":
                given.report = value or None
            elif value in ("text", "json"):
                given.log_format = value
        elif arg in ("-q", "--quiet"):
            given.quiet = True
        elif arg in ("-v", "--verbose"):
            given.verbose = True
        elif given.command is None and not arg.startswith("-"):
            given.command = arg
        i += 1
    return given


def _refused(given: argparse.Namespace, line: str) -> int:
    """Exit status 2 for a command line argparse refused (its error line is shown), with a
    run report when ``--report`` was given."""
    from pipeline.runtime import report

    command = given.command or "dexport"
    report.begin(command)
    step = None if command == "run" else report.start_step(command)
    report.end_step(step, 2, line)
    _write_report(report.finish(2), given.report)
    return 2


def run_command(args: argparse.Namespace, *, label: str = "", after: str = "") -> int:
    """Call ``args.func(args)``; errors the user can act on become one stderr line and a status.

    Shared by :func:`main` and ``dexport run`` (each job step), so both map errors the same way.
    The outermost call also sets up logging (``-q``/``-v``, ``--log-format``) and writes the run
    report (``--report``); every call is one step of that report (``run`` itself is not).
    A job step's error line starts with ``label`` (which step) and ends with ``after`` (what
    that means for the job); a step that fails without an error line of its own (validate's
    report, ``--strict``) gets one saying so.
    """
    from pipeline.runtime import log, report

    if report.current() is not None:  # a step of `dexport run`
        step = report.start_step(args.command)
        code, message = _call(args, label, after)
        if code != 0 and message is None:
            log.error(f"{label}failed (exit {code}){after}")
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


def _call(args: argparse.Namespace, label: str = "", after: str = "") -> tuple[int, str | None]:
    """``(exit status, error line)`` of ``args.func(args)``; the line shown on stderr is
    ``label + error line + after``."""
    from pipeline.runtime import log

    def fail(code: int, message: str) -> tuple[int, str]:
        log.error(f"{label}{message}{after}")
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
    except KeyboardInterrupt as exc:
        stopped = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        message = f"{stopped}; re-run with --resume to finish"
        log.emit("error", f"dexport: {label}{message}{after}")
        return (143 if isinstance(exc, Terminated) else 130), message
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
