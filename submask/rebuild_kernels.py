"""The rebuild's in-place passes over a chunk of the base: new values put in at a mask's set positions.

``decode_into`` turns a chunk of base values into the finetuned ones where the delta codes them against the
base (FORMAT.md §12.4, ``diff-planes``): compiled, one fused pass that reads each base value, decodes its
stored difference and writes the result back in place (no gathered or scattered copies); without numba,
numpy's gather, ``format.diffs.apply_block`` and a scatter (identical bytes). ``scatter_into`` puts values
stored as they are at the set positions.
"""

from __future__ import annotations

import numpy as np

from .accel import Kernel
from .errors import FormatError
from .format.diffs import MANTISSA_BITS, apply_block
from .packed import padding_is_clear, popcount, unpack

Where = np.ndarray | None
"""The set positions of a chunk: its packed mask bits (uint8), its positions (int64, relative to the chunk's
first element), or None when every element is set."""


def decode_into(chunk: np.ndarray, where: Where, zigzag: np.ndarray, dtype: str) -> None:
    """``chunk`` (a base chunk as unsigned ints, writable) with the values that ``zigzag`` (one block's stored
    differences, uint8) codes at the set positions ``where``. FormatError when their counts differ."""
    itemsize = chunk.itemsize
    count = _count(where, chunk.size)
    if zigzag.size != count * itemsize:
        raise FormatError(f"a block of {zigzag.size} difference bytes for {count} set positions of {itemsize}-byte "
                          "values")
    kernel = (_decode_all if where is None else _decode_positions if where.dtype == np.int64
              else _decode_packed).compiled if itemsize <= 4 else None
    if kernel is None:
        taken = chunk if where is None else chunk[_index(where, chunk.size)]
        new = apply_block(zigzag, taken, dtype).view(chunk.dtype)
        if where is None:
            chunk[:] = new
        else:
            chunk[_index(where, chunk.size)] = new
        return
    mantissa = MANTISSA_BITS.get(dtype, -1)
    exponent_bits = 8 * itemsize - 1 - mantissa if mantissa >= 0 else 0
    slots = np.zeros(1 << exponent_bits, np.int64)
    differences = zigzag.view(chunk.dtype)
    if where is None:
        _decode_all.compiled(chunk, differences, mantissa, exponent_bits, 8 * itemsize, slots)
    elif where.dtype == np.int64:
        if where.size and not 0 <= where[0] <= where[-1] < chunk.size:
            raise FormatError(f"set positions outside a chunk of {chunk.size} elements")
        _decode_positions.compiled(where, chunk, differences, mantissa, exponent_bits, 8 * itemsize, slots)
    else:
        _decode_packed.compiled(where, chunk, differences, mantissa, exponent_bits, 8 * itemsize, slots,
                                np.empty(count + 1, chunk.dtype))


def scatter_into(chunk: np.ndarray, packed: np.ndarray, values: np.ndarray) -> None:
    """``chunk[unpack(packed)] = values``, compiled when numba runs."""
    scatter = _scatter.compiled
    if scatter is not None:
        scatter(packed, values, chunk)
    else:
        chunk[unpack(packed, chunk.size)] = values


def _count(where: Where, numel: int) -> int:
    if where is None or where.dtype == np.int64:
        return numel if where is None else where.size
    if where.size != (numel + 7) // 8 or not padding_is_clear(where, numel):
        raise FormatError(f"{where.size} bytes of mask bits for a chunk of {numel} elements, or bits set past it")
    return popcount(where)


def _index(where: np.ndarray, numel: int) -> np.ndarray:
    return where if where.dtype == np.int64 else unpack(where, numel)


