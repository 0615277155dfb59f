"""The rebuild's passes over a chunk of the base: new values put in, in place, at a mask's set positions.

``decode_into`` turns a chunk of base values into the finetuned ones where the delta codes them against the
base (FORMAT.md §12.4, ``diff-planes``); ``scatter_into`` puts values stored as they are at the set
positions. Compiled when numba runs, numpy otherwise (identical bytes). The numpy decode takes the set
positions as indices (not boolean masks, several times slower on scattered bits) and ``format.diffs``'s
numpy transform: a command line rebuilding a small delta runs it, as starting numba would cost more
(``accel.job``).
"""

from __future__ import annotations

import numpy as np

from .accel import Kernel
from .errors import FormatError
from .format.diffs import apply_block, decode_kernel
from .packed import padding_is_clear, popcount, unpack

Where = np.ndarray | None
"""The set positions of a chunk: its packed mask bits (uint8), its positions (int64, relative to the chunk's
first element), or None when every element is set."""


def decode_into(chunk: np.ndarray, where: Where, zigzag: np.ndarray, dtype: str) -> None:
    """``chunk`` (a base chunk as unsigned ints, writable) with the values that ``zigzag`` (one block's stored
    differences, uint8) codes at the set positions ``where``, decoded in place: the base values there are
    taken out (all of them: none), decoded (``format.diffs.apply_block``) and put back. FormatError when
    their counts differ."""
    count = _count(where, chunk.size)
    if zigzag.size != count * chunk.itemsize:
        raise FormatError(f"a block of {zigzag.size} difference bytes for {count} set positions of "
                          f"{chunk.itemsize}-byte values")
    if where is not None and where.dtype == np.int64 and where.size \
            and not 0 <= where[0] <= where[-1] < chunk.size:
        raise FormatError(f"set positions outside a chunk of {chunk.size} elements")
    if where is None:
        apply_block(zigzag, chunk, dtype, out=chunk)
    elif where.dtype == np.int64:
        chunk[where] = apply_block(zigzag, chunk[where], dtype)
    elif chunk.itemsize > 4 or decode_kernel.compiled is None:  # no kernel: numpy, by indices
        at = np.flatnonzero(unpack(where, chunk.size))
        chunk[at] = apply_block(zigzag, chunk.take(at), dtype)
    else:
        from .builder.values import chunk_values  # here: a command line on a small delta never takes this path

        taken = chunk_values(chunk, where).view(chunk.dtype)
        scatter_into(chunk, where, apply_block(zigzag, taken, dtype, out=taken))


def scatter_into(chunk: np.ndarray, packed: np.ndarray, values: np.ndarray) -> None:
    """``chunk[unpack(packed)] = values``, compiled when numba runs."""
    scatter = _scatter.compiled
    if scatter is not None:
        scatter(packed, values, chunk)
    else:
        chunk[np.flatnonzero(unpack(packed, chunk.size))] = values  # by indices: faster than by booleans


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
