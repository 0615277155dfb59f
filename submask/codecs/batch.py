"""Intersection counts of many tensor pairs in one compiled call, straight from their "raw" or "rice" payloads.

Comparing two masks tensor by tensor costs a few tens of microseconds of Python per tensor, more than the
counting itself on sparse or small tensors. Here one call of a compiled kernel (numba; it releases the GIL)
walks a whole run of tensors: it checks each payload's structure (FORMAT.md sections 5.1 and 5.3), decodes
the first mask's tensor to packed bits (a raw payload is used in place) and counts the second's set bits
against them (AND + popcount for raw, a streamed Rice decode for rice), or, for a caller that checks the CRC-32,
decodes both tensors and keeps their bits. The caller checks the set-bit counts it returns against the header.
A tensor whose payload fails any check gets a row of -1: the caller decodes it the ordinary way, which raises
the error that names the problem.

>>> counts = pair_counts(payloads_a, payloads_b, table)     # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from ..accel import Kernel, popcount
from ..limits import check_allocation
from ..ones import and_ones
from ..workers import thread_buffer, thread_zeros
from .base import Codec
from .plain import RawCodec
from .rice import RiceCodec, rice_kernels_compiled
from .rice_kernels import COUNT, PACKED, rice_block

RAW, RICE = 0, 1  # a payload's kind in the table of ``pair_counts``
#: columns of the table: per tensor its bits, then per mask (A, B) its kind, payload offset, end and rice block bits
BITS, KIND_A, START_A, END_A, BLOCK_A, KIND_B, START_B, END_B, BLOCK_B = range(9)
_NO_POSITIONS = np.zeros(0, dtype=np.int64)
#: a rice payload this many times smaller than its packed bits has the bits it set cleared again one by one,
#: by the positions noted while setting them, rather than by filling its packed bytes (RATIONALE below)
SPARSE_RATIO = 24
# RATIONALE: noting and clearing a position costs about 0.5 ns, a sparse payload holds about 1.5 bytes a
# position, and filling a cached span of packed bytes costs about 0.017 ns a byte (measured: 64 tensors of
# 2^22 bits at 0.1% and 1%), so clearing one by one pays below about one payload byte per 24 packed bytes.


def batch_kind(codec: Codec) -> int | None:
    """RAW or RICE when ``pair_counts`` reads payloads of this codec, else None."""
    if isinstance(codec, RiceCodec):
        return RICE
    return RAW if isinstance(codec, RawCodec) else None


def batch_block_bits(codec: Codec) -> int:
    """The Rice block size of ``codec`` (0 for raw), for the table of ``pair_counts``."""
    return codec.block_bits if isinstance(codec, RiceCodec) else 0


def available() -> bool:
    """True when the kernel runs compiled here (without numba every tensor takes the per-tensor path)."""
    return rice_kernels_compiled() and _pair_counts.compiled is not None and _group_counts.compiled is not None


def pair_counts(data_a: np.ndarray, data_b: np.ndarray, table: np.ndarray,
                bits: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per row of ``table`` (int64, columns BITS ... BLOCK_B, offsets into the uint8 arrays ``data_a`` and
    ``data_b``): |A and B|, |A|, |B|, or -1s where a payload is malformed. With ``bits`` (two uint8 arrays of
    the rows' packed sizes summed), each row's packed bits of a rice payload of A and of B are also written
    there, one row after the other, for the caller to check their CRC-32 (a raw payload is its own packed bits,
    and is left where it is). Requires ``available()``."""
    sizes = (table[:, BITS] + 7) // 8
    listed = _NO_POSITIONS
    if bits is None:
        largest = int(sizes.max()) if sizes.size else 0
        check_allocation(largest, f"{8 * largest:,} bits")
        scratch = thread_zeros("pair bits", largest)  # all zero: the kernel clears what it sets
        bits_a, bits_b, keep = scratch, scratch, False
        listed = thread_buffer("pair listed", 8 * (largest // SPARSE_RATIO + 1)).view(np.int64)  # A's positions
    else:
        (bits_a, bits_b), keep = bits, True
    out = np.empty((table.shape[0], 3), dtype=np.int64)
    _pair_counts.compiled(data_a, data_b, table, bits_a, bits_b, keep, listed, out)
    return out


def group_counts(data: np.ndarray, table: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``table`` (int64: a tensor's bits, then per mask its kind, start and end in the uint8 array
    ``data``, and rice block bits): the n x n matrix of |Mi and Mj|, counts on its diagonal, or all -1 where a
    payload is malformed. Each tensor of each mask is decoded once; every pair is counted over its bits.
    Requires ``available()``."""
    sizes = (table[:, BITS] + 7) // 8
    width = int(sizes.max()) if sizes.size else 0
    scratch = thread_buffer("group bits", n * width).reshape(n, width)  # a row per mask: the kernel pairs them all
    out = np.empty((table.shape[0], n, n), dtype=np.int64)
    _group_counts.compiled(data, table, n, scratch, _NO_POSITIONS, out)
    return out


@Kernel
def _group_counts(data, table, n, scratch, no_positions, out):  # pragma: no cover - numba
    """``group_counts`` into ``out``, each mask's tensor decoded into its row of ``scratch``."""
    for row in range(table.shape[0]):
        bits = table[row, BITS]
        nbytes = (bits + 7) // 8
        sound = True
        for side in range(n):
            kind, start = table[row, KIND_A + 4 * side], table[row, START_A + 4 * side]
            end = table[row, END_A + 4 * side]
            packed = scratch[side, :nbytes]
            if kind == RAW:
                ones = _raw_ones(data[start:end], bits) if end - start == nbytes else -1
                if ones >= 0:
                    packed[:] = data[start:end]
            else:
                ones = _decode(data, start, end, table[row, BLOCK_A + 4 * side], bits, packed, no_positions)
            if ones < 0:
                sound = False
                break
            out[row, side, side] = ones
        if not sound:
            out[row] = -1
            continue
        _all_pairs(scratch, nbytes, out[row])


@Kernel
def _all_pairs(scratch, nbytes, out):  # pragma: no cover - compiled by numba
    """|row i and row j| of the first ``nbytes`` of every pair of rows of ``scratch`` into ``out`` (the diagonal
    left alone), a cache-sized block of every row at a time."""
    n = scratch.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = 0
    words = nbytes // 8
    for first in range(0, words, 512):
        last = min(first + 512, words)
        for i in range(n):
            wi = scratch[i, : 8 * words].view(np.uint64)
            for j in range(i + 1, n):
                wj = scratch[j, : 8 * words].view(np.uint64)
                total = 0
                for index in range(first, last):
                    total += popcount(wi[index] & wj[index])
                out[i, j] += total
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] += and_ones(scratch[i, 8 * words : nbytes], scratch[j, 8 * words : nbytes])
            out[j, i] = out[i, j]


@Kernel
def _pair_counts(data_a, data_b, table, bits_a, bits_b, keep, listed, out):  # pragma: no cover - numba
    """``pair_counts`` into ``out``: a raw payload used in place; a rice one of A decoded into ``bits_a`` (at the
    row's offset when ``keep``, else at 0), one of B decoded into ``bits_b`` when ``keep``, else counted against
    A straight from its payload. Without ``keep``, A's bits are cleared again after every row (whatever its
    checks found): a sparse payload's one by one, by the positions it noted in ``listed``."""
    none = listed[:0]
    at = 0
    for row in range(table.shape[0]):
        bits = table[row, BITS]
        nbytes = (bits + 7) // 8
        out[row, 0] = out[row, 1] = out[row, 2] = -1
        first = at if keep else 0
        at += nbytes
        sparse, noted = False, 0
        if table[row, KIND_A] == RAW:  # used in place
            start = table[row, START_A]
            if table[row, END_A] - start != nbytes:
                continue
            packed = data_a[start : start + nbytes]
            ones_a = _raw_ones(packed, bits)
        elif keep:
            packed = bits_a[first : first + nbytes]
            ones_a = _decode(data_a, table[row, START_A], table[row, END_A], table[row, BLOCK_A], bits, packed, none)
        else:  # bits_a is all zero: set A's bits (noting where, when sparse), count, then clear them
            packed = bits_a[:nbytes]
            sparse = (table[row, END_A] - table[row, START_A]) * SPARSE_RATIO < nbytes
            noted, ones_a = _rice_pass(data_a, table[row, START_A], table[row, END_A], table[row, BLOCK_A], bits,
                                       PACKED, packed, listed if sparse else none)
            if bits % 8 and nbytes:  # a block listing zeros set its pad bits too
                packed[-1] &= (0xFF << (8 - bits % 8)) & 0xFF
        if ones_a >= 0:
            hits, ones_b = _count_b(data_b, table, row, bits, packed, bits_b[first : first + nbytes], keep, none)
            if ones_b >= 0:
                out[row, 0], out[row, 1], out[row, 2] = hits, ones_a, ones_b
        if not keep and table[row, KIND_A] != RAW:
            if sparse and ones_a >= 0 and noted <= listed.size:
                for index in range(noted):
                    packed[listed[index] >> 3] = 0
            else:
                packed[:] = 0


@Kernel
def _count_b(data_b, table, row, bits, packed, room, keep, none):  # pragma: no cover - compiled by numba
    """(|A and B|, |B|) of one row of ``_pair_counts``, A's bits in ``packed``: a raw payload of B used in place,
    a rice one decoded into ``room`` when ``keep``, else counted straight from its payload; (-1, -1) when B's
    payload fails a check."""
    nbytes = (bits + 7) // 8
    start, end = table[row, START_B], table[row, END_B]
    if table[row, KIND_B] == RAW:
        if end - start != nbytes:
            return -1, -1
        other = data_b[start:end]
        return and_ones(packed, other), _raw_ones(other, bits)
    if keep:
        ones_b = _decode(data_b, start, end, table[row, BLOCK_B], bits, room, none)
        return and_ones(packed, room), ones_b
    return _rice_pass(data_b, start, end, table[row, BLOCK_B], bits, COUNT, packed, none)


@Kernel
def _decode(data, start, end, block_bits, bits, packed, none):  # pragma: no cover - numba
    """The packed bits of the rice payload ``data[start:end]`` into ``packed``; returns their set bits, or -1
    for a bad payload."""
    packed[:] = 0
    ones = _rice_pass(data, start, end, block_bits, bits, PACKED, packed, none)[1]
    if bits % 8 and packed.size:
        packed[-1] &= (0xFF << (8 - bits % 8)) & 0xFF
    return ones


@Kernel
def _rice_pass(data, start, end, block_bits, bits, mode, packed, positions):  # pragma: no cover - numba
    """Every block of the rice payload ``data[start:end]`` of ``bits`` bits through ``rice_block`` in ``mode``
    (PACKED: sets its bits in ``packed``, zeros on entry, and notes them in ``positions`` as far as it holds
    them; COUNT: counts its set bits set in ``packed``), with the block header checks of ``rice._read_header``;
    returns (count, set bits), or (-1, -1) for a bad payload. PACKED's count is how many positions it noted,
    more than ``positions`` holds when some went unnoted (a block listing zeros sets its span)."""
    offset, counted, ones = start, 0, 0
    for base in range(0, bits, block_bits):
        nbits = min(block_bits, bits - base)
        if offset + 12 > end:
            return -1, -1
        value, k = np.int64(data[offset]), np.int64(data[offset + 1])
        reserved = np.int64(data[offset + 2]) | (np.int64(data[offset + 3]) << 8)
        count = unary_nbytes = 0
        for byte in range(4):
            count |= np.int64(data[offset + 4 + byte]) << (8 * byte)
            unary_nbytes |= np.int64(data[offset + 8 + byte]) << (8 * byte)
        block_end = offset + 12 + unary_nbytes + k * ((count + 7) // 8)
        if value > 1 or reserved or k > 31 or count > nbits or block_end > end:
            return -1, -1
        if mode == PACKED and not value:
            packed[base // 8 : (base + nbits + 7) // 8] = 0xFF
            if positions.size:
                counted = positions.size + 1  # its span is set, not noted
        done = rice_block(data, offset + 12, unary_nbytes, count, k, nbits, value, mode, base,
                          positions[min(counted, positions.size):], packed)
        if done < 0:
            return -1, -1
        counted += done
        ones += count if value else nbits - count
        offset = block_end
    if offset != end:
        return -1, -1
    return counted, ones


@Kernel
def _raw_ones(packed, bits):  # pragma: no cover - compiled by numba
    """Set bits of a raw payload of ``bits`` bits, or -1 when a pad bit is set."""
    if bits % 8 and packed[-1] & ~(0xFF << (8 - bits % 8)) & 0xFF:
        return -1
    return and_ones(packed, packed)
