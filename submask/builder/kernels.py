"""The fused compare kernel: one pass per chunk decodes, judges, counts the ladder and packs the bits.

numba compiles the kernel (see ``submask.accel``); without numba, or with ``SUBMASK_NO_NUMBA=1``,
``fused_compare`` returns None and ``backends.NumpyBackend`` runs its numpy path, which gives identical
results. Values are decoded to what ``dtypes.decode`` gives (bf16 and fp16 by bit manipulation, fp8
through its table, float32 by a cast) and judged as ``criteria`` defines: every ladder rung and the atol
criterion compare the bits of ``|y - x|`` as integers (for a non-negative float64 or NaN, integer order is
numeric order and NaN is above every tolerance), rtol compares floats.
"""

from __future__ import annotations

import numpy as np

from ..accel import Kernel
from ..checkpoints.dtypes import DType, decode_table
from .criteria import LADDER_ATOL, Criterion

BLOCK = 1 << 14  # elements judged before they are packed: the 0/1 scratch stays in L1
_RUNGS = np.array(LADDER_ATOL[1:], dtype=np.float64)


@Kernel
def _half_value(code):  # pragma: no cover - compiled by numba (inlined into diff_bits)
    """The float64 value of an fp16 code, chosen between the three cases without a branch (so the loop
    vectorises): float64 bits for normals (exponent rebiased by 1008) and for inf/NaN, an integer times
    2^-24 for subnormals and zeros."""
    exponent, mantissa = (code >> 10) & 0x1F, code & 0x3FF
    bits = ((2047 if exponent == 31 else exponent + 1008) << 52) | (mantissa << 42)
    value = np.float64(mantissa) * 2.0**-24 if exponent == 0 else np.int64(bits).view(np.float64)
    return -value if code & 0x8000 else value


@Kernel
def diff_bits(a, b, single, table, half, above, rtol, rungs, packed, counts):  # pragma: no cover
    """Set bit i of ``packed`` (MSB first) where element i changed; add ladder counts to ``counts``.

    ``a``, ``b``: raw unsigned ints. Values: ``table[a]`` if ``table`` is given, else ``a`` is float32 if
    ``single`` is given, fp16 if ``half`` is given, else bf16. The criterion: ``above``:
    changed iff the bits of ``|y - x|`` exceed it (atol's bits, or -1 for exact), else ``rtol``'s test.
    ``rungs``: the ladder tolerances after 0, or None. Returns the number of bits set. numba compiles one
    version per combination of None arguments, with the branches on them removed, so each loop vectorises.
    """
    n = a.size
    limits = rungs.view(np.int64) if rungs is not None else np.zeros(5, dtype=np.int64)
    # The limits in locals and each block's elements in slices indexed from 0: with ``limits[k]`` loaded per
    # element and ``scratch[i - start]``, LLVM kept the loop scalar (2x slower on bf16 with the ladder).
    l0, l1, l2, l3, l4 = limits[0], limits[1], limits[2], limits[3], limits[4]
    scratch = np.zeros(BLOCK, dtype=np.uint8)
    words = scratch.view(np.uint64)
    ones = c0 = c1 = c2 = c3 = c4 = c5 = 0
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        block_a, block_b = a[start:stop], b[start:stop]
        for i in range(stop - start):
            differ = block_a[i] != block_b[i]
            if table is not None:
                x, y = table[block_a[i]], table[block_b[i]]
            elif single is not None:  # float32 from its bits, as bf16 below (a float32 view of the same
                #   memory would alias ``a`` and keep the loop from vectorising)
                x = np.float64(np.uint32(block_a[i]).view(np.float32))
                y = np.float64(np.uint32(block_b[i]).view(np.float32))
            elif half is not None:
                x, y = _half_value(np.int64(block_a[i])), _half_value(np.int64(block_b[i]))
            else:
                x = np.float64(np.uint32(np.uint32(block_a[i]) << 16).view(np.float32))
                y = np.float64(np.uint32(np.uint32(block_b[i]) << 16).view(np.float32))
            delta = abs(y - x)
            bits = np.float64(delta).view(np.int64) if differ else np.int64(-1)  # -1: bytes equal
            if rungs is not None:
                c0 += differ
                c1 += bits > l0
                c2 += bits > l1
                c3 += bits > l2
                c4 += bits > l3
                c5 += bits > l4
            if above is not None:
                differ = bits > above
            if rtol is not None:
                differ = differ and not (delta <= rtol * max(abs(x), abs(y)) and delta - delta == 0)
            scratch[i] = differ
        size = stop - start
        for i in range(size, (size + 7) // 8 * 8):
            scratch[i] = 0
        for j in range((size + 7) // 8):
            word = words[j]  # 8 bytes of 0/1, first element lowest: gather them into one byte, first as MSB
            packed[start // 8 + j] = (word * np.uint64(0x8040201008040201)) >> np.uint64(56)
        for i in range(size):
            ones += scratch[i]
    counts[0] += c0
    counts[1] += c1
    counts[2] += c2
    counts[3] += c3
    counts[4] += c4
    counts[5] += c5
    return ones


def fused_compare(a: np.ndarray, b: np.ndarray, dtype: DType, criterion: Criterion,
                  ladder: bool) -> tuple[np.ndarray, int, list[int] | None] | None:
    """Packed changed-bits of a chunk, their count and ladder counts (or None) in one compiled pass.

    None when no compiled kernel is available, for an exact build without the ladder (numpy's compare and
    packbits are as fast), or for values the kernel does not decode (integers, bool and F64: rare in
    checkpoints, so not worth their compile time); the caller then runs its numpy path.
    """
    kernel = diff_bits.compiled
    if kernel is None or not (ladder or criterion.name != "exact") or dtype.kind != "float" or dtype.name == "F64":
        return None
    if criterion.name not in ("exact", "atol", "rtol"):  # the kernel knows these; numpy runs the others
        return None
    table = decode_table(dtype) if dtype.name.startswith("F8") else None
    above = None if criterion.name == "rtol" else -1
    if criterion.name == "atol":
        above = int(np.array(criterion.atol, dtype=np.float64).view(np.int64))
    packed = np.empty((a.size + 7) // 8, dtype=np.uint8)
    counts = np.zeros(len(LADDER_ATOL), dtype=np.int64)
    ones = kernel(a, b, True if dtype.name == "F32" else None, table, True if dtype.name == "F16" else None, above,
                  criterion.rtol,
                  _RUNGS if ladder else None, packed, counts)
    return packed, int(ones), counts.tolist() if ladder else None
