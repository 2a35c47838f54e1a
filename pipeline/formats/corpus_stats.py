"""Corpus statistics that are computed per partition and merged (no second read of the data).

Each partition keeps, per split, exact counters: documents, characters, UTF-8 bytes, words,
tokens (with a tokenizer), a histogram of exact text lengths (characters), domains and quality
buckets. Counters add up, so merging in partition order gives the same numbers (and the same
float sums, bit for bit) whatever the number of workers. Exact percentiles come from the
length histogram.

Words are runs of bytes above 0x20 (separated by ASCII whitespace and control characters),
counted with a vectorized kernel over the packed UTF-8 texts; quality buckets are ``high``
(>= 0.8), ``medium`` (>= 0.6), ``low`` and, when the score is null, ``missing``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HIGH, MEDIUM = 0.8, 0.6
PERCENTILES = (5, 25, 50, 75, 95, 99)


def count_words(buffer: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Words per text in a packed buffer (:func:`gpu.hashing.pack_keys` layout).

    A word is a run of bytes above 0x20: ASCII whitespace and control characters separate
    words (as ``str.split()`` does for whitespace). ``starts`` are the byte offsets where texts
    begin; every text is followed by at least one zero byte, so a word never runs from one
    text into the next. The kernel is :func:`gpu.text_stats.word_counts` (on NumPy here).
    """
    from gpu.text_stats import word_counts

    starts = np.asarray(starts, dtype=np.int64)
    ends = np.append(starts[1:], np.int64(len(buffer)))
    return word_counts(np, buffer, starts, ends)


def words_and_bytes(texts: list[str], batch_bytes: int = 4 << 20) -> tuple[int, int]:
    """Total words and UTF-8 bytes of ``texts`` (the same definitions as the export job)."""
    from gpu.hashing import pack_keys

    words = nbytes = 0
    start = 0
    while start < len(texts):
        stop, size = start, 0
        while stop < len(texts) and (size < batch_bytes or stop == start):
            size += len(texts[stop]) + 8
            stop += 1
        buffer, offsets, lengths = pack_keys(
            [t.encode("utf-8", errors="surrogatepass") for t in texts[start:stop]]
        )
        words += int(count_words(buffer, offsets[:-1] * 8).sum())
        nbytes += int(lengths.sum())
        start = stop
    return words, nbytes


# Quality scores are summed exactly, as integers of 2**-1074 (the smallest float step): the sum
# cannot overflow, and it is the same whatever the partitioning (float sums are not).
SCORE_UNIT_EXPONENT = 1074


def score_units(score: float) -> int:
    """``score`` as an exact integer number of 2**-1074."""
    numerator, denominator = float(score).as_integer_ratio()  # denominator: a power of two
    return numerator << (SCORE_UNIT_EXPONENT - denominator.bit_length() + 1)


def mean_of_units(units: int, count: int) -> float:
    """The mean of ``count`` scores summing to ``units``, correctly rounded to a float."""
    return units / (count << SCORE_UNIT_EXPONENT)


def quality_bucket(score: Any) -> str:
    """``high`` / ``medium`` / ``low`` / ``missing`` for a quality score."""
    if score is None or isinstance(score, bool) or not isinstance(score, int | float):
        return "missing"
    return "high" if score >= HIGH else "medium" if score >= MEDIUM else "low"


