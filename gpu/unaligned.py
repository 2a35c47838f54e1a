"""Unaligned 8-byte loads and stores on uint8 arrays, for kernels that move text a word at a
time (one instruction instead of eight). The caller keeps 8 bytes of slack past the end."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def store_u64(typingctx, arr, idx, val):
    """Unaligned 8-byte store of ``val`` at ``arr[idx]`` (one instruction instead of 8)."""
    sig = types.void(arr, types.int64, types.uint64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(64).as_pointer())
        builder.store(args[2], ptr, align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def load_u64(typingctx, arr, idx):
    """Unaligned 8-byte load from ``arr[idx]``."""
    sig = types.uint64(arr, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen
