"""Pure functions on packed bit arrays.

A packed array holds ``numel`` bits in ``ceil(numel / 8)`` uint8 bytes, bit ``i`` in byte ``i // 8`` at
position ``7 - i % 8`` (most significant bit first, numpy's ``packbits`` default). Pad bits after the
last real bit are always zero, so bytewise operations and popcounts need no special cases.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from .errors import UsageError
from .ones import compiled_and_ones

CHUNK_BYTES = 1 << 20  # unpack at most 8 Mi bits at a time to keep temporaries small
SET_BITS = np.array([[i for i in range(8) if value >> (7 - i) & 1] + [0] * (8 - value.bit_count())
                     for value in range(256)], dtype=np.int64)
"""Per byte value: the indices (MSB first) of its set bits, padded with zeros to 8 (for compiled kernels)."""
POPCOUNT8 = np.array([value.bit_count() for value in range(256)], dtype=np.int64)
"""Per byte value: its number of set bits (for compiled kernels)."""


def packed_nbytes(numel: int) -> int:
    """Number of bytes that hold ``numel`` packed bits."""
    return (numel + 7) // 8


def pad_mask(numel: int) -> int:
    """The bits of the last byte that hold real bits (0xFF when ``numel`` is a multiple of 8)."""
    tail = numel % 8
    return 0xFF if tail == 0 else (0xFF << (8 - tail)) & 0xFF


def clear_padding(packed: np.ndarray, numel: int) -> np.ndarray:
    """Zero the pad bits of ``packed`` in place and return it."""
    if numel % 8 and packed.size:
        packed[-1] &= np.uint8(pad_mask(numel))
    return packed


def padding_is_clear(packed: np.ndarray, numel: int) -> bool:
    """True when the pad bits after the last real bit are zero."""
    return not (numel % 8 and packed.size and int(packed[-1]) & ~pad_mask(numel) & 0xFF)


def popcount(packed: np.ndarray) -> int:
    """Number of set bits in a packed array (one compiled pass where numba runs: ``ones``)."""
    kernel = compiled_and_ones()
    if kernel is not None:
        return int(kernel(packed, packed))
    words = packed.size // 8
    total = 0
    if words:
        total += int(np.bitwise_count(packed[: words * 8].view(np.uint64)).sum(dtype=np.int64))
    if packed.size % 8:
        total += int(np.bitwise_count(packed[words * 8 :]).sum(dtype=np.int64))
    return total


def crc32(packed: np.ndarray) -> str:
    """CRC-32 (the zlib/ISO-HDLC polynomial) of the packed bytes as 8 lowercase hex digits."""
    return f"{crc32_update(np.ascontiguousarray(packed)):08x}"


def crc32_update(data: np.ndarray | bytes, crc: int = 0) -> int:
    """``zlib.crc32(data, crc)``: with the ``isal`` package (``pip install 'submask[fast]'``), its CRC-32, about
    5x faster than zlib's (12 against 2.3 GB/s on one core), which every verified read pays per bit."""
    return _crc32_function()(data.data if isinstance(data, np.ndarray) else memoryview(data), crc) & 0xFFFFFFFF


@functools.cache
def _crc32_function() -> Callable[[memoryview, int], int]:
    """isal's crc32 where installed, zlib's otherwise (imported on first use: ``import submask`` stays light)."""
    try:
        from isal.isal_zlib import crc32 as isal_crc32
    except ImportError:
        return zlib.crc32
    return isal_crc32


def pack(bools: np.ndarray) -> np.ndarray:
    """Pack any boolean (or 0/1) array, flattened in C order, into packed bits."""
    flat = np.ascontiguousarray(bools).reshape(-1)
    if flat.dtype != np.bool_:
        flat = flat != 0
    return np.packbits(flat)


