"""Compiled CPU kernel: token windows -> UTF-8 bytes through a :class:`~gpu.byte_table.ByteTable`.

One pass over the windows (flat tokens + int64 offsets) writes every window's bytes into one
buffer and its end offset, applying the whole-window rules as it goes:

- skipped ids contribute nothing and do not count as the first token;
- a run of byte-fallback bytes (``<0xNN>``) becomes its UTF-8 text when the run is valid, else
  one U+FFFD per byte of the run (``tokenizers``' ByteFallback); a skipped special token inside
  the run does not break it;
- with a lossy table (ByteLevel) the window's bytes are decoded as UTF-8 with replacement of
  each maximal invalid subpart by U+FFFD — the rule of Python's ``'replace'`` and Rust's
  ``from_utf8_lossy``. Only the bytes of runs of partial tokens are scanned, each run as it
  ends: every other non-empty token is valid UTF-8 on its own and starts on a character
  boundary, so an invalid subpart never crosses a run's ends, and repairing the run alone is
  repairing the window (an empty token leaves the run open: bytes on both sides of it meet);
- up to ``strip_count`` leading ``strip_char`` characters are dropped;
- optional rewrite rules (transformers' ``clean_up_tokenization``) run last, in order, each as
  a non-overlapping left-to-right replace (``str.replace`` semantics; every pattern is ASCII,
  so matching bytes is matching characters).

The output buffer is sized from the table (sum of token lengths plus a little per window);
replacement characters can need up to three bytes per input byte, so a chunk that does not fit
is run again with the worst-case size.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from gpu.byte_table import KIND_BYTE, KIND_PARTIAL, KIND_SKIP, ByteTable
from gpu.text_escape import JSON_ESCAPES as _ESCAPES
from gpu.text_escape import put_escaped
from gpu.unaligned import load_u64, store_u64
from gpu.utf8 import first_invalid, replace_invalid

# Transformers' clean_up_tokenization, in its order.
CLEANUP_RULES: tuple[tuple[bytes, bytes], ...] = (
    (b" .", b"."),
    (b" ?", b"?"),
    (b" !", b"!"),
    (b" ,", b","),
    (b" ' ", b"'"),
    (b" n't", b"n't"),
    (b" 'm", b"'m"),
    (b" 's", b"'s"),
    (b" 've", b"'ve"),
    (b" 're", b"'re"),
)

_SLACK_PER_WINDOW = 16
# Below this many windows per thread, starting threads costs more than it saves.
_MIN_WINDOWS_PER_THREAD = 8


def pack_rules(rules: tuple[tuple[bytes, bytes], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rewrite rules as arrays for the kernel: concatenated patterns+replacements and offsets.

    Returns ``(data, pat_off, rep_off)``: rule ``r`` replaces ``data[pat_off[r]:pat_off[r+1]]``
    by ``data[rep_off[r]:rep_off[r+1]]``; replacements must not be longer than patterns.
    """
    data = bytearray()
    pat_off, rep_off = [0], [0]
    pats = bytearray()
    for pat, rep in rules:
        if len(rep) > len(pat):
            raise ValueError("a rewrite rule may not lengthen the text")
        pats += pat
        pat_off.append(len(pats))
    data += pats
    base = len(data)
    for _, rep in rules:
        data += rep
        rep_off.append(len(data) - base)
    rep_arr = np.asarray(rep_off, dtype=np.int64) + base
    return (
        np.frombuffer(bytes(data), dtype=np.uint8).copy(),
        np.asarray(pat_off, dtype=np.int64),
        rep_arr,
    )


@numba.njit(cache=True, nogil=True)
def _flush_run(out, run_start, pos, ws, cap, strip_char, strip_left, json, escapes):
    """Finish a byte-fallback run ``out[run_start:pos]`` (raw bytes). Returns
    ``(pos, strip_left)``, pos -1 when ``cap`` is too small."""
    if first_invalid(out, run_start, pos) == pos:
        if strip_left > 0 and run_start == ws:
            k = run_start
            while k < pos and strip_left > 0 and out[k] == strip_char:
                k += 1
                strip_left -= 1
            if k < pos:
                strip_left = 0
            if k > run_start:
                for q in range(pos - k):
                    out[run_start + q] = out[k + q]
                pos -= k - run_start
        if json:
            pos = _escape_in_place(out, run_start, pos, cap, escapes)
        return pos, strip_left
    n = pos - run_start
    if run_start + 3 * n > cap:
        return -1, strip_left
    for q in range(n):
        out[run_start + 3 * q] = 0xEF
        out[run_start + 3 * q + 1] = 0xBF
        out[run_start + 3 * q + 2] = 0xBD
    if run_start == ws:
        strip_left = 0
    return run_start + 3 * n, strip_left


