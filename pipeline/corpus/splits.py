"""Train/validation/test splits decided per record from a stable key and a seed.

Hash mode (default): a record's split depends only on its key (a chosen id field, else its
text) and the seed: the key's 64-bit hash (:mod:`gpu.hashing`) is compared with cut points
``floor(c_k * 2**64)`` of the cumulative ratios ``c_k``. A record therefore lands in the same
split whatever the partitioning, the number of workers or the run, and identical texts always
share a split (no train/test leakage through exact duplicates). Split sizes follow the ratios
up to sampling noise.

Exact mode (``--exact-counts``): split sizes are exact. A first pass hashes every valid record;
records are ranked by ``(hash, file, offset)`` over the whole input and cut at the exact counts
(largest-remainder rounding of ``ratio * total``, or absolute counts such as
``train=rest,validation=500,test=500``). The ranking does not depend on the partitioning either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import orjson

from gpu.array_ops import astype
from gpu.hashing import ALGORITHM, bucket, hash_keys
from pipeline.errors import UserError
from pipeline.formats.schema import MISSING

DEFAULT_NAMES = {1: ("train",), 2: ("train", "test"), 3: ("train", "validation", "test")}
NAME = re.compile(r"^[A-Za-z0-9_]+$")
Boundary = tuple[int, int, int] | None  # (hash, file rank, offset) of a split's first record


@dataclass(frozen=True)
class SplitSpec:
    """Names and sizes of the splits, the seed, the key field and the mode."""

    names: tuple[str, ...]
    ratios: tuple[Fraction, ...] | None  # ratio mode
    counts: tuple[int | None, ...] | None  # absolute counts (exact mode; None = the rest)
    seed: int = 42
    key: str | None = None  # dotted input field; None = the text
    exact: bool = False

    def thresholds(self) -> list[int]:
        """Hash cut points between consecutive splits (hash mode)."""
        cuts, total = [], Fraction(0)
        for r in self.ratios[:-1]:
            total += r
            cuts.append(min((total.numerator << 64) // total.denominator, (1 << 64) - 1))
        return cuts

    def as_dict(self) -> dict[str, Any]:
        """Description for the manifest and ``dataset_stats.json``."""
        sizes: dict[str, Any]
        if self.ratios is not None:
            sizes = {n: float(r) for n, r in zip(self.names, self.ratios, strict=True)}
        else:
            sizes = {
                n: ("rest" if c is None else c)
                for n, c in zip(self.names, self.counts, strict=True)
            }
        return {
            "names": list(self.names),
            "splits": sizes,
            "seed": self.seed,
            "key": self.key or "text",
            "mode": "exact" if self.exact else "hash",
            "hash": ALGORITHM,
        }


def parse_split(
    text: str, *, seed: int = 42, key: str | None = None, exact: bool = False
) -> SplitSpec:
    """Parse ``0.95,0.03,0.02`` or ``train=0.95,validation=0.03,test=0.02`` (or counts, exact)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    problems: list[str] = []
    if not items:
        raise UserError("--split is empty; pass ratios such as 0.95,0.03,0.02")
    named = ["=" in t for t in items]
    if any(named) and not all(named):
        raise UserError(
            f"--split {text!r} mixes named and unnamed values; name all (train=0.95,...) or none"
        )
    if all(named):
        pairs = [tuple(s.strip() for s in t.split("=", 1)) for t in items]
    else:
        if len(items) not in DEFAULT_NAMES:
            raise UserError(
                f"--split {text!r} has {len(items)} values; name them (a=0.5,b=0.3,...) when there "
                "are more than 3"
            )
        pairs = list(zip(DEFAULT_NAMES[len(items)], items, strict=True))
    names = tuple(n for n, _ in pairs)
    for n in names:
        if not NAME.match(n) or n == "rejects":
            problems.append(f"split name {n!r} must be letters, digits or _ (and not 'rejects')")
    if len(set(names)) != len(names):
        problems.append(f"split names repeat in {text!r}")
    values = [v for _, v in pairs]
    is_count = [v == "rest" or (v.isdigit() and int(v) > 1) for v in values]
    if any(is_count):
        counts = _parse_counts(values, problems)
        if not exact:
            problems.append(
                f"--split {text!r} gives record counts; add --exact-counts (or give ratios that "
                "sum to 1)"
            )
        _raise(problems)
        return SplitSpec(names, None, counts, seed, key, True)
    ratios = []
    for v in values:
        try:
            r = Fraction(v)
        except (ValueError, ZeroDivisionError):
            problems.append(f"split value {v!r} is not a number")
            continue
        if r <= 0:
            problems.append(f"split ratio {v} must be greater than 0")
        ratios.append(r)
    if len(ratios) == len(values) and not problems and sum(ratios) != 1:
        if abs(float(sum(ratios)) - 1) > 1e-6:
            problems.append(
                f"split ratios {text!r} sum to {float(sum(ratios)):g}, not 1; e.g. 0.95,0.03,0.02"
            )
        else:  # rounding in user input such as 0.333,0.333,0.333: give the last split the rest
            ratios[-1] = 1 - sum(ratios[:-1])
    _raise(problems)
    return SplitSpec(names, tuple(ratios), None, seed, key, exact)


