"""Compiled gather of byte ranges from a file: many short ``pread`` calls in one loop.

A chunk of training windows is a few thousand token ranges scattered over the ``.bin`` file
(each window crosses several shuffled documents). Issued from Python, each ``pread`` also costs a
trip through the interpreter with the GIL held, so threads exporting chunks wait on each other;
this loop makes the same system calls from compiled code with the GIL released. (A memory map
is not used: its page faults cost more than the copies, and a map kept open grows the process's
resident memory with the dataset.)
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _pread(typingctx, fd, buffer, at, nbytes, file_offset):
    """``pread(fd, &buffer[at], nbytes, file_offset)`` from the C library (by symbol name, so
    the compiled function can be cached)."""
    sig = types.int64(types.int64, buffer, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        fd_v, buffer_v, at_v, nbytes_v, offset_v = args
        array = context.make_array(signature.args[1])(context, builder, buffer_v)
        start = builder.bitcast(array.data, ir.IntType(8).as_pointer())
        i64, ptr = ir.IntType(64), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(i64, [ir.IntType(32), ptr, i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "pread")
        fd32 = builder.trunc(fd_v, ir.IntType(32))
        return builder.call(fn, [fd32, builder.gep(start, [at_v]), nbytes_v, offset_v])

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _gather(fd, out, starts, sizes):
    pos = 0
    for k in range(starts.shape[0]):
        done = 0
        while done < sizes[k]:
            got = _pread(fd, out, pos + done, sizes[k] - done, starts[k] + done)
            if got <= 0:
                return k
            done += got
        pos += sizes[k]
    return -1


def pread_ranges(fd: int, starts: np.ndarray, sizes: np.ndarray, out: np.ndarray) -> int:
    """Read ``sizes[k]`` bytes at file offset ``starts[k]`` for each ``k``, back to back, into
    the uint8 array ``out`` (which must hold ``sizes.sum()`` bytes: checked).

    Returns -1 when every range was read, else the first range that could not be (end of file
    or an error: the caller reads it again to find out which, and reports it).
    """
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    if out.dtype != np.uint8 or out.ndim != 1 or int(sizes.sum()) != out.shape[0]:
        raise ValueError("out must be a 1-D uint8 array of sizes.sum() bytes")
    return int(_gather(fd, out, starts, sizes))
