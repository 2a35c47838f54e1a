"""GPU path of the detokenizer: CuPy kernels from token windows to a cuDF string column.

The kernel source below is the same algorithm as :mod:`gpu.detok_kernels` (one thread per
window). It is plain C++ behind a few macros, so the tests also compile it with the host C++
compiler and run it on CPU through :func:`decode_windows_device` with ``xp=numpy``; on a GPU
CuPy compiles it with NVRTC.

Steps (all on the device, nothing goes through host memory but the total size):

1. per-window raw size from the table's form lengths (a gather and a cumulative sum);
2. each window gets a scratch region of 3 x (raw + largest first-form extra) + 16 bytes, enough
   for the worst case (every byte replaced by a 3-byte U+FFFD), and the kernel writes it there;
   a run of partial tokens (lossy tables) that is not valid UTF-8 is copied to the end of the
   region and decoded forward into its place, as the CPU kernel repairs each run;
3. exclusive sum of the written lengths gives the offsets; a second kernel compacts the
   regions into the final buffer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from gpu.byte_table import KIND_BYTE, KIND_PARTIAL, KIND_SKIP, ByteTable

KERNEL_SOURCE = r"""
#ifndef __CUDACC__
#define __global__
#define __device__
struct dim3_ { unsigned int x; };
static dim3_ blockIdx = {0}, blockDim = {1}, gridDim = {1}, threadIdx = {0};
#endif
#ifndef TOKEN_T
#define TOKEN_T long long
#endif
typedef unsigned char u8;
typedef long long i64;
typedef unsigned long long u64;

#define KIND_PARTIAL @KIND_PARTIAL@
#define KIND_BYTE @KIND_BYTE@
#define KIND_SKIP @KIND_SKIP@

/* Length of the valid UTF-8 sequence at b[i] (end exclusive), or minus the length of the
   maximal invalid subpart that one U+FFFD replaces. */
__device__ static i64 seq_len(const u8* b, i64 i, i64 end) {
    u8 c = b[i];
    if (c < 0x80) return 1;
    int need; u8 lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) need = 2;
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else return -1;
    i64 j = i + 1;
    if (j >= end || b[j] < lo || b[j] > hi) return -1;
    j++;
    for (int k = 1; k < need; k++, j++) {
        if (j >= end || b[j] < 0x80 || b[j] > 0xBF) return -(j - i);
    }
    return j - i;
}

__device__ static bool valid_utf8(const u8* b, i64 start, i64 end) {
    for (i64 i = start; i < end;) {
        i64 n = seq_len(b, i, end);
        if (n < 0) return false;
        i += n;
    }
    return true;
}

/* Finish a byte-fallback run out[run:pos]; returns the new end. */
__device__ static i64 flush_run(u8* out, i64 run, i64 pos, i64 ws, int strip_char, i64* strip_left) {
    if (valid_utf8(out, run, pos)) {
        if (*strip_left > 0 && run == ws) {
            i64 k = run;
            while (k < pos && *strip_left > 0 && out[k] == strip_char) { k++; (*strip_left)--; }
            if (k < pos) *strip_left = 0;
            for (i64 q = 0; q < pos - k; q++) out[run + q] = out[k + q];
            pos -= k - run;
        }
        return pos;
    }
    i64 n = pos - run;
    for (i64 q = 0; q < n; q++) { out[run + 3*q] = 0xEF; out[run + 3*q + 1] = 0xBF; out[run + 3*q + 2] = 0xBD; }
    if (run == ws) *strip_left = 0;
    return run + 3 * n;
}

/* Replace each maximal invalid subpart of the partial-token run out[ps:pos] by U+FFFD. The
   run is first copied to the end of the window's region: the region holds 3 bytes per raw
   byte of the window, so neither the copy nor the output growing from ps reaches unread bytes.
   Returns the new end. */
__device__ static i64 repair_run(u8* out, i64 ps, i64 pos, i64 region_end) {
    if (valid_utf8(out, ps, pos)) return pos;
    i64 n = pos - ps, r = region_end - n, wr = ps;
    for (i64 q = 0; q < n; q++) out[r + q] = out[ps + q];
    while (r < region_end) {
        i64 k = seq_len(out, r, region_end);
        if (k > 0) { for (i64 q = 0; q < k; q++) out[wr++] = out[r++]; }
        else { out[wr++] = 0xEF; out[wr++] = 0xBF; out[wr++] = 0xBD; r += -k; }
    }
    return wr;
}