def _parse_counts(values: list[str], problems: list[str]) -> tuple[int | None, ...]:
    counts: list[int | None] = []
    for v in values:
        if v == "rest":
            counts.append(None)
        elif v.isdigit():
            counts.append(int(v))
        else:
            problems.append(f"split count {v!r} is not a whole number or 'rest'")
    if counts.count(None) > 1:
        problems.append("only one split can be 'rest'")
    return tuple(counts)


def _raise(problems: list[str]) -> None:
    if problems:
        raise UserError("; ".join(problems))


# -- keys ----------------------------------------------------------------------------------
def key_bytes(value: Any) -> bytes | None:
    """Canonical bytes of a key value (None when it is absent or null)."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogatepass")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def hash_mode_assign(spec: SplitSpec, keys: list[bytes], xp: Any = np) -> Any:
    """Split index of each key (hash mode), an int64 array of ``xp``."""
    hashes = hash_keys(keys, spec.seed, xp)
    return bucket(xp, hashes, spec.thresholds())


def key_hashes(spec: SplitSpec, keys: list[bytes]) -> np.ndarray:
    """``uint64`` hashes of keys (exact mode ranks records by them)."""
    return np.asarray(hash_keys(keys, spec.seed))


# -- exact mode ----------------------------------------------------------------------------
def exact_counts(spec: SplitSpec, total: int) -> list[int]:
    """Exact split sizes for ``total`` valid records."""
    if spec.counts is not None:
        fixed = sum(c for c in spec.counts if c is not None)
        if None in spec.counts:
            if fixed > total:
                raise UserError(
                    f"--split asks for {fixed} records but the input has {total} valid records; "
                    "lower the counts"
                )
            return [total - fixed if c is None else c for c in spec.counts]
        if fixed != total:
            raise UserError(
                f"--split counts sum to {fixed} but the input has {total} valid records; make one "
                "split 'rest'"
            )
        return list(spec.counts)
    quotas = [r * total for r in spec.ratios]
    sizes = [int(q) for q in quotas]  # floor (quotas are non-negative)
    # Largest remainder: the records left over go to the largest fractional parts (ties: order).
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - sizes[i]), i))
    for i in order[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes


def exact_boundaries(
    hashes: np.ndarray, files: np.ndarray, offsets: np.ndarray, sizes: list[int]
) -> list[Boundary]:
    """The ``(hash, file, offset)`` of the first record of each split after the first."""
    order = np.lexsort((offsets, files, hashes))
    bounds: list[Boundary] = []
    cut = 0
    for size in sizes[:-1]:
        cut += size
        if cut >= len(order):
            bounds.append(None)
        else:
            i = order[cut]
            bounds.append((int(hashes[i]), int(files[i]), int(offsets[i])))
    return bounds


def exact_mode_assign(
    hashes: Any, files: Any, offsets: Any, bounds: list[Boundary], xp: Any = np
) -> Any:
    """Split index of each record: how many boundaries its ``(hash, file, offset)`` reaches.

    The arrays (uint64 hashes, int64 file ranks and offsets) come from ``xp``, NumPy or the
    backend's array namespace; so does the int64 result.
    """
    out = xp.zeros(hashes.shape, dtype=xp.int64)
    for b in bounds:
        if b is None:
            continue
        bh = xp.asarray(b[0], dtype=xp.uint64)
        bf = xp.asarray(b[1], dtype=xp.int64)
        bo = xp.asarray(b[2], dtype=xp.int64)
        reached = (hashes > bh) | (
            (hashes == bh) & ((files > bf) | ((files == bf) & (offsets >= bo)))
        )
        out = out + astype(xp, reached, xp.int64)
    return out
