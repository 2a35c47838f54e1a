"""Every documented exit code, produced by ``dexport run`` as a scheduler starts it (a real
process), with the run report saying the same; ``--log-format json``, ``-q`` and ``-v``.

0 done / up to date, 1 the data failed its checks (``strict``), 2 bad input (a changed input of
an incremental output), 3 the output locked by a live run, 130 interrupted (SIGINT mid-run).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.cli import main

DEXPORT = Path(sys.executable).with_name("dexport")


def write_docs(path: Path, docs: int, bad: int = 0) -> Path:
    lines = [
        json.dumps({"text": f"{path.stem} text {i} " + "word " * (i % 13 + 1)}) for i in range(docs)
    ]
    path.write_text("\n".join(lines + ["{broken"] * bad) + "\n", encoding="utf-8")
    return path


def job_file(tmp_path: Path, inputs: Path, out: Path, **options: object) -> Path:
    step = {"inputs": [str(inputs)], "out": str(out), "incremental": True, **options}
    job = tmp_path / f"job-{uuid.uuid4().hex[:6]}.yaml"
    job.write_text(json.dumps({"steps": [{"corpus": step}, {"validate": {"inputs": [str(out)]}}]}))
    return job


def start(job: Path, report: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(DEXPORT), "run", str(job), "--report", str(report), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(proc: subprocess.Popen, report: Path) -> tuple[int, list[str], dict]:
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err.strip().splitlines(), json.loads(report.read_text())


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_docs(folder / "2026-04-01.jsonl", 40, bad=1)
    return folder


def test_exit_0_then_0_up_to_date_then_2_changed_input(inputs: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    job = job_file(tmp_path, inputs, out)
    code, _, got = finish(start(job, report), report)
    assert code == 0 and got["exit_code"] == 0
    assert [s["status"] for s in got["steps"]] == ["done", "done"]
    code, _, got = finish(start(job, report), report)
    assert code == 0 and got["steps"][0]["status"] == "up to date"

    write_docs(inputs / "2026-04-01.jsonl", 41)
    code, err, got = finish(start(job, report), report)
    assert code == 2
    assert [s["status"] for s in got["steps"]] == ["refused", "not run"]
    assert "changed" in got["steps"][0]["error"]
    errors = [line for line in err if line.startswith("dexport: error: ")]
    assert len(errors) == 1 and "--rebuild" in errors[0], err
    # The job ends on that one line: which step, why, and that the rest did not run.
    assert err[-1] == errors[0]
    assert errors[0].startswith("dexport: error: step 1/2 corpus: ")
    assert errors[0].endswith("; later steps not run")


def test_exit_1_when_the_data_fails_its_checks(inputs: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, err, got = finish(
        start(job_file(tmp_path, inputs, tmp_path / "o", strict=True), report), report
    )
    assert code == 1 and got["exit_code"] == 1
    assert [s["status"] for s in got["steps"]] == ["failed", "not run"]
    assert got["steps"][0]["rejected"] == 1 and got["steps"][0]["records_out"] == 40
    # --strict says what was rejected; the one error line says which step stopped the job.
    errors = [line for line in err if line.startswith("dexport: error: ")]
    assert (
        errors
        == [err[-1]]
        == ["dexport: error: step 1/2 corpus: failed (exit 1); later steps not run"]
    ), err


def test_exit_3_while_a_live_run_holds_the_output(inputs: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    out.mkdir()
    holder = {
        "run": "x",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "heartbeat": time.time(),
    }
    (out / ".dexport-lock").write_text(json.dumps(holder))
    code, err, got = finish(start(job_file(tmp_path, inputs, out), report), report)
    assert code == 3 and got["steps"][0]["status"] == "retry"
    errors = [line for line in err if line.startswith("dexport: error: ")]
    assert len(errors) == 1 and f"pid {os.getpid()}" in errors[0], err
    assert errors[0].startswith("dexport: error: step 1/2 corpus: ") and err[-1] == errors[0]
    assert sorted(p.name for p in out.iterdir()) == [".dexport-lock"]


def test_exit_130_when_interrupted(tmp_path: Path, dask_client) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for day in range(1, 5):
        write_docs(folder / f"2026-04-0{day}.jsonl", 1500)
    out, report = tmp_path / "out", tmp_path / "report.json"
    job = job_file(tmp_path, folder, out, chunk_size="4k", scheduler=dask_client.scheduler.address)
    proc = start(job, report)
    deadline = time.monotonic() + 120
    while not (out / ".dexport-progress").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)
    code, err, got = finish(proc, report)
    assert code == 130, err
    assert got["exit_code"] == 130 and got["steps"][0]["status"] == "interrupted"
    assert any("interrupted" in line for line in err)


def test_log_format_json_quiet_and_verbose(inputs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    job = job_file(tmp_path, inputs, out)
    assert main(["run", str(job), "--log-format", "json"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {r["level"] for r in records} <= {"info", "detail", "warning", "error"}
    assert any("step 1/2 corpus" in r["message"] for r in records)
    assert all(set(r) == {"time", "level", "message"} for r in records)

    assert main(["run", str(job), "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["run", str(job), "-v"]) == 0
    err = capsys.readouterr().err
    assert "  dexport corpus " in err and "is up to date" in err  # the step's command line
    assert "1 inputs already consumed, 0 new" in err

    write_docs(inputs / "2026-04-01.jsonl", 3)
    assert main(["corpus", str(inputs), "--out", str(out), "--incremental", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dexport: error: "), err
    assert main(["corpus", str(inputs), "--out", str(out), "--incremental",
                 "--log-format", "json"]) == 2  # fmt: skip
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert json.loads(line)["level"] == "error"


def test_report_options_are_not_step_options(inputs: Path, tmp_path: Path, capsys) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        f"steps:\n  - corpus: {{inputs: ['{inputs}'], out: '{tmp_path / 'o'}', report: r.json}}\n"
    )
    assert main(["run", str(job)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown option 'report'" in err[0], err