extern "C" __global__ void detok_windows(
    const TOKEN_T* tokens, const i64* offsets, i64 n_windows,
    const u64* rest_meta, const u64* first_meta, i64 vocab, const u8* data,
    int strip_char, i64 strip_count,
    const u8* rules, const i64* pat_off, const i64* rep_off, i64 n_rules,
    u8* out, const i64* region, const i64* region_size, i64* out_len)
{
    for (i64 w = (i64)blockIdx.x * blockDim.x + threadIdx.x; w < n_windows;
         w += (i64)blockDim.x * gridDim.x) {
        i64 ws = region[w], end = ws + region_size[w];
        /* run: start of a byte-fallback run; partial: start of a run of partial tokens (lossy
           tables), repaired as a whole when a non-empty token of another kind ends it. */
        i64 pos = ws, run = -1, partial = -1, strip_left = strip_count;
        bool first = true;
        for (i64 j = offsets[w]; j < offsets[w + 1]; j++) {
            i64 t = (i64)tokens[j];
            if (t < 0 || t >= vocab) continue;
            u64 meta = first ? first_meta[t] : rest_meta[t];
            int kind = (int)(meta & 0xFF);
            if (kind == KIND_SKIP) continue;
            first = false;
            i64 a = (i64)(meta >> 24), n = (i64)((meta >> 8) & 0xFFFF);
            if (kind == KIND_BYTE) {
                if (partial >= 0) { pos = repair_run(out, partial, pos, end); partial = -1; }
                if (run < 0) run = pos;
                out[pos++] = data[a];
                continue;
            }
            if (run >= 0) { pos = flush_run(out, run, pos, ws, strip_char, &strip_left); run = -1; }
            if (kind == KIND_PARTIAL) { if (partial < 0) partial = pos; }
            else if (partial >= 0 && n > 0) { pos = repair_run(out, partial, pos, end); partial = -1; }
            i64 b = a + n;
            if (strip_left > 0 && pos == ws) {
                while (a < b && strip_left > 0 && data[a] == strip_char) { a++; strip_left--; }
                if (a < b) strip_left = 0;
            }
            for (; a < b; a++) out[pos++] = data[a];
        }
        if (run >= 0) pos = flush_run(out, run, pos, ws, strip_char, &strip_left);
        if (partial >= 0) pos = repair_run(out, partial, pos, end);
        for (i64 rr = 0; rr < n_rules; rr++) {
            i64 p0 = pat_off[rr], plen = pat_off[rr + 1] - p0;
            i64 r0 = rep_off[rr], rlen = rep_off[rr + 1] - r0;
            i64 rd = ws, wr = ws;
            while (rd < pos) {
                if (rd + plen <= pos) {
                    bool hit = true;
                    for (i64 q = 0; q < plen; q++) if (out[rd + q] != rules[p0 + q]) { hit = false; break; }
                    if (hit) {
                        for (i64 q = 0; q < rlen; q++) out[wr + q] = rules[r0 + q];
                        wr += rlen; rd += plen; continue;
                    }
                }
                out[wr++] = out[rd++];
            }
            pos = wr;
        }
        out_len[w] = pos - ws;
    }
}

