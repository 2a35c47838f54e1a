"""Array operations spelled so that NumPy, CuPy and the strict array-API namespace all run them.

The array API standard is the common ground, but CuPy and older NumPy miss some of its names
(``cumulative_sum``, ``astype`` as a function, ``concat``, ``unique_counts``) and the strict
namespace has nothing else. Each helper uses the standard name when the namespace has it and
the NumPy/CuPy spelling otherwise, so a kernel written with them runs everywhere and a test on
``array_api_strict`` catches any call outside this common ground.
"""

from __future__ import annotations

from typing import Any


def astype(xp: Any, x: Any, dtype: Any) -> Any:
    """``x`` converted to ``dtype`` (a copy only when the dtype differs)."""
    fn = getattr(xp, "astype", None)
    return fn(x, dtype) if fn is not None else x.astype(dtype)


def concat(xp: Any, arrays: list[Any]) -> Any:
    """1-D arrays joined end to end."""
    fn = getattr(xp, "concat", None) or xp.concatenate
    return fn(arrays)


def cumulative_sum(xp: Any, x: Any, dtype: Any = None) -> Any:
    """Running sums of ``x`` with a leading zero (``n + 1`` values), in ``dtype`` if given."""
    if dtype is not None:
        x = astype(xp, x, dtype)
    fn = getattr(xp, "cumulative_sum", None)
    if fn is not None:
        return fn(x, include_initial=True)
    return xp.concatenate([xp.zeros(1, dtype=x.dtype), xp.cumsum(x)])


def segment_sums(xp: Any, running: Any, starts: Any, ends: Any) -> Any:
    """``sum(x[starts[i]:ends[i]])`` per segment, from ``running = cumulative_sum(x)``."""
    return xp.take(running, ends) - xp.take(running, starts)


def unique_counts(xp: Any, x: Any) -> tuple[Any, Any]:
    """Sorted distinct values of ``x`` and how often each occurs."""
    fn = getattr(xp, "unique_counts", None)
    if fn is not None:
        result = fn(x)
        return result.values, result.counts
    return xp.unique(x, return_counts=True)


def indices_where(xp: Any, mask: Any) -> Any:
    """Positions (int64) where a 1-D boolean ``mask`` is true, in increasing order."""
    return astype(xp, xp.nonzero(mask)[0], xp.int64)
