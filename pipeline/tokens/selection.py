"""What to export: sequences, batches, ranges, everything, or corpus documents.

A selection is checked against the data before anything is written and then cut into chunks
of at most ``chunk_size`` records; chunk ``k`` becomes part file ``k``, so part names depend
on the selection and the chunk size only — never on the cluster. Batch selections cut at batch
boundaries so a nested batch never spans two parts. An id or range outside the data raises
:class:`~pipeline.errors.SelectionOutOfRange` (a ``UserError`` and an ``IndexError``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.errors import SelectionOutOfRange, UserError

KINDS = ("all", "sequences", "sequence_range", "batches", "batch_range", "documents")


@dataclass(frozen=True)
class Chunk:
    """One unit of work: record ids (samples or documents) and their batch ids."""

    part: int
    ids: np.ndarray
    batch_ids: np.ndarray | None


@dataclass(frozen=True)
class Selection:
    """A checked selection over ``total`` samples (or documents)."""

    kind: str
    # For explicit lists the ids themselves; for ranges a ``(start, stop)`` pair in records.
    ids: np.ndarray | None
    start: int
    stop: int
    batch_size: int | None = None

    @property
    def has_batches(self) -> bool:
        """True when records carry a ``batch_id``."""
        return self.kind in ("batches", "batch_range")

    @property
    def over_documents(self) -> bool:
        """True when records are whole corpus documents (no training order)."""
        return self.kind == "documents"

    def __len__(self) -> int:
        return len(self.ids) if self.ids is not None else self.stop - self.start

    def chunk_step(self, chunk_size: int) -> int:
        """Records per chunk: ``chunk_size``, rounded down to whole batches for batch kinds."""
        if self.has_batches:
            return max(1, chunk_size // self.batch_size) * self.batch_size
        return chunk_size

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """Yield chunks of at most ``chunk_size`` records (whole batches for batch kinds)."""
        step = self.chunk_step(chunk_size)
        n = len(self)
        for part, lo in enumerate(range(0, n, step)):
            hi = min(lo + step, n)
            if self.ids is not None:
                ids = self.ids[lo:hi]
            else:
                ids = np.arange(self.start + lo, self.start + hi, dtype=np.int64)
            batch_ids = ids // self.batch_size if self.has_batches else None
            yield Chunk(part, ids, batch_ids)


def _parse_range(text: str, flag: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise UserError(
            f"{flag} {text!r} is not a range; write START:END (start inclusive, end exclusive), "
            "e.g. 100:200"
        ) from None
    return lo, hi


def _parse_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r} is not a list of integers; write e.g. 3,5,7") from None


def parse_cli_selection(
    kind: str, value: str | None
) -> tuple[str, list[int] | tuple[int, int] | None]:
    """Turn a command-line flag value into ``(kind, ids-or-range)``."""
    flag = "--" + kind.replace("_", "-")
    if kind == "all":
        return kind, None
    if kind in ("sequences", "batches"):
        return kind, _parse_list(value or "", flag)
    return kind, _parse_range(value or "", flag)


def make_selection(
    kind: str,
    value: list[int] | tuple[int, int] | np.ndarray | None,
    *,
    num_samples: int,
    num_documents: int,
    batch_size: int | None = None,
) -> Selection:
    """Check a selection against the data; every problem is reported in one UserError."""
    if kind not in KINDS:
        raise UserError(f"unknown selection {kind!r}; use one of {', '.join(KINDS)}")
    if kind in ("batches", "batch_range") and (batch_size is None or batch_size <= 0):
        raise UserError(
            "batch selections need the global batch size; pass --batch-size B (or batch_size=B)"
        )
    total = num_documents if kind == "documents" else num_samples
    unit = "document" if kind == "documents" else "sample"
    if kind == "all":
        return Selection(kind, None, 0, total)
    if kind in ("sequences", "batches"):
        ids = np.asarray(value if value is not None else [], dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            raise UserError(f"--{kind} needs at least one id")
        if kind == "batches":
            n_batches = total // batch_size
            bad = ids[(ids < 0) | (ids >= n_batches)]
            if len(bad):
                raise SelectionOutOfRange(
                    f"batch {int(bad[0])} is out of range: {total} samples make {n_batches} full "
                    f"batches of {batch_size} (0..{n_batches - 1})"
                )
            ids = (ids[:, None] * batch_size + np.arange(batch_size)).reshape(-1)
        else:
            bad = ids[(ids < 0) | (ids >= total)]
            if len(bad):
                raise SelectionOutOfRange(
                    f"{unit} {int(bad[0])} is out of range: there are {total} {unit}s "
                    f"(0..{total - 1})"
                )
        return Selection(kind, ids, 0, len(ids), batch_size)
    lo, hi = (int(x) for x in value)
    flag = "--" + kind.replace("_", "-")
    if lo >= hi:
        raise SelectionOutOfRange(
            f"{flag} {lo}:{hi} is empty: the start must be below the end (START:END, the end is "
            "exclusive)"
        )
    if kind == "batch_range":
        n_batches = total // batch_size
        if not 0 <= lo < hi <= n_batches:
            raise SelectionOutOfRange(
                f"{flag} {lo}:{hi} is outside 0:{n_batches} ({total} samples make {n_batches} full "
                f"batches of {batch_size}); the end is exclusive"
            )
        return Selection(kind, None, lo * batch_size, hi * batch_size, batch_size)
    if not 0 <= lo < hi <= total:
        raise SelectionOutOfRange(
            f"{flag} {lo}:{hi} is outside 0:{total} (there are {total} {unit}s); the start must be "
            "below the end, which is exclusive"
        )
    return Selection(kind, None, lo, hi)