@numba.njit(cache=True, nogil=True)
def _escape_in_place(out, start, end, cap, escapes):
    """JSON-escape ``out[start:end]`` in place (from the back, as it only grows); returns the
    new end, -1 when ``cap`` is too small. ``escapes``: ``(extra, short, hex digits)``."""
    extra, short, hexdigits = escapes
    grow = 0
    for q in range(start, end):
        grow += extra[out[q]]
    if grow == 0:
        return end
    if end + grow > cap:
        return -1
    dst = end + grow
    for q in range(end - 1, start - 1, -1):
        c = out[q]
        dst -= 1 + extra[c]
        put_escaped(out, dst, c, extra, short, hexdigits)
    return end + grow


@numba.njit(cache=True, nogil=True)
def _put(src, start, end, out, pos, cap):
    """Copy ``src[start:end]`` to ``out[pos:]``; returns the end, -1 when ``cap`` is too small."""
    if pos + end - start > cap:
        return -1
    for q in range(end - start):
        out[pos + q] = src[start + q]
    return pos + end - start


@numba.njit(cache=True, nogil=True)
def _rewrite(out, start, end, rules, pat_off, rep_off):
    """Apply each rule in order to ``out[start:end]`` in place; returns the new end."""
    for r in range(pat_off.shape[0] - 1):
        p0, p1 = pat_off[r], pat_off[r + 1]
        r0, r1 = rep_off[r], rep_off[r + 1]
        plen = p1 - p0
        first = rules[p0]
        read, write = start, start
        while read < end:
            if out[read] == first and read + plen <= end:
                hit = True
                for q in range(1, plen):
                    if out[read + q] != rules[p0 + q]:
                        hit = False
                        break
                if hit:
                    for q in range(r1 - r0):
                        out[write + q] = rules[r0 + q]
                    write += r1 - r0
                    read += plen
                    continue
            out[write] = out[read]
            write += 1
            read += 1
        end = write
    return end


@numba.njit(cache=True, nogil=True, inline="always")
def _form_byte(entry, data, a, q):
    """Byte ``q`` of a form: inline in ``entry`` when ``a < 0``, else ``data[a + q]``."""
    if a < 0:
        return np.uint8((entry >> np.uint64(8 * q)) & np.uint64(0xFF))
    return data[a + q]


@numba.njit(cache=True, nogil=True)
def _repair(out, start, end, cap):
    """Replace invalid UTF-8 in ``out[start:end]``; returns the end, -1 when ``cap`` is too
    small."""
    bad = first_invalid(out, start, end)
    if bad == end:
        return end
    return replace_invalid(out, bad, end, cap)


