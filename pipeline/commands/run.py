"""``dexport run JOB.yaml``: run a list of command steps from a job file, checked as a whole first.

A job file is ``steps:``, a list of one-key mappings ``{command: {options}}``. Option keys are
the command's own long option names (hyphens or underscores), read from its argparse parser so
the job file and the command line cannot drift; ``inputs:`` holds the positional inputs.
``${VAR}`` and ``${VAR:-default}`` expand from the environment in every string value.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import importlib
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError

STEP_COMMANDS = ("corpus", "encode", "tokens", "validate", "stats", "summary")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ARGUMENT = re.compile(r"^argument (--[\w-]+)(?:/[^:]*)?: ")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dexport run``."""
    p = sub.add_parser(
        "run",
        help="run the steps of a job file (corpus, encode, tokens, validate, stats, summary)",
        description=(
            "Run a YAML job file: a list of steps, each one command with its options "
            "(option names as on the command line, inputs: for positional inputs). "
            "The whole file is checked before any step runs; ${VAR} and ${VAR:-default} "
            "expand from the environment."
        ),
    )
    p.add_argument("job", metavar="JOB.yaml", help="the job file")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print each step's command line and what it reads and writes; run nothing",
    )
    p.set_defaults(func=run)


@dataclass
class Step:
    """One checked step: its command, the argv after the command name, inputs and output."""

    number: int
    command: str
    argv: list[str]
    inputs: list[str] = field(default_factory=list)
    out: str | None = None


class _ArgError(Exception):
    pass


def _raise(message: str) -> None:
    raise _ArgError(message)


def _fail(where: str, message: str) -> UserError:
    return UserError(f"{where}: {message}")


