"""Writing "rice-rows" payloads (FORMAT.md section 5.5): numba kernels where numba is installed (a count per
row, then both streams written in one pass over the bits), whole-array numpy passes otherwise; both give the
same bytes."""

from __future__ import annotations

import numpy as np

from ..accel import Kernel
from ..packed import POPCOUNT8, SET_BITS, from_positions
from .rows_format import ALL_ROWS, COMPLEMENT, DELTA, HEADER, row_parameter

GROUP_BITS = 1 << 23  # bits unpacked at a time: what encoding costs in memory beyond the codes


def encode_rows(packed: np.ndarray, numel: int, row_bits: int, every_count: np.ndarray | None = None) -> bytes:
    """The "rice-rows" payload of ``numel`` packed bits cut into rows of ``row_bits`` (whose ``row_counts``
    may be given)."""
    write_kernel = _write_rows.compiled
    if write_kernel is None:
        return _encode_numpy(packed, numel, row_bits)
    every_count = row_counts(packed, numel, row_bits) if every_count is None else every_count
    count_mode, count_k, row_k, rows, row_codes, count_codes = _row_table(every_count, row_lengths(numel, row_bits))
    counts = every_count[rows]
    nbits = np.minimum(row_bits, numel - rows * row_bits)
    listed = np.minimum(counts, nbits - counts)
    k = row_parameter(listed, nbits)
    table = np.concatenate([row_codes, count_codes])
    widths = np.concatenate([np.full(row_codes.size, row_k, dtype=np.int64),
                             np.full(count_codes.size, count_k, dtype=np.int64)])
    # at most: every code's 1 bit and its quotient (a row's quotients sum to at most its unlisted bits >> k)
    unary_bits = int(((table >> widths) + 1).sum() + (listed + ((nbits - listed) >> k)).sum())
    remainder_bits = int(widths.sum() + (listed * k).sum())
    unary = np.zeros(unary_bits // 8 + 1, dtype=np.uint8)
    remainders = np.zeros(remainder_bits // 8 + 1, dtype=np.uint8)
    used = np.zeros(2, dtype=np.int64)
    write_kernel(packed, row_bits, table, widths, rows, counts, nbits, k, unary, remainders, used)
    unary_nbytes = -(-int(used[0]) // 8)
    return (HEADER.pack(count_mode, count_k, row_k, 0, rows.size, unary_nbytes) + unary[:unary_nbytes].tobytes()
            + remainders[: -(-int(used[1]) // 8)].tobytes())


def row_lengths(numel: int, row_bits: int) -> np.ndarray:
    """The bits of each row: ``row_bits``, less for a short last row."""
    return np.minimum(row_bits, numel - np.arange(-(-numel // row_bits), dtype=np.int64) * row_bits)


def row_counts(packed: np.ndarray, numel: int, row_bits: int) -> np.ndarray:
    """The set bits of each row (int64): by 64-bit words where rows hold whole words, else a group of whole
    rows at a time (the compiled byte loop where numba is installed)."""
    counts = np.empty(-(-numel // row_bits), dtype=np.int64)
    whole = numel // row_bits if row_bits % 64 == 0 else 0
    if whole:  # numpy's popcount of each word, summed per row: ~5x the byte loop, and without numba
        words = packed[: whole * row_bits // 8].view(np.uint64).reshape(whole, row_bits // 64)
        np.sum(np.bitwise_count(words), axis=1, dtype=np.int64, out=counts[:whole])
        if whole < counts.size:  # a short last row, from a whole byte
            counts[whole] = np.unpackbits(packed[whole * row_bits // 8 :], count=numel - whole * row_bits).sum()
        return counts
    if _row_counts.compiled is not None:
        _row_counts.compiled(packed, numel, row_bits, counts)
        return counts
    group = max(8, GROUP_BITS // row_bits // 8 * 8)
    for first in range(0, counts.size, group):
        start, end = first * row_bits, min((first + group) * row_bits, numel)
        bools = np.zeros(-(-(end - start) // row_bits) * row_bits, dtype=np.bool_)
        bools[: end - start] = np.unpackbits(packed[start // 8 : -(-end // 8)], count=end - start).view(np.bool_)
        counts[first : first + group] = bools.reshape(-1, row_bits).sum(axis=1)
    return counts


def _encode_numpy(packed: np.ndarray, numel: int, row_bits: int) -> bytes:
    every_count, listed = _rows(packed, numel, row_bits)
    count_mode, count_k, row_k, rows, row_codes, count_codes = _row_table(every_count, row_lengths(numel, row_bits))
    counts = every_count[rows]
    nbits = np.minimum(row_bits, numel - rows * row_bits)
    value = 2 * counts <= nbits
    listed_counts = np.where(value, counts, nbits - counts)
    within = listed - np.repeat(rows * row_bits, listed_counts)
    gaps = np.diff(within, prepend=-1) - 1
    firsts = np.cumsum(listed_counts) - listed_counts
    gaps[firsts[listed_counts > 0]] = within[firsts[listed_counts > 0]]  # each row's first gap counts from its start
    values = np.concatenate([row_codes, count_codes, gaps])
    widths = np.concatenate([np.full(row_codes.size, row_k, dtype=np.int64),
                             np.full(count_codes.size, count_k, dtype=np.int64),
                             np.repeat(row_parameter(listed_counts, nbits), listed_counts)])
    unary, remainders = _streams(values, widths)
    return HEADER.pack(count_mode, count_k, row_k, 0, rows.size, len(unary)) + unary + remainders


@Kernel
def _row_counts(packed, numel, row_bits, counts):  # pragma: no cover - compiled by numba
    """The set bits of each row of ``row_bits`` bits (the last row may be shorter) into ``counts``."""
    for row in range(counts.size):
        a = row * row_bits
        b = min(a + row_bits, numel)
        total = 0
        while a < b and a & 7:
            total += (packed[a >> 3] >> (7 - (a & 7))) & 1
            a += 1
        while a + 8 <= b:
            total += POPCOUNT8[packed[a >> 3]]
            a += 8
        while a < b:
            total += (packed[a >> 3] >> (7 - (a & 7))) & 1
            a += 1
        counts[row] = total


@Kernel
def _write_rows(packed, row_bits, table, widths, rows, counts, nbits, ks, unary, remainders,
                used):  # pragma: no cover - compiled by numba
    """Write the table's codes, then each table row's gaps (between its bits equal to the listed value, with
    the row's parameter in ``ks``), to the zeroed ``unary`` and ``remainders``; ``used`` gets their bits."""
    ubit = rbyte = held = 0
    acc = 0  # remainder bits not yet written: the low ``held`` bits
    for j in range(table.size):
        k = widths[j]
        ubit += table[j] >> k
        unary[ubit >> 3] |= 0x80 >> (ubit & 7)
        ubit += 1
        if k:
            acc = (acc << k) | (table[j] & ((1 << k) - 1))
            held += k
            while held >= 8:
                held -= 8
                remainders[rbyte] = (acc >> held) & 0xFF
                rbyte += 1
            acc &= (1 << held) - 1
    for i in range(rows.size):
        n, c, k = nbits[i], counts[i], ks[i]
        flip = 0 if 2 * c <= n else 0xFF  # the listed bits are the set ones, or the clear ones
        if c == 0 or c == n:
            continue
        a = rows[i] * row_bits
        b = a + n
        previous = a - 1
        mask = (1 << k) - 1
        for index in range(a >> 3, (b + 7) >> 3):
            byte = (packed[index] ^ flip) & 0xFF
            if index == a >> 3:
                byte &= 0xFF >> (a & 7)
            if index == (b - 1) >> 3 and b & 7:
                byte &= (0xFF << (8 - (b & 7))) & 0xFF
            for bit in range(POPCOUNT8[byte]):
                position = 8 * index + SET_BITS[byte, bit]
                gap = position - previous - 1
                previous = position
                ubit += gap >> k
                unary[ubit >> 3] |= 0x80 >> (ubit & 7)
                ubit += 1
                if k:
                    acc = (acc << k) | (gap & mask)
                    held += k
                    while held >= 8:
                        held -= 8
                        remainders[rbyte] = (acc >> held) & 0xFF
                        rbyte += 1
                    acc &= (1 << held) - 1
    if held:
        remainders[rbyte] = (acc << (8 - held)) & 0xFF
    used[0] = ubit
    used[1] = 8 * rbyte + held


def _row_table(counts: np.ndarray, nbits: np.ndarray) -> tuple[int, int, int, np.ndarray, np.ndarray, np.ndarray]:
    """The shortest row table for these per-row counts of rows of ``nbits``: (count mode, count k, row k, the
    rows in the table, the row codes, the count codes); the lowest mode among equals."""
    nonempty = np.flatnonzero(counts)
    row_codes = _changes(nonempty, -1) - 1
    row_bits, row_k = best_parameter(row_codes)
    options = []
    for mode in range(8):
        every_row = mode & ALL_ROWS
        rows = slice(None) if every_row else nonempty
        counted = nbits[rows] - counts[rows] if mode & COMPLEMENT else counts[rows]
        if mode & DELTA:
            changes = _changes(counted, 0)
            coded = np.where(changes >= 0, 2 * changes, -2 * changes - 1)
        else:
            coded = counted if mode & (ALL_ROWS | COMPLEMENT) else counted - 1
        count_bits, count_k = best_parameter(coded)
        options.append((count_bits + (0 if every_row else row_bits), mode, count_k, every_row, coded))
    _, mode, count_k, every_row, coded = min(options, key=lambda option: option[:2])
    if every_row:
        return mode, count_k, 0, np.arange(counts.size), np.zeros(0, dtype=np.int64), coded
    return mode, count_k, row_k, nonempty, row_codes, coded


def _changes(values: np.ndarray, before: int) -> np.ndarray:
    """``values[i] - values[i - 1]``, with ``before`` as ``values[-1]`` (``np.diff`` with ``prepend``, lighter)."""
    changes = np.empty(values.size, dtype=np.int64)
    if values.size:
        changes[0] = values[0] - before
        np.subtract(values[1:], values[:-1], out=changes[1:])
    return changes


def best_parameter(values: np.ndarray) -> tuple[int, int]:
    """(bits, k) of the Rice parameter 0..31 that codes ``values`` shortest, the smallest k among equals. The
    size is convex in k (going to k + 1 saves ceil(floor(x / 2^k) / 2) bits per value, fewer for every larger
    k, and costs one), so a walk from the mean's bit length finds it in a few steps."""
    if not values.size:
        return 0, 0

    def size(k: int) -> int:
        return int((values >> k).sum()) + values.size * (k + 1)

    k = min(31, max(0, (int(values.sum()) // values.size).bit_length() - 1))
    bits = size(k)
    while k > 0 and (smaller := size(k - 1)) <= bits:
        k, bits = k - 1, smaller
    while k < 31 and (larger := size(k + 1)) < bits:
        k, bits = k + 1, larger
    return bits, k


def _rows(packed: np.ndarray, numel: int, row_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(set bits per row, flat positions of each row's listed value: set bits where they are at most half the
    row, clear bits elsewhere), a group of whole rows (a multiple of 8) at a time."""
    nrows = -(-numel // row_bits)
    group = max(8, GROUP_BITS // row_bits // 8 * 8)
    counts, listed = [], []
    for first in range(0, nrows, group):
        start, end = first * row_bits, min((first + group) * row_bits, numel)
        bools = np.zeros(-(-(end - start) // row_bits) * row_bits, dtype=np.bool_)
        bools[: end - start] = np.unpackbits(packed[start // 8 : -(-end // 8)], count=end - start).view(np.bool_)
        grid = bools.reshape(-1, row_bits)
        row_counts = grid.sum(axis=1)
        nbits = np.minimum(row_bits, numel - (first + np.arange(grid.shape[0])) * row_bits)
        clear_listed = 2 * row_counts > nbits
        grid ^= clear_listed[:, None]  # listed bits are now the set ones
        bools[end - start :] = False  # a short last row's tail is not part of the tensor
        counts.append(row_counts)
        listed.append(np.flatnonzero(bools) + start)
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(counts).astype(np.int64), np.concatenate(listed)


def _streams(values: np.ndarray, widths: np.ndarray) -> tuple[bytes, bytes]:
    """The unary stream (``values >> widths`` zeros, then a 1, per value) and the remainder stream (the low
    ``widths`` bits of each value, MSB first), each zero-padded to whole bytes."""
    if not values.size:
        return b"", b""
    ends = np.cumsum((values >> widths) + 1) - 1
    unary = from_positions(ends, int(ends[-1]) + 1)
    starts = np.cumsum(widths) - widths
    bits = np.zeros(int(widths.sum()), dtype=np.bool_)
    for bit in range(int(widths.max())):
        coded = widths > bit
        bits[starts[coded] + widths[coded] - 1 - bit] = (values[coded] >> bit) & 1
    return unary.tobytes(), np.packbits(bits).tobytes()