def unpack(packed: np.ndarray, numel: int) -> np.ndarray:
    """Unpack to a flat bool array of ``numel`` elements."""
    out = np.empty(numel, dtype=np.bool_)
    step = CHUNK_BYTES
    for start in range(0, packed.size, step):
        stop = min(start + step, packed.size)
        bits = np.unpackbits(packed[start:stop], count=min(numel - start * 8, (stop - start) * 8))
        out[start * 8 : start * 8 + bits.size] = bits.view(np.bool_)
    return out


def set_positions(packed: np.ndarray, numel: int) -> np.ndarray:
    """Flat indices (int64, ascending) of the set bits, computed chunk by chunk."""
    if packed.size <= CHUNK_BYTES:  # one chunk: no pieces to join, no bits past numel to drop
        return np.flatnonzero(np.unpackbits(packed, count=min(numel, 8 * packed.size)).view(np.bool_))
    parts = []
    step = CHUNK_BYTES
    for start in range(0, packed.size, step):
        chunk = packed[start : start + step]
        if not chunk.any():
            continue
        parts.append(np.flatnonzero(np.unpackbits(chunk).view(np.bool_)) + start * 8)
    if not parts:
        return np.zeros(0, dtype=np.int64)
    positions = np.concatenate(parts)
    return positions[positions < numel]


def from_positions(positions: np.ndarray, numel: int) -> np.ndarray:
    """Packed bits with exactly the given flat indices set (indices must lie in ``[0, numel)``)."""
    bools = np.zeros(numel, dtype=np.bool_)
    bools[positions] = True
    return np.packbits(bools)


def crc32_of_run(byte: int, nbytes: int, crc: int = 0) -> int:
    """``zlib.crc32(bytes([byte]) * nbytes, crc)`` in O(log nbytes) steps, without the run in memory."""
    for power in range(nbytes.bit_length()):
        if nbytes >> power & 1:  # runs of one byte value commute, so the powers of two apply in any order
            crc = _apply(_run_map(byte, power), crc)
    return crc


@functools.cache
def _run_map(byte: int, power: int) -> tuple[int, tuple[int, ...]]:
    """The CRC-32 update over 2**power copies of ``byte``: an affine map of the 32-bit state over GF(2), as
    (the image of 0, the images of the 32 unit vectors less it)."""
    if power == 0:
        data = bytes([byte])
        image = zlib.crc32(data, 0)
        return image, tuple(zlib.crc32(data, 1 << bit) ^ image for bit in range(32))
    half = _run_map(byte, power - 1)  # the run twice: half after half
    return _apply(half, half[0]), tuple(_apply(half, column) ^ half[0] for column in half[1])


def _apply(affine: tuple[int, tuple[int, ...]], state: int) -> int:
    image, columns = affine
    for bit in range(32):
        if state >> bit & 1:
            image ^= columns[bit]
    return image


#: byte-wise implementations of the binary operators, by the name the CLI and metadata use
BINARY_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "xor": np.bitwise_xor,
    "diff": lambda a, b: np.bitwise_and(a, np.invert(b)),
}


def check_op(op: str, inputs: int) -> None:
    """UsageError unless ``op`` is an operation that takes ``inputs`` masks ("not": one, the others: two or more)."""
    if op == "not":
        if inputs != 1:
            raise UsageError(f"'not' takes exactly one mask, got {inputs}")
    elif op not in BINARY_OPS:
        raise UsageError(f"unknown operation {op!r}; use one of {sorted([*BINARY_OPS, 'not'])}")
    elif inputs < 2:
        raise UsageError(f"{op!r} takes at least two masks, got {inputs}")


def apply_op(op: str, packed: Sequence[np.ndarray], numel: int) -> np.ndarray:
    """Fold ``op`` ("and", "or", "xor", "diff": first minus all others, "not": of one input) over packed arrays."""
    check_op(op, len(packed))
    if op == "not":
        out = np.invert(packed[0])
    else:
        out = BINARY_OPS[op](packed[0], packed[1])
        for more in packed[2:]:
            out = BINARY_OPS[op](out, more)
    return clear_padding(out, numel)
