"""A command line argparse refuses: one ``dexport: error:`` line naming the sub-command's help,
exit status 2, no usage block; unknown options first and by name; ``--help`` still in full."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pipeline.cli import DexportParser, build_parser, main

TOKENS = ["tokens", "ds"]


def refused(capsys: pytest.CaptureFixture, argv: list[str], command: str) -> str:
    """Run ``dexport argv``; expect exit 2 and one error line; return that line."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("dexport: error: "), captured.err
    assert lines[0].endswith(f"; see '{command} --help'"), captured.err
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "command", "what"),
    [
        ([*TOKENS, "--out", "o"], "dexport tokens", "one of the arguments --all"),
        ([*TOKENS, "--all"], "dexport tokens", "arguments are required: --out"),
        ([*TOKENS, "--all", "--out", "o", "--format", "txt"], "dexport tokens", "'txt'"),
        ([*TOKENS, "--all", "--out", "o", "--split", "dev"], "dexport tokens", "'dev'"),
        (["corpus", "in", "--out", "o", "--chunk-size", "12QB"], "dexport corpus", "'12QB'"),
        (["encode", "in", "--out", "o"], "dexport encode", "required: --tokenizer"),
        (["validate"], "dexport validate", "required: PATH"),
        (["validate", "a", "b", "c"], "dexport validate", "unrecognized arguments: b c"),
        (["run"], "dexport run", "required: JOB.yaml"),
        ([], "dexport", "no command given (one of demo, tokens,"),
        (["tokenz"], "dexport", "invalid choice: 'tokenz'"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_command(capsys, argv, command, what) -> None:
    assert what in refused(capsys, argv, command)


@pytest.mark.parametrize(
    ("argv", "command", "name", "hint"),
    [
        ([*TOKENS, "--all", "--outt", "x"], "tokens", "--outt", " (did you mean --out?)"),
        ([*TOKENS, "--all", "--out", "o", "--chunksize", "5"], "tokens", "--chunksize", " (did "),
        ([*TOKENS, "--all", "--out", "o", "--chunksize=5"], "tokens", "--chunksize", " (did "),
        (["validate", "x", "--backend", "gpu"], "validate", "--backend", ";"),
        (["corpus", "in", "--outt", "o", "--split", "nope"], "corpus", "--outt", " (did "),
        (["--chunksize", "5", "tokens"], None, "--chunksize", ";"),
    ],
)
def test_an_unknown_option_is_reported_first_and_by_name(capsys, argv, command, name, hint):
    where = f"dexport {command}" if command else "dexport"
    line = refused(capsys, argv, where)
    assert line.startswith(f"dexport: error: unknown option {name} for '{where}'{hint}"), line
    if name == "--chunksize" and command:
        assert "(did you mean --chunk-size?)" in line


def test_values_and_abbreviations_are_not_unknown_options(capsys) -> None:
    parser = build_parser()
    # A negative number is a value; --chunk is --chunk-size abbreviated; -qv is two flags.
    got = parser.parse_args(["corpus", "in", "--out", "o", "--seed", "-3", "--chunk", "1M"])
    assert (got.seed, got.chunk_size) == (-3, 1 << 20)
    assert parser.parse_args(["validate", "x", "--show=-1"]).show == -1
    assert "--outt" in refused(capsys, ["validate", "x", "-q", "--outt"], "dexport validate")


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_below_one_is_refused_before_anything_runs(capsys, workers) -> None:
    argv = [*TOKENS, "--all", "--out", "o", "--workers", workers]
    line = refused(capsys, argv, "dexport tokens")
    assert f"argument --workers: must be at least 1 (got {workers})" in line
    assert build_parser().parse_args([*argv[:-1], "2"]).workers == 2


def test_help_is_still_the_full_help(capsys) -> None:
    for argv, usage in (
        (["tokens", "--help"], "usage: dexport tokens"),
        (["-h"], "usage: dexport"),
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        captured = capsys.readouterr()
        assert captured.out.startswith(usage) and len(captured.out.splitlines()) > 13
        assert captured.err == ""
    with pytest.raises(SystemExit):  # asking for help beats a typo next to it
        main([*TOKENS, "--outt", "x", "--help"])
    assert capsys.readouterr().out.startswith("usage: dexport tokens")


def test_every_sub_command_parser_keeps_the_contract() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert isinstance(parser, DexportParser)
    assert all(isinstance(sub, DexportParser) for sub in commands.choices.values())


def test_log_format_json_makes_the_error_line_json(capsys) -> None:
    argv = [*TOKENS, "--all", "--outt", "x", "--log-format", "json"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert record["message"].startswith("dexport: error: unknown option --outt")


def test_report_is_written_for_a_usage_error(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    line = refused(capsys, [*TOKENS, "--all", "--report", str(report)], "dexport tokens")
    got = json.loads(report.read_text())
    assert got["command"] == "tokens" and got["exit_code"] == 2
    ((step,),) = [got["steps"]]
    assert step["status"] == "refused" and step["exit_code"] == 2
    assert line == f"dexport: error: {step['error']}"
