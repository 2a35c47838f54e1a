"""Everything dexport tells the user on stderr goes through here: levels, text or JSON lines.

Commands and layers call :func:`error`, :func:`warning`, :func:`info` and :func:`detail`
(shown with ``-v`` only); the few ``print(..., file=sys.stderr)`` left in commands and the
progress lines reach the same place, because while a command runs ``sys.stderr`` is a
:class:`LogStream` that turns each line into a log record. ``--log-format json`` writes one JSON
object per line (``{"time", "level", "message"}``) for log collectors; ``-q`` keeps errors
only, ``-v`` adds detail.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections.abc import Iterator
from typing import IO

LEVELS = {"detail": 10, "info": 20, "warning": 30, "error": 40}


class _Settings:
    threshold = LEVELS["info"]
    json = False


_settings = _Settings()


def configure(*, quiet: bool = False, verbose: bool = False, fmt: str = "text") -> None:
    """Set the level (``quiet``: errors only; ``verbose``: detail too) and the line format."""
    _settings.threshold = LEVELS["error"] if quiet else LEVELS["detail" if verbose else "info"]
    _settings.json = fmt == "json"


def emit(level: str, message: str, stream: IO[str] | None = None) -> None:
    """Write one message (possibly several lines) at ``level``, if the level is shown."""
    if LEVELS[level] < _settings.threshold:
        return
    out = stream or _target()
    if _settings.json:
        for line in message.splitlines() or [""]:
            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                + f".{int(time.time() * 1000) % 1000:03d}Z",
                "level": level,
                "message": line,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        out.write(message + "\n")
    out.flush()


def error(message: str) -> None:
    """``dexport: error: …`` (always shown)."""
    emit("error", f"dexport: error: {message}")


def warning(message: str) -> None:
    """``dexport: warning: …``."""
    emit("warning", f"dexport: warning: {message}")


def info(message: str) -> None:
    """A line of the normal output (summaries, notices); hidden by ``-q``."""
    emit("info", message)


def detail(message: str) -> None:
    """More detail, shown with ``-v`` only."""
    emit("detail", message)


def _target() -> IO[str]:
    stream = sys.stderr
    return stream.raw if isinstance(stream, LogStream) else stream


def _level_of(line: str) -> str:
    if line.startswith(("dexport: error:", "Traceback", "dexport: interrupted")):
        return "error"
    if line.startswith("dexport: warning:"):
        return "warning"
    return "info"


class LogStream(io.TextIOBase):
    """A text stream standing in for stderr: every complete line becomes a log record."""

    def __init__(self, raw: IO[str]) -> None:
        self.raw = raw
        self._pending = ""
        self._traceback = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        # A terminal bar would redraw one line many times: with records, plain lines instead.
        return False

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(line.rstrip("\r"))
        return len(text)

    def _line(self, line: str) -> None:
        if line.startswith("Traceback"):
            self._traceback = True  # a bug: keep all of its lines at the error level
        emit("error" if self._traceback else _level_of(line), line, self.raw)

    def flush(self) -> None:
        self.raw.flush()

    def close_pending(self) -> None:
        """Emit a last line that has no newline yet."""
        if self._pending:
            line, self._pending = self._pending, ""
            self._line(line)


@contextlib.contextmanager
def capture_stderr() -> Iterator[None]:
    """While the block runs, route every line written to ``sys.stderr`` through :func:`emit`."""
    if _settings.threshold == LEVELS["info"] and not _settings.json:
        yield  # plain text at the default level: nothing to translate
        return
    saved = sys.stderr
    stream = LogStream(saved)
    sys.stderr = stream
    try:
        yield
    finally:
        stream.close_pending()
        sys.stderr = saved


class CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing (for :mod:`logging` handlers)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