@dataclass
class SplitStats:
    """Mergeable statistics of the documents of one split (or of one partition of it)."""

    count: int = 0
    chars: int = 0
    bytes: int = 0
    words: int = 0
    tokens: int | None = None
    lengths: Counter = field(default_factory=Counter)
    domains: Counter = field(default_factory=Counter)
    quality: Counter = field(default_factory=Counter)
    quality_units: int = 0  # exact sum of the scores (see score_units)

    def add(
        self,
        lengths: list[int],
        byte_lengths: int,
        words: int,
        domains: list[Any],
        scores: list[Any],
        tokens: int | None = None,
    ) -> None:
        """Add a batch of documents (lists are per document, in order)."""
        self.add_counted(Counter(lengths), byte_lengths, words, domains, scores, tokens)

    def add_counted(
        self,
        length_counts: Mapping[int, int],
        byte_lengths: int,
        words: int,
        domains: list[Any],
        scores: list[Any],
        tokens: int | None = None,
    ) -> None:
        """Add a batch of documents given as a histogram of their lengths (characters →
        documents), as the partition kernels count them; ``domains`` and ``scores`` are per
        document, in order (the quality sum adds scores in that order, so floats agree)."""
        self.count += sum(length_counts.values())
        self.chars += sum(length * n for length, n in length_counts.items())
        self.bytes += byte_lengths
        self.words += words
        self.lengths.update(length_counts)
        self.domains.update("unknown" if d is None else str(d) for d in domains)
        for s in scores:
            b = quality_bucket(s)
            self.quality[b] += 1
            if b != "missing":
                self.quality_units += score_units(s)
        if tokens is not None:
            self.tokens = (self.tokens or 0) + tokens

    def merge(self, other: SplitStats) -> SplitStats:
        """Add ``other`` into this one (in place) and return self."""
        self.count += other.count
        self.chars += other.chars
        self.bytes += other.bytes
        self.words += other.words
        if other.tokens is not None:
            self.tokens = (self.tokens or 0) + other.tokens
        self.lengths.update(other.lengths)
        self.domains.update(other.domains)
        self.quality.update(other.quality)
        self.quality_units += other.quality_units
        return self

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form (lists of pairs, since JSON object keys are strings)."""
        return {
            "count": self.count,
            "chars": self.chars,
            "bytes": self.bytes,
            "words": self.words,
            "tokens": self.tokens,
            # Flat [length, count, ...]: progress records copy this list, flat ints copy fastest.
            "lengths": [x for pair in sorted(self.lengths.items()) for x in pair],
            "domains": sorted(self.domains.items()),
            "quality": sorted(self.quality.items()),
            # An integer of up to ~1100 bits: as text (JSON writers stop at 64-bit integers).
            "quality_units": str(self.quality_units),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SplitStats:
        """Inverse of :meth:`to_json`."""
        return cls(
            data["count"],
            data["chars"],
            data["bytes"],
            data["words"],
            data["tokens"],
            Counter(dict(zip(data["lengths"][::2], data["lengths"][1::2], strict=True))),
            Counter(dict(data["domains"])),
            Counter(dict(data["quality"])),
            _units(data),
        )

    def summary(self) -> dict[str, Any]:
        """Per-split figures of ``dataset_stats.json``."""
        out: dict[str, Any] = {
            "count": self.count,
            "avg_text_length": round(self.chars / self.count, 2) if self.count else 0,
            "total_chars": self.chars,
            "total_words": self.words,
            "total_bytes": self.bytes,
            "min_text_length": min(self.lengths) if self.lengths else 0,
            "max_text_length": max(self.lengths) if self.lengths else 0,
        }
        if self.tokens is not None:
            out["total_tokens"] = self.tokens
            out["avg_tokens"] = round(self.tokens / self.count, 2) if self.count else 0
        return out


def _units(data: dict[str, Any]) -> int:
    """The exact score sum of a stored :meth:`SplitStats.to_json` (progress records written by
    an older version kept a float sum: it is taken as it was)."""
    if "quality_units" in data:
        return int(data["quality_units"])
    return score_units(float(data["quality_sum"] or 0.0))


def length_stats(lengths: Counter) -> dict[str, Any]:
    """min / max / mean / std / percentiles of text lengths (exact, from the histogram)."""
    if not lengths:
        return {"min": 0, "max": 0, "mean": 0, "std": 0, **{f"p{p}": 0 for p in PERCENTILES}}
    values = np.array(sorted(lengths), dtype=np.float64)
    counts = np.array([lengths[int(v)] for v in values], dtype=np.float64)
    n = counts.sum()
    mean = float((values * counts).sum() / n)
    std = float(np.sqrt(((values - mean) ** 2 * counts).sum() / n))
    cum = np.cumsum(counts)
    out: dict[str, Any] = {
        "min": int(values[0]),
        "max": int(values[-1]),
        "mean": round(mean, 2),
        "std": round(std, 2),
    }
    for p in PERCENTILES:
        rank = max(1, int(np.ceil(p / 100 * n)))  # nearest-rank percentile
        out[f"p{p}"] = int(values[np.searchsorted(cum, rank)])
    out["median"] = out["p50"]
    return out


def dataset_stats(
    splits: dict[str, SplitStats],
    rejected: Counter,
    accounting: dict[str, int],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``dataset_stats.json``."""
    total = SplitStats()
    for s in splits.values():
        total.merge(s)
    scored = total.count - total.quality.get("missing", 0)
    quality = {k: total.quality.get(k, 0) for k in ("high", "medium", "low")}
    if total.quality.get("missing"):
        quality["missing"] = total.quality["missing"]
    stats: dict[str, Any] = {
        "total_documents": total.count,
        "splits": {name: s.summary() for name, s in splits.items()},
        "total_chars": total.chars,
        "total_words": total.words,
        "domain_distribution": dict(sorted(total.domains.items(), key=lambda kv: (-kv[1], kv[0]))),
        "quality_distribution": quality,
        "quality_score_mean": round(mean_of_units(total.quality_units, scored), 4)
        if scored
        else None,
        "text_length_stats": length_stats(total.lengths),
        "rejected": dict(sorted(rejected.items())),
        "total_rejected": sum(rejected.values()),
        "accounting": accounting,
    }
    if total.tokens is not None:
        stats["total_tokens"] = total.tokens
    if extra:
        stats.update(extra)
    return stats
