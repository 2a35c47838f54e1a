"""The Python API with an embedded cluster, called from a script without an
``if __name__ == "__main__":`` guard: its worker processes must not run the script again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import corpus_helpers
from corpus_helpers import tree_bytes

from pipeline.corpus.api import export_corpus

MARKER = "script body running"
SCRIPT = f"""\
import sys
from pipeline import export_corpus

print({MARKER!r}, flush=True)
summary = export_corpus([sys.argv[1]], sys.argv[2], workers=2)
print("splits", summary["splits"], flush=True)
"""


def _run_unguarded(tmp_path: Path, inputs: str, out: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "export_script.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), inputs, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_unguarded_script_with_workers_runs_once_and_writes_the_same_bytes(
    tmp_path: Path,
) -> None:
    inputs = tmp_path / "in"
    corpus_helpers.sample.generate(str(inputs), docs=60, files=2, seed=5, mean_words=20)
    # The same folder name on both sides: the card names the output after it.
    in_process, by_script = tmp_path / "a" / "export", tmp_path / "b" / "export"
    export_corpus([str(inputs)], str(in_process))

    result = _run_unguarded(tmp_path, str(inputs), by_script)

    assert result.returncode == 0, result.stderr
    assert result.stdout.count(MARKER) == 1, result.stdout
    assert "splits" in result.stdout
    assert tree_bytes(by_script) == tree_bytes(in_process)


def test_unguarded_script_planning_error_is_raised_once_without_worker_tracebacks(
    tmp_path: Path,
) -> None:
    result = _run_unguarded(tmp_path, str(tmp_path / "nope"), tmp_path / "export")

    assert result.returncode != 0
    assert result.stdout.count(MARKER) == 1, result.stdout
    # The script's own uncaught UserError, and nothing from worker processes.
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert result.stderr.rstrip().endswith("does not exist"), result.stderr
    assert "pipeline.errors.UserError: input" in result.stderr
    assert not (tmp_path / "export").exists()
