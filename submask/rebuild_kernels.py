"""The rebuild's passes over a chunk of the base: new values put in, in place, at a mask's set positions.

``decode_into`` turns a chunk of base values into the finetuned ones where the delta codes them against the
base (FORMAT.md §12.4, ``diff-planes``); ``scatter_into`` puts values stored as they are at the set
positions. Compiled when numba runs, numpy otherwise (identical bytes). The compiled decode at packed bits
walks the set bits twice in the chunk itself (no values gathered or scattered). The numpy decode takes the set
positions as indices (not boolean masks, several times slower on scattered bits) and ``format.diffs``'s
numpy transform: a command line rebuilding a small delta runs it, as starting numba would cost more
(``accel.job``).
"""

from __future__ import annotations

import numpy as np

from .accel import Kernel, leading_zeros
from .errors import FormatError
from .format.diffs import Scratch, apply_block, decode_value, kernel_args
from .packed import padding_is_clear, popcount, set_positions

Where = np.ndarray | None
"""The set positions of a chunk: its packed mask bits (uint8), its positions (int64, relative to the chunk's
first element), or None when every element is set."""


def decode_into(chunk: np.ndarray, where: Where, zigzag: np.ndarray, dtype: str,
                scratch: Scratch | None = None) -> None:
    """``chunk`` (a base chunk as unsigned ints, writable) with the values that ``zigzag`` (one block's stored
    differences, uint8) codes at the set positions ``where``, decoded in place: the base values there are
    taken out (all of them: none), decoded (``format.diffs.apply_block``, which reuses ``scratch`` without
    numba) and put back, or decoded where they are (``_decode_at_bits``). FormatError when their counts differ."""
    count = _count(where, chunk.size)
    if zigzag.size != count * chunk.itemsize:
        raise FormatError(f"a block of {zigzag.size} difference bytes for {count} set positions of "
                          f"{chunk.itemsize}-byte values")
    if where is not None and where.dtype == np.int64 and where.size \
            and not 0 <= where[0] <= where[-1] < chunk.size:
        raise FormatError(f"set positions outside a chunk of {chunk.size} elements")
    if where is None:
        apply_block(zigzag, chunk, dtype, chunk, scratch)
    elif where.dtype == np.int64:
        chunk[where] = apply_block(zigzag, chunk[where], dtype, scratch=scratch)
    elif chunk.itemsize <= 4 and (kernel := _decode_at_bits.compiled) is not None:
        kernel(where, chunk, zigzag.view(chunk.dtype), *kernel_args(dtype, chunk.itemsize))
    else:  # numpy, by indices
        at = set_positions(where, chunk.size)
        chunk[at] = apply_block(zigzag, chunk.take(at), dtype, scratch=scratch)


def scatter_into(chunk: np.ndarray, packed: np.ndarray, values: np.ndarray) -> None:
    """``chunk[unpack(packed)] = values``, compiled when numba runs."""
    scatter = _scatter.compiled
    if scatter is not None:
        scatter(packed, values, chunk)
    else:
        chunk[set_positions(packed, chunk.size)] = values  # by indices: faster than by booleans


def _count(where: Where, numel: int) -> int:
    if where is None or where.dtype == np.int64:
        return numel if where is None else where.size
    if where.size != (numel + 7) // 8 or not padding_is_clear(where, numel):
        raise FormatError(f"{where.size} bytes of mask bits for a chunk of {numel} elements, or bits set past it")
    return popcount(where)


@Kernel
def _scatter(packed, values, out):  # pragma: no cover - compiled by numba
    """``out[i] = values[k]`` for the k-th set bit ``i`` of ``packed`` (MSB first): numpy's boolean assignment,
    without unpacking the bits (a byte with no bit set costs one test)."""
    k, last = 0, values.size - 1
    for j in range(packed.size):
        byte = packed[j]
        if byte:
            for bit in range(8):  # branch-free (set bits are as good as random): each element is rewritten
                chosen = (byte >> (7 - bit)) & 1
                value, kept = values[min(k, last)], out[8 * j + bit]
                out[8 * j + bit] = value if chosen else kept
                k += chosen
    return k


@Kernel
def _decode_at_bits(packed, chunk, zigzag, mantissa, exponent_bits, bits, slots):  # pragma: no cover - numba
    """``decode_into`` at the set bits of ``packed`` (MSB first), in ``chunk`` itself (``diffs.decode_kernel``
    without a gather and a scatter): the exponent fields at the set bits counted, then each value decoded where
    it is. A 64-bit word's set bits are taken from its lowest, its last element (clearing the lowest set bit is
    one dependent step, the highest three), so the decoding walks the chunk from its end and fills each
    exponent's slots from their end: the stored order, stable. 2x the gather, decode and scatter it replaces."""
    exponents, shift = (1 << exponent_bits) - 1, max(mantissa, 0)  # integers: one slot
    words = (packed.size + 7) // 8
    for step in range(2):  # count the exponent fields at the set bits, then decode from the chunk's end
        for n in range(words):
            w = n if step == 0 else words - 1 - n
            word = np.uint64(0)  # bytes 8 w to 8 w + 7, big-endian: element 64 w at the top bit
            for q in range(min(8, packed.size - 8 * w)):
                word |= np.uint64(packed[8 * w + q]) << np.uint64(56 - 8 * q)
            while word:
                lowest = word & (~word + np.uint64(1))
                word ^= lowest
                i = 64 * w + np.int64(leading_zeros(lowest))
                base = np.int64(chunk[i])
                key = (base >> shift) & exponents
                if step == 0:
                    slots[key] += 1
                    continue
                j = slots[key] - 1
                slots[key] = j
                chunk[i] = decode_value(base, np.int64(zigzag[j]), mantissa, bits)
        for k in range(1, slots.size if step == 0 else 0):  # each exponent's slots end where the next begin
            slots[k] += slots[k - 1]
