"""The columnar half of a corpus partition, on the task's compute backend.

The host parses the records and maps them to the schema (they are JSON values of any shape:
Python objects, so that every reject keeps its exact reason and every value round-trips). What
is left is columnar, and runs on the backend's arrays and dataframes — NumPy and pandas on CPU,
CuPy and cuDF on a GPU, the same code for both:

- the texts, packed as UTF-8 (:func:`gpu.hashing.pack_keys` layout), are checked for empty,
  whitespace-only and NUL-holding texts by one kernel; the few it flags are checked exactly on
  the host (the reason and its detail are the same as a record-by-record check gives);
- split hashes, words, characters and bytes per text are arrays;
- each split's statistics (length histogram, bytes, words, domains, quality buckets) are
  group-bys of one dataframe of those columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu.array_ops import astype, concat, indices_where
from gpu.backend import Backend
from gpu.hashing import hash_keys, hash_packed, pack_keys
from gpu.text_stats import packed_text_suspects, packed_word_counts
from pipeline.formats.corpus_stats import HIGH, MEDIUM, SplitStats, score_units
from pipeline.formats.record_checks import check_text

BATCH_BYTES = 4 << 20  # texts packed per kernel call (keeps temporaries small and warm)
QUALITY_BUCKETS = ("high", "medium", "low", "missing")  # codes 0..3 of the quality column


@dataclass
class TextColumns:
    """Per text, arrays of the backend: split hash, words, characters, UTF-8 bytes, and whether
    the text may be unusable (flagged for an exact check on the host)."""

    hashes: Any
    words: Any
    chars: Any
    nbytes: Any
    suspect: Any

    def take(self, xp: Any, keep: Any) -> TextColumns:
        """The columns of the texts at positions ``keep``."""
        return TextColumns(*(xp.take(c, keep) for c in self.__dict__.values()))


def text_columns(
    texts: list[str],
    encoded: list[bytes],
    keys: list[bytes],
    seed: int,
    key_is_text: bool,
    backend: Backend,
) -> TextColumns:
    """Hashes, counts and flags of ``texts`` (their UTF-8 in ``encoded``; split keys in
    ``keys`` unless the text is the key), computed with the backend's array namespace.

    Texts are packed on the host in batches of about ``BATCH_BYTES`` (small temporaries the
    allocator keeps warm) and each batch goes to the backend once. Character counts are
    ``len`` of the Python strings (stored in the string: cheaper than any kernel).
    """
    xp = backend.xp
    n = len(texts)
    pieces: list[tuple[Any, ...]] = []
    start = 0
    while start < n:
        stop, size = start, 0
        while stop < n and (size < BATCH_BYTES or stop == start):
            size += len(encoded[stop]) + 8
            stop += 1
        buffer, offsets, lengths = pack_keys(encoded[start:stop])
        data, offs, lens = (backend.from_numpy(a) for a in (buffer, offsets, lengths))
        hashes = (
            hash_packed(xp, backend.from_numpy(buffer.view("<u8")), offs, lens, seed)
            if key_is_text
            else None
        )
        pieces.append(
            (
                hashes,
                packed_word_counts(xp, data, offs),
                astype(xp, lens, xp.int64),
                packed_text_suspects(xp, data, offs, lens),
            )
        )
        start = stop
    if not pieces:
        empty = xp.zeros(0, dtype=xp.int64)
        return TextColumns(
            xp.zeros(0, dtype=xp.uint64), empty, empty, empty, xp.zeros(0, dtype=xp.bool)
        )
    words, nbytes, suspect = (concat(xp, [p[i] for p in pieces]) for i in (1, 2, 3))
    hashes = concat(xp, [p[0] for p in pieces]) if key_is_text else hash_keys(keys, seed, xp)
    chars = backend.from_numpy(np.fromiter(map(len, texts), np.int64, count=n))
    return TextColumns(hashes, words, chars, nbytes, suspect)


def confirm_suspects(
    texts: list[str], columns: TextColumns, backend: Backend
) -> dict[int, tuple[str, str]]:
    """``{position: (reason, detail)}`` of the flagged texts that are indeed unusable."""
    flagged = backend.asnumpy(indices_where(backend.xp, columns.suspect)).tolist()
    problems = {}
    for i in flagged:
        problem = check_text(texts[i], check_unicode=False)  # surrogates failed encoding already
        if problem is not None:
            problems[i] = problem
    return problems


def quality_values(scores: list[Any]) -> np.ndarray:
    """Quality scores as float64, NaN where a score is missing (null, a boolean, not a number)."""
    return np.fromiter(
        (
            float(s) if type(s) in (int, float) else np.nan  # bool is not a score
            for s in scores
        ),
        np.float64,
        count=len(scores),
    )


def split_stats(
    backend: Backend,
    split_of: Any,
    k: int,
    columns: TextColumns,
    domains: list[Any] | None,
    scores: list[Any] | None,
) -> tuple[list[list[int]], list[SplitStats]]:
    """Members (positions, in input order) and statistics of each of the ``k`` splits.

    One dataframe of the backend holds a row per text (split, characters, bytes, words, and
    the domain and quality bucket when the schema names them); each statistic is a group-by
    on it. The quality sum is exact (integers, on the host; see ``score_units``).
    """
    xp = backend.xp
    table: dict[str, Any] = {
        "split": split_of,
        "chars": columns.chars,
        "nbytes": columns.nbytes,
        "words": columns.words,
    }
    if domains is not None:
        table["domain"] = ["unknown" if d is None else str(d) for d in domains]
    values = None
    if scores is not None:
        values = quality_values(scores)
        device_values = backend.from_numpy(values)
        code = [xp.full(device_values.shape, c, dtype=xp.int8) for c in range(4)]
        table["quality"] = xp.where(
            xp.isnan(device_values),
            code[3],
            xp.where(
                device_values >= HIGH, code[0], xp.where(device_values >= MEDIUM, code[1], code[2])
            ),
        )
    frame = backend.dataframe(table)
    host = backend.frame_to_host
    sums = host(frame.groupby("split", sort=True)[["nbytes", "words"]].sum())
    stats = [SplitStats() for _ in range(k)]
    for s, row in zip(sums.index.tolist(), sums.itertuples(index=False), strict=True):
        stats[s].bytes, stats[s].words = int(row.nbytes), int(row.words)
    for (s, length), n in host(frame.groupby(["split", "chars"], sort=True).size()).items():
        stats[s].lengths[int(length)] = int(n)
    if domains is not None:
        for (s, domain), n in host(frame.groupby(["split", "domain"], sort=True).size()).items():
            stats[s].domains[domain] = int(n)
    if scores is not None:
        for (s, code), n in host(frame.groupby(["split", "quality"], sort=True).size()).items():
            stats[s].quality[QUALITY_BUCKETS[code]] = int(n)
    split_host = backend.asnumpy(split_of)
    members = [np.flatnonzero(split_host == s).tolist() for s in range(k)]
    for s, st in enumerate(stats):
        st.count = sum(st.lengths.values())
        st.chars = sum(length * n for length, n in st.lengths.items())
        if values is not None:
            mine = values[members[s]]
            st.quality_units = sum(map(score_units, mine[~np.isnan(mine)].tolist()))
    return members, stats