@numba.njit(cache=True, nogil=True)
def _decode_into(
    tokens,
    offsets,
    rest_tab,
    first_tab,
    data,
    strip_char,
    strip_count,
    rules,
    pat_off,
    rep_off,
    json,
    escapes,
    frames,
    out,
    cap,
    out_off,
):
    """Decode all windows into ``out`` (``cap`` usable bytes; the array has 16 more so that
    8-byte stores may run past the end); returns -1, or the window that did not fit.

    ``json``: the table holds JSON-escaped forms; each window is written as a JSON string
    literal (byte-fallback runs are escaped as they end). ``frames``: ``(before data, before
    offsets, after data, after offsets)``; window ``i`` is written between ``before[i]`` and
    ``after[i]``.
    """
    vocab = rest_tab.shape[0]
    b_data, b_off, a_data, a_off = frames
    framed = b_off.shape[0] > 1
    pos = 0
    out_off[0] = 0
    for w in range(offsets.shape[0] - 1):
        if framed:
            pos = _put(b_data, b_off[w], b_off[w + 1], out, pos, cap)
            if pos < 0:
                return w
        if json:
            if pos >= cap:
                return w
            out[pos] = 0x22
            pos += 1
        ws = pos
        first = True
        strip_left = strip_count
        run_start = -1
        partial_start = -1  # output position where the current run of partial tokens began
        # Nothing pending (no run open, past the first form and the strip): a text form of at
        # most 7 bytes is then one 8-byte store, without the checks below (most tokens).
        plain = False
        for j in range(offsets[w], offsets[w + 1]):
            t = np.int64(tokens[j])
            if t < 0 or t >= vocab:
                continue  # ids the tokenizer does not know decode to nothing
            if plain:
                entry = rest_tab[t]
                top = entry >> 56
                if top < 8:  # kind text, length top, bytes inline
                    if pos + np.int64(top) > cap:
                        return w
                    store_u64(out, pos, entry)
                    pos += np.int64(top)
                    continue
            else:
                entry = first_tab[t] if first else rest_tab[t]
                top = entry >> 56
            kind = top >> 4
            if kind == KIND_SKIP:
                continue
            first = False
            if kind == KIND_BYTE:
                if partial_start >= 0:
                    pos = _repair(out, partial_start, pos, cap)
                    if pos < 0:
                        return w
                    partial_start = -1
                if run_start < 0:
                    run_start = pos
                if pos >= cap:
                    return w
                out[pos] = entry & 0xFF
                pos += 1
                plain = False
                continue
            if run_start >= 0:
                pos, strip_left = _flush_run(
                    out, run_start, pos, ws, cap, strip_char, strip_left, json, escapes
                )
                if pos < 0:
                    return w
                run_start = -1
            n = np.int64(top & 0xF)
            a = np.int64(-1)
            if n == 15:
                a = np.int64((entry >> 16) & 0xFFFFFFFFFF)
                n = np.int64(entry & 0xFFFF)
            if kind == KIND_PARTIAL:
                if partial_start < 0:
                    partial_start = pos
            elif partial_start >= 0 and n > 0:  # an empty token does not end the run
                pos = _repair(out, partial_start, pos, cap)
                if pos < 0:
                    return w
                partial_start = -1
            if pos + n > cap:
                return w
            if strip_left > 0 and pos == ws:
                q = 0
                while q < n and strip_left > 0 and _form_byte(entry, data, a, q) == strip_char:
                    q += 1
                    strip_left -= 1
                if q < n:
                    strip_left = 0
                for k in range(q, n):
                    out[pos] = _form_byte(entry, data, a, k)
                    pos += 1
            elif a < 0:
                store_u64(out, pos, entry)  # 7 bytes of text; the 8th is overwritten later
                pos += n
            else:
                for q in range(0, n, 8):
                    store_u64(out, pos + q, load_u64(data, a + q))
                pos += n
            plain = run_start < 0 and partial_start < 0 and (strip_left == 0 or pos > ws)
        if run_start >= 0:
            pos, strip_left = _flush_run(
                out, run_start, pos, ws, cap, strip_char, strip_left, json, escapes
            )
            if pos < 0:
                return w
        if partial_start >= 0:
            pos = _repair(out, partial_start, pos, cap)
            if pos < 0:
                return w
        if pat_off.shape[0] > 1:
            pos = _rewrite(out, ws, pos, rules, pat_off, rep_off)
        if json:
            if pos >= cap:
                return w
            out[pos] = 0x22
            pos += 1
        if framed:
            pos = _put(a_data, a_off[w], a_off[w + 1], out, pos, cap)
            if pos < 0:
                return w
        out_off[w + 1] = pos
    return -1


@numba.njit(cache=True, nogil=True)
def _raw_size(tokens, sizes):
    total = 0
    vocab = sizes.shape[0]
    for j in range(tokens.shape[0]):
        t = tokens[j]
        if 0 <= t < vocab:
            total += sizes[t]
    return total


Frames = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
_NO_FRAME = (np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64))


