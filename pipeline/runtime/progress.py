"""Progress of a run: a bar on a terminal, a plain line every few seconds in logs.

When stderr is a terminal, a tqdm bar; otherwise (Slurm, nohup, Kubernetes logs) one line
every ``interval`` seconds — ``dexport tokens: 12/59 parts (20%), 3.1 parts/s, ETA 15 s`` — and
one when the run ends, so logs show a run's pace without a line per task.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

PLAIN_INTERVAL_S = 5.0


class Progress:
    """Counts finished tasks of one stage and shows them (``enabled=False``: silent)."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "part",
        initial: int = 0,
        enabled: bool = True,
        stream: IO[str] | None = None,
        interval: float = PLAIN_INTERVAL_S,
    ) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.stream = stream or sys.stderr
        self.interval = interval
        self._initial = initial
        self._t0 = self._last = time.monotonic()
        self._printed = -1  # the count of the last plain line written
        self._bar: Any = None
        self._plain = False
        if enabled and total:
            if _isatty(self.stream):
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total, initial=initial, unit=unit, desc=desc, file=self.stream
                )
            else:
                self._plain = True

    def update(self, n: int = 1) -> None:
        """``n`` more tasks finished."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._plain and time.monotonic() - self._last >= self.interval:
            self._line()

    def close(self, *, failed: bool = False) -> None:
        """The stage ended: close the bar, or write the last plain line (none after a failure:
        the error line that follows says what happened)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._plain:
            if not failed and self._printed != self.done:  # not the line just written again
                self._line()
            self._plain = False

    def _line(self) -> None:
        self._printed = self.done
        self._last = now = time.monotonic()
        elapsed = max(now - self._t0, 1e-9)
        rate = (self.done - self._initial) / elapsed
        left = self.total - self.done
        eta = f", ETA {left / rate:.0f} s" if rate > 0 and left > 0 else ""
        pct = 100 * self.done / self.total if self.total else 100
        print(
            f"{self.desc}: {self.done}/{self.total} {self.unit}s ({pct:.0f}%), "
            f"{rate:.1f} {self.unit}s/s{eta}",
            file=self.stream,
            flush=True,
        )


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