extern "C" __global__ void compact_windows(
    const u8* src, const i64* region, const i64* out_off, i64 n_windows, u8* dst)
{
    for (i64 w = blockIdx.x; w < n_windows; w += gridDim.x) {
        i64 a = region[w], o = out_off[w], len = out_off[w + 1] - o;
        for (i64 k = threadIdx.x; k < len; k += blockDim.x) dst[o + k] = src[a + k];
    }
}
"""  # noqa: E501 (CUDA source kept byte-identical)
for _name, _value in (
    ("KIND_PARTIAL", KIND_PARTIAL),
    ("KIND_BYTE", KIND_BYTE),
    ("KIND_SKIP", KIND_SKIP),
):
    KERNEL_SOURCE = KERNEL_SOURCE.replace(f"@{_name}@", str(_value))

_C_TYPES = {
    np.dtype(np.int8): "signed char",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int16): "short",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.int32): "int",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.int64): "long long",
    np.dtype(np.uint64): "long long",
}

# A launcher runs one kernel of KERNEL_SOURCE: launch(name, n_windows, token_dtype, *args).
Launcher = Callable[..., None]


def decode_windows_device(
    table: ByteTable,
    tokens: Any,
    offsets: Any,
    rules: tuple[np.ndarray, np.ndarray, np.ndarray],
    xp: ModuleType,
    launch: Launcher,
) -> tuple[Any, Any]:
    """Decode windows with KERNEL_SOURCE on arrays of namespace ``xp`` (CuPy, or NumPy with a
    host-compiled launcher in tests). Returns ``(bytes uint8, offsets int64 [n+1])`` in ``xp``."""
    tokens = xp.asarray(tokens)
    offsets = xp.asarray(offsets, dtype=xp.int64)
    n = int(offsets.shape[0]) - 1
    rest_meta, first_meta, data, rest_len = _device_table(table, xp)
    valid = (tokens >= 0) & (tokens < table.vocab_size)
    lengths = xp.where(valid, rest_len[xp.where(valid, tokens, 0).astype(xp.int64)], 0)
    csum = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(lengths, dtype=xp.int64)])
    raw = csum[offsets[1:]] - csum[offsets[:-1]]
    region_size = 3 * (raw + table.max_first_extra) + 16
    region = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(region_size, dtype=xp.int64)])
    scratch = xp.empty(max(int(region[-1]), 1), dtype=xp.uint8)
    out_len = xp.zeros(max(n, 1), dtype=xp.int64)
    rule_data, pat_off, rep_off = (xp.asarray(a) for a in rules)
    launch(
        "detok_windows",
        n,
        tokens.dtype,
        tokens,
        offsets,
        n,
        rest_meta,
        first_meta,
        table.vocab_size,
        data,
        table.strip_char,
        table.strip_count,
        rule_data,
        pat_off,
        rep_off,
        int(pat_off.shape[0]) - 1,
        scratch,
        region,
        region_size,
        out_len,
    )
    out_off = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(out_len[:n], dtype=xp.int64)])
    out = xp.empty(max(int(out_off[-1]), 1), dtype=xp.uint8)
    launch("compact_windows", n, tokens.dtype, scratch, region, out_off, n, out)
    return out[: int(out_off[-1])], out_off


def _device_table(table: ByteTable, xp: ModuleType) -> tuple[Any, Any, Any, Any]:
    """The table's arrays in ``xp`` (cached on the table per namespace)."""
    cache = table.__dict__.setdefault("_device_cache", {})
    if xp.__name__ not in cache:
        rest, first = table.meta
        cache[xp.__name__] = (
            xp.asarray(rest),
            xp.asarray(first),
            xp.asarray(table.packed[2]),
            xp.asarray(np.diff(table.rest_off)),
        )
    return cache[xp.__name__]


@functools.cache
def _cuda_module(c_type: str) -> Any:
    import cupy

    return cupy.RawModule(code=KERNEL_SOURCE, options=("-std=c++14", f"-DTOKEN_T={c_type}"))


def _cupy_launch(name: str, n_windows: int, token_dtype: Any, *args: Any) -> None:
    if n_windows == 0:
        return
    kernel = _cuda_module(_C_TYPES[np.dtype(token_dtype)]).get_function(name)
    threads = 128 if name == "detok_windows" else 256
    blocks = (
        (n_windows + threads - 1) // threads if name == "detok_windows" else min(n_windows, 65535)
    )
    converted = [np.int64(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in args]
    # The one scalar the kernel declares as int (the strip character) is passed as int32.
    if name == "detok_windows":
        converted[7] = np.int32(args[7])
    kernel((blocks,), (threads,), tuple(converted))


def decode_windows_cuda(
    table: ByteTable, tokens: Any, offsets: Any, rules: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[Any, Any]:
    """Decode CuPy windows on the GPU; returns CuPy ``(bytes uint8, offsets int64 [n+1])``."""
    import cupy

    tokens = cupy.asarray(tokens)
    if tokens.dtype == cupy.uint64:
        tokens = tokens.astype(cupy.int64)
    return decode_windows_device(table, tokens, offsets, rules, cupy, _cupy_launch)


def cudf_string_column(data: Any, offsets: Any) -> Any:
    """A cuDF string Series over device ``data`` (uint8) and ``offsets`` (int64 [n+1])."""
    import cudf
    import cupy
    import pylibcudf as plc

    data = cupy.asarray(data, dtype=cupy.uint8)
    offsets = cupy.asarray(offsets, dtype=cupy.int64)
    if int(offsets[0]) != 0:
        data = data[int(offsets[0]) : int(offsets[-1])]
        offsets = offsets - offsets[0]
    # int32 offsets are what every cuDF version reads; int64 only where the text needs them.
    if int(offsets[-1]) < 2**31 - 1:
        offsets = offsets.astype(cupy.int32)
    n = int(offsets.shape[0]) - 1
    offsets_col = plc.Column.from_cuda_array_interface(offsets)
    chars = plc.gpumemoryview(data if data.size else cupy.zeros(1, dtype=cupy.uint8))
    column = plc.Column(plc.DataType(plc.TypeId.STRING), n, chars, None, 0, 0, [offsets_col])
    return cudf.Series.from_pylibcudf(column)
