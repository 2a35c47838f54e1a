"""The run report (``--report FILE.json``): one entry per step, for schedulers and dashboards.

The command line opens a report around every command (``dexport run``: around the whole job,
with one step per job step); jobs' commands add their figures with :func:`note`. Written at the
end, whatever the outcome::

    {"tool": "dexport", "version": "…", "command": "corpus", "exit_code": 0,
     "started": "2026-…Z", "seconds": 1.2,
     "steps": [{"step": 1, "command": "corpus", "status": "done", "exit_code": 0,
                "seconds": 1.1, "records_in": 715, "records_out": 705, "rejected": 10,
                "bytes": 3012345, "generation": 0, "outputs": ["export/"], "error": null,
                "totals": {…}}]}

``status`` is ``done``, ``up to date``, ``failed`` (the data failed its checks, exit 1),
``refused`` (wrong usage or input, exit 2), ``retry`` (temporary failure, exit 3),
``interrupted`` (130) or ``not run`` (a later step of a job whose earlier step failed).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

STATUS_BY_CODE = {
    0: "done",
    1: "failed",
    2: "refused",
    3: "retry",
    130: "interrupted",
    143: "interrupted",
}


@dataclass
class Step:
    """What one command did."""

    step: int
    command: str
    status: str = "running"
    exit_code: int | None = None
    seconds: float = 0.0
    records_in: int | None = None
    records_out: int | None = None
    rejected: int | None = None
    bytes: int | None = None
    generation: int | None = None
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    totals: dict[str, Any] | None = None
    _t0: float = field(default=0.0, repr=False)


@dataclass
class Report:
    """The report of one ``dexport`` invocation."""

    command: str
    started: str
    steps: list[Step] = field(default_factory=list)
    exit_code: int | None = None
    seconds: float = 0.0
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def as_dict(self) -> dict[str, Any]:
        from pipeline.runtime.output import tool_version

        return {
            "tool": "dexport",
            "version": tool_version(),
            "command": self.command,
            "exit_code": self.exit_code,
            "started": self.started,
            "seconds": self.seconds,
            "steps": [
                {k: v for k, v in asdict(s).items() if not k.startswith("_")} for s in self.steps
            ],
        }


_current: Report | None = None
_step: Step | None = None


def current() -> Report | None:
    """The report being filled, or None outside a command."""
    return _current


def begin(command: str) -> Report:
    """Open the report of a command (the outermost one)."""
    global _current
    _current = Report(command, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return _current


def start_step(command: str) -> Step | None:
    """A new step of the open report (None without one)."""
    global _step
    if _current is None:
        return None
    _step = Step(len(_current.steps) + 1, command, _t0=time.perf_counter())
    _current.steps.append(_step)
    return _step


def end_step(step: Step | None, code: int, error: str | None) -> None:
    """Close a step with its exit status (figures noted by the command stay)."""
    global _step
    if step is None:
        return
    step.exit_code = code
    step.seconds = round(time.perf_counter() - step._t0, 3)
    if code != 0 or step.status == "running":
        step.status = STATUS_BY_CODE.get(code, "failed")
    step.error = error
    _step = None


def skipped(command: str) -> None:
    """A step of a job that did not run (an earlier one failed)."""
    step = start_step(command)
    if step is not None:
        step.status = "not run"
    global _step
    _step = None


def note(**fields: Any) -> None:
    """Add figures to the running step (unknown names are a bug)."""
    if _step is None:
        return
    for name, value in fields.items():
        if not hasattr(_step, name) or name.startswith("_"):
            raise AttributeError(f"a run report step has no field {name!r}")
        setattr(_step, name, value)


def finish(code: int) -> Report | None:
    """Close the report; return it (None when none was open)."""
    global _current, _step
    report, _current, _step = _current, None, None
    if report is not None:
        report.exit_code = code
        report.seconds = round(time.perf_counter() - report._t0, 3)
    return report


def write(report: Report, path: str) -> None:
    """Write the report as JSON (atomically; local path or URL)."""
    from pipeline.io.storage import resolve, write_bytes_atomic

    fs, target = resolve(path, {})
    data = (json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n").encode()
    write_bytes_atomic(fs, target, data)
