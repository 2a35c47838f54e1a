"""The command line starts light: no cluster or model libraries before they are needed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("distributed", "transformers", "torch", "numba", "pyarrow", "dask", "sqlalchemy")

PROBE = """
import json, sys
from pipeline.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _probe(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("tokens", "--help"),
        ("corpus", "--help"),
        ("encode", "--help"),
        ("tokens", "data/ds", "--all", "--out", "x", "--seq-len", "nope"),  # argparse error
        ("tokens", "missing/ds", "--documents", "0:3", "--out", "x.jsonl"),  # missing dataset
    ],
)
def test_no_heavy_import_before_it_is_needed(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = _probe(*args)
    assert got["code"] in (0, 2), got
    assert got["heavy"] == [], f"{' '.join(args)} imported {got['heavy']}"


def test_version_names_the_package(capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("dexport ")