def _expand(value: str, where: str, key: str) -> str:
    def one(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        got = os.environ.get(name)
        if got is None or (got == "" and default is not None):
            if default is None:
                raise _fail(where, f"key '{key}': environment variable {name} is not set")
            return default
        return got

    return _ENV.sub(one, value)


def _scalar(value: Any, where: str, key: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        kind = "nothing" if value is None else type(value).__name__
        raise _fail(where, f"key '{key}': expected a string or number, got {kind}")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return _expand(value, where, key)
    raise _fail(where, f"key '{key}': unsupported value {value!r}")


def _options(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.Action], list]:
    """Long option name (underscored) → action, and the positional actions, of one parser."""
    options: dict[str, argparse.Action] = {}
    positionals = []
    from pipeline.cli import COMMON_DESTS

    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in COMMON_DESTS:
            continue
        if not action.option_strings:
            positionals.append(action)
            continue
        for flag in action.option_strings:
            if flag.startswith("--"):
                options[flag[2:].replace("-", "_")] = action
    return options, positionals


def _option_argv(flag: str, action: argparse.Action, value: Any, where: str, key: str) -> list:
    if action.nargs == 0:  # a flag: true → present, false → absent
        if not isinstance(value, bool):
            raise _fail(where, f"key '{key}' is a flag: use true or false, not {value!r}")
        return [flag] if value else []
    if isinstance(value, bool):
        raise _fail(where, f"key '{key}' takes a value, not {str(value).lower()}")
    if isinstance(value, list):
        items = [_scalar(v, where, key) for v in value]
        if isinstance(action, argparse._AppendAction):
            return [part for item in items for part in (flag, item)]
        if action.nargs in ("+", "*") or isinstance(action.nargs, int):
            return [flag, *items]
        raise _fail(where, f"key '{key}' takes one value, not a list")
    return [flag, _scalar(value, where, key)]


def _check_step(
    number: int, raw: Any, parser: argparse.ArgumentParser, where_file: str
) -> tuple[Step, argparse.ArgumentParser]:
    where = f"{where_file} step {number}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise _fail(where, "a step is one mapping {command: {options}}, e.g. {validate: {...}}")
    ((command, body),) = raw.items()
    command = str(command)
    if command not in STEP_COMMANDS:
        close = difflib.get_close_matches(command, STEP_COMMANDS, n=1)
        hint = (
            f" (did you mean '{close[0]}'?)" if close else f" (one of {', '.join(STEP_COMMANDS)})"
        )
        raise _fail(where, f"unknown step '{command}'{hint}")
    where = f"{where} ({command})"
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise _fail(where, "options must be a mapping of option names to values")
    sub = _subparser(parser, command)
    options, positionals = _options(sub)
    argv: list[str] = []
    inputs: list[str] = []
    out = None
    for key, value in body.items():
        key = str(key)
        name = key.replace("-", "_")
        if name == "inputs":
            values = value if isinstance(value, list) else [value]
            inputs = [_scalar(v, where, key) for v in values]
            continue
        action = options.get(name)
        if action is None:
            known = sorted(k.replace("_", "-") for k in options) + ["inputs"]
            close = difflib.get_close_matches(key.replace("_", "-"), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _fail(where, f"unknown option '{key}'{hint}")
        flag = next(f for f in action.option_strings if f.startswith("--"))
        argv += _option_argv(flag, action, value, where, key)
        if name == "out" and isinstance(value, str):
            out = argv[-1]
    if inputs and not positionals:
        raise _fail(where, f"key 'inputs': '{command}' takes no positional inputs")
    argv = [*inputs, *argv] if inputs else argv
    namespace = _parse_or_fail(sub, argv, where)
    # Rules between options (e.g. --text needs --tokenizer), where the command has them.
    check_arguments = getattr(
        importlib.import_module(f"pipeline.commands.{command}"), "check_arguments", None
    )
    if check_arguments is not None:
        try:
            check_arguments(namespace)
        except UserError as exc:
            raise _fail(where, str(exc)) from None
    return Step(number, command, argv, inputs, out), sub


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise AssertionError("dexport parser has no sub-commands")


def _parse_or_fail(sub: argparse.ArgumentParser, argv: list[str], where: str) -> argparse.Namespace:
    """Parse like the command line would; argparse's complaint becomes one error line."""
    saved = sub.error
    sub.error = _raise  # type: ignore[method-assign]
    try:
        return sub.parse_args(argv)
    except _ArgError as exc:
        message = str(exc)
        match = _ARGUMENT.match(message)
        if match:
            key = match.group(1)[2:]
            message = f"key '{key}': {message[match.end() :]}"
        message = message.replace("argument INPUT", "key 'inputs'")
        raise _fail(where, " ".join(message.split())) from None
    except SystemExit:  # argparse exits itself on some paths (e.g. --help in a value)
        raise _fail(where, "invalid options") from None
    finally:
        sub.error = saved  # type: ignore[method-assign]


def _is_local(path: str) -> bool:
    return "://" not in path


def _inside(path: str, outputs: list[str]) -> bool:
    norm = os.path.normpath(path)
    for out in outputs:
        o = os.path.normpath(out)
        if norm == o or norm.startswith(o + os.sep) or norm.startswith(o + "."):
            return True
    return False


def _check_inputs(step: Step, earlier_outputs: list[str], where_file: str) -> None:
    where = f"{where_file} step {step.number} ({step.command})"
    for item in step.inputs:
        if not _is_local(item) or _inside(item, earlier_outputs):
            continue  # remote, or written by an earlier step
        if glob.has_magic(item):
            if not glob.glob(item, recursive=True):
                raise _fail(where, f"key 'inputs': '{item}' matches no file")
            continue
        found = os.path.exists(item)
        if step.command == "tokens":  # a dataset prefix: PREFIX.bin + PREFIX.idx
            found = found or os.path.exists(item + ".bin") or os.path.exists(item + ".idx")
        if not found:
            raise _fail(where, f"key 'inputs': '{item}' not found")


def load_job(path: str) -> list[Step]:
    """Read and check a whole job file; raises :class:`UserError` (one line) on any problem."""
    import yaml

    from pipeline.cli import build_parser

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the job file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"{path}: invalid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a job file is a mapping with 'steps:' (a list of steps)")
    unknown = [str(k) for k in data if k != "steps"]
    if unknown:
        raise UserError(f"{path}: unknown key '{unknown[0]}' (a job file has only 'steps')")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise UserError(f"{path}: key 'steps': expected a non-empty list of steps")
    parser = build_parser()
    steps: list[Step] = []
    outputs: list[str] = []
    for number, raw in enumerate(raw_steps, start=1):
        step, _ = _check_step(number, raw, parser, path)
        _check_inputs(step, outputs, path)
        steps.append(step)
        if step.out is not None:
            outputs.append(step.out)
    return steps


def run(args: argparse.Namespace) -> int:
    """Check the whole job file, then run its steps in order (or print them with --dry-run)."""
    from pipeline.cli import build_parser, run_command

    steps = load_job(args.job)
    total = len(steps)
    if args.dry_run:
        from pipeline.io.sql import mask_url  # a database password is never shown

        for step in steps:
            line = shlex.join(["dexport", step.command, *map(mask_url, step.argv)])
            print(f"step {step.number}/{total} {step.command}: {line}")
            reads = ", ".join(map(mask_url, step.inputs))
            print(f"  reads:  {reads or '-'}")
            print(f"  writes: {step.out or '-'}")
        return 0
    from pipeline.runtime import log, report

    parser = build_parser()
    for step in steps:
        log.info(f"dexport run: step {step.number}/{total} {step.command}")
        log.detail(f"  {shlex.join(['dexport', step.command, *step.argv])}")
        # A failing step's one error line names the step and says the job stops there.
        code = run_command(
            parser.parse_args([step.command, *step.argv]),
            label=f"step {step.number}/{total} {step.command}: ",
            after="; later steps not run" if step.number < total else "",
        )
        if code != 0:
            for later in steps[step.number :]:
                report.skipped(later.command)
            return code
    return 0