def decode_windows_cpu(
    table: ByteTable,
    tokens: np.ndarray,
    offsets: np.ndarray,
    rules: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    threads: int = 1,
    *,
    json: bool = False,
    frames: Frames | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode windows ``tokens[offsets[i]:offsets[i+1]]`` with the compiled kernel.

    ``tokens``: 1-D integer array (any int dtype); ``offsets``: int64, non-decreasing, ``n+1``.
    ``rules``: packed rewrite rules (:func:`pack_rules`) applied to each window, or None.
    ``threads`` > 1 splits the windows into that many blocks decoded concurrently (the kernel
    releases the GIL) and joins the results. ``json``: ``table`` is the JSON-escaped table
    (:meth:`ByteTable.json_escaped`) and each window is written as a JSON string literal
    (``rules`` must be :func:`json_safe_rules`). ``frames``: ``(before, after)`` byte columns
    (``(data, offsets)``, one row per window) written around each window. Returns ``(bytes
    uint8, offsets int64 [n+1])`` of the (framed) windows.
    """
    if rules is None:
        rules = pack_rules(())
    n = offsets.shape[0] - 1
    if frames is not None:
        (b_data, b_off), (a_data, a_off) = frames
        if b_off.shape[0] != n + 1 or a_off.shape[0] != n + 1:
            raise ValueError("frames must have one row per window")
    blocks = max(1, min(int(threads), n // _MIN_WINDOWS_PER_THREAD))

    def block(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        framing = (*_NO_FRAME, *_NO_FRAME)
        if frames is not None:
            framing = (b_data, b_off[lo : hi + 1], a_data, a_off[lo : hi + 1])
        return _decode_block(table, tokens, offsets[lo : hi + 1], rules, json, framing)

    if blocks == 1:
        return block(0, n)
    cuts = np.linspace(0, n, blocks + 1).astype(np.int64)
    with ThreadPoolExecutor(blocks) as pool:
        parts = list(pool.map(lambda k: block(cuts[k], cuts[k + 1]), range(blocks)))
    out_off = np.empty(n + 1, dtype=np.int64)
    out_off[0] = 0
    base = 0
    for k, (data, offs) in enumerate(parts):
        out_off[cuts[k] + 1 : cuts[k + 1] + 1] = offs[1:] + base
        base += data.shape[0]
    return np.concatenate([data for data, _ in parts]), out_off


def json_safe_rules(rules: tuple[tuple[bytes, bytes], ...]) -> bool:
    """Whether rewrite ``rules`` give the same result on JSON-escaped text as on the text: no
    pattern or replacement holds a byte JSON escapes, and no pattern starts with a byte that
    can follow a backslash in an escape (so no match starts or ends inside one)."""
    inside_escape = set(b'"\\/bfnrtu0123456789abcdef')
    for pat, rep in rules:
        if any(c < 0x20 or c in b'"\\' for c in pat + rep) or (pat and pat[0] in inside_escape):
            return False
    return True


def _decode_block(
    table: ByteTable,
    tokens: np.ndarray,
    offsets: np.ndarray,
    rules: tuple[np.ndarray, np.ndarray, np.ndarray],
    json: bool,
    frames: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    n = offsets.shape[0] - 1
    rest_tab, first_tab, data = table.packed
    raw = int(_raw_size(tokens[offsets[0] : offsets[n]], table.rest_sizes))
    first_extra = table.max_first_extra * n
    framing = 2 * n if json else 0
    b_off, a_off = frames[1], frames[3]
    if b_off.shape[0] > 1:
        framing += int(b_off[-1] - b_off[0] + a_off[-1] - a_off[0])
    # Worst case: every byte replaced by a 3-byte U+FFFD, or (JSON) a byte-fallback byte
    # escaped as \u00XX.
    worst = 6 if json else 3
    attempts = (
        raw + first_extra + _SLACK_PER_WINDOW * n + framing + 64,
        worst * (raw + first_extra) + framing + 64,
    )
    out_off = np.empty(n + 1, dtype=np.int64)
    for cap in attempts:
        out = np.empty(cap + 16, dtype=np.uint8)
        failed = _decode_into(
            tokens,
            offsets,
            rest_tab,
            first_tab,
            data,
            table.strip_char,
            table.strip_count,
            *rules,
            json,
            _ESCAPES,
            frames,
            out,
            cap,
            out_off,
        )
        if failed < 0:
            return out[: out_off[n]], out_off
    raise AssertionError("detokenizer output exceeded its worst-case size")  # pragma: no cover