@Kernel
def _decoded(base, z, mantissa, bits, full, sign):  # pragma: no cover - compiled by numba
    """One value from its base value's bits and its zigzagged difference (``format.diffs._decode_kernel``)."""
    if mantissa < 0:
        return (base + ((z >> 1) ^ -(z & 1))) & full
    top = full >> 1  # branch-free (signs are as good as random): a negative float's bits flip, a positive's sign
    ordered = base ^ (sign | (top & -(base >> (bits - 1))))
    value = (ordered + ((z >> 1) ^ -(z & 1))) & full
    return value ^ (full ^ (top & -(value >> (bits - 1))))


@Kernel
def _decode_all(chunk, differences, mantissa, exponent_bits, bits, slots):  # pragma: no cover - compiled by numba
    """``decode_into`` with every element set: first the exponents' counts (the stored order is the stable
    order of the base values' exponents), then each value decoded in place."""
    full, sign, exponents = (1 << bits) - 1, 1 << (bits - 1), (1 << exponent_bits) - 1
    if mantissa >= 0:
        for i in range(chunk.size):
            slots[(np.int64(chunk[i]) >> mantissa) & exponents] += 1
        _starts(slots)
    for i in range(chunk.size):
        b = np.int64(chunk[i])
        j = i
        if mantissa >= 0:
            key = (b >> mantissa) & exponents
            j = slots[key]
            slots[key] = j + 1
        chunk[i] = _decoded(b, np.int64(differences[j]), mantissa, bits, full, sign)


@Kernel
def _decode_positions(positions, chunk, differences, mantissa, exponent_bits, bits,
                      slots):  # pragma: no cover - compiled by numba
    """``decode_into`` at ``positions`` (ascending, inside the chunk)."""
    full, sign, exponents = (1 << bits) - 1, 1 << (bits - 1), (1 << exponent_bits) - 1
    if mantissa >= 0:
        for k in range(positions.size):
            slots[(np.int64(chunk[positions[k]]) >> mantissa) & exponents] += 1
        _starts(slots)
    for k in range(positions.size):
        i = positions[k]
        b = np.int64(chunk[i])
        j = k
        if mantissa >= 0:
            key = (b >> mantissa) & exponents
            j = slots[key]
            slots[key] = j + 1
        chunk[i] = _decoded(b, np.int64(differences[j]), mantissa, bits, full, sign)


@Kernel
def _decode_packed(packed, chunk, differences, mantissa, exponent_bits, bits, slots,
                   taken):  # pragma: no cover - compiled by numba
    """``decode_into`` at the set bits of ``packed`` (MSB first), through ``taken`` (one slot more than the set
    bits): the base values gathered while their exponents are counted, decoded there, put back. Gathering and
    putting back are branch-free within a byte (set bits are as good as random)."""
    full, sign, exponents = (1 << bits) - 1, 1 << (bits - 1), (1 << exponent_bits) - 1
    k = 0
    for j in range(packed.size):
        byte = packed[j]
        if byte:
            for bit in range(8):
                taken[k] = chunk[8 * j + bit]
                k += (byte >> (7 - bit)) & 1
    if mantissa >= 0:
        for i in range(k):
            slots[(np.int64(taken[i]) >> mantissa) & exponents] += 1
        _starts(slots)
    for i in range(k):
        b = np.int64(taken[i])
        at = i
        if mantissa >= 0:
            key = (b >> mantissa) & exponents
            at = slots[key]
            slots[key] = at + 1
        taken[i] = _decoded(b, np.int64(differences[at]), mantissa, bits, full, sign)
    k = 0
    for j in range(packed.size):
        byte = packed[j]
        if byte:
            for bit in range(8):
                chosen = (byte >> (7 - bit)) & 1
                kept = chunk[8 * j + bit]
                chunk[8 * j + bit] = taken[k] if chosen else kept
                k += chosen


@Kernel
def _starts(slots):  # pragma: no cover - compiled by numba
    """Counts per exponent -> where each exponent's values start in the stored order."""
    total = 0
    for key in range(slots.size):
        count = slots[key]
        slots[key] = total
        total += count


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
