"""scripts/gpu_check.sh --dry-run: everything that can be checked without a device passes, and
installs, downloads and creates nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _dry_run(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(root / "scripts" / "gpu_check.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_dry_run_checks_lock_tests_and_benchmark_and_prints_the_plan() -> None:
    had_venv = (ROOT / ".venv-gpu").exists()
    done = _dry_run(ROOT)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "syntax: ok" in out
    assert "gpu extra cudf-cu12==" in out and "cupy-cuda12x==" in out
    collected = int(out.split("gpu tests: ")[1].split()[0])
    assert collected >= 10  # the gpu-marked tests of tests/gpu and tests/tokens
    assert "dexport tokens" in out and "--backend gpu" in out and "dexport corpus" in out
    assert "gpu_check plan:" in out and "pytest -m gpu" in out
    assert out.rstrip().endswith("dry run passed (nothing installed, nothing downloaded)")
    assert (ROOT / ".venv-gpu").exists() == had_venv


def test_dry_run_fails_on_a_lock_that_breaks_the_gpu_extra(tmp_path: Path) -> None:
    for rel in ("pyproject.toml", "requirements", "scripts/gpu_check.sh", "tests/gpu"):
        src, dst = ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    lock = tmp_path / "requirements" / "gpu.lock"
    text = lock.read_text()
    pinned = next(line for line in text.splitlines() if line.startswith("cupy-cuda12x=="))
    lock.write_text(text.replace(pinned, "cupy-cuda12x==12.0.0"))
    done = _dry_run(tmp_path)
    assert done.returncode != 0
    assert "requirements/gpu.lock pins cupy-cuda12x==12.0.0, pyproject wants cupy-cuda12x>=13" in (
        done.stderr
    )


def test_unknown_argument_is_refused_with_one_line() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "gpu_check.sh: unknown argument '--fast'; use --dry-run or nothing"
    )
