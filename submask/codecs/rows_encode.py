"""Writing "rice-rows" payloads (FORMAT.md section 5.5) with whole-array numpy passes."""

from __future__ import annotations

import numpy as np

from ..packed import from_positions
from .rows import DELTA, DIRECT, HEADER, row_parameter

GROUP_BITS = 1 << 23  # bits unpacked at a time: what encoding costs in memory beyond the codes


def encode_rows(packed: np.ndarray, numel: int, row_bits: int) -> bytes:
    """The "rice-rows" payload of ``numel`` packed bits cut into rows of ``row_bits``."""
    counts, listed = _rows(packed, numel, row_bits)
    rows = np.flatnonzero(counts)
    counts = counts[rows]
    nbits = np.minimum(row_bits, numel - rows * row_bits)
    value = 2 * counts <= nbits
    listed_counts = np.where(value, counts, nbits - counts)
    within = listed - np.repeat(rows * row_bits, listed_counts)
    gaps = np.diff(within, prepend=-1) - 1
    firsts = np.cumsum(listed_counts) - listed_counts
    gaps[firsts[listed_counts > 0]] = within[firsts[listed_counts > 0]]  # each row's first gap counts from its start

    row_gaps = np.diff(rows, prepend=-1) - 1
    changes = np.diff(counts, prepend=0)
    modes = {DIRECT: counts - 1, DELTA: np.where(changes >= 0, 2 * changes, -2 * changes - 1)}
    (count_bits, count_k), count_mode = min((best_parameter(coded), mode) for mode, coded in modes.items())
    row_k = best_parameter(row_gaps)[1]
    values = np.concatenate([row_gaps, modes[count_mode], gaps])
    widths = np.concatenate([np.full(rows.size, row_k, dtype=np.int64), np.full(rows.size, count_k, dtype=np.int64),
                             np.repeat(row_parameter(listed_counts, nbits), listed_counts)])
    unary, remainders = _streams(values, widths)
    return HEADER.pack(count_mode, count_k, row_k, 0, rows.size, len(unary)) + unary + remainders


def best_parameter(values: np.ndarray) -> tuple[int, int]:
    """(bits, k) of the Rice parameter 0..31 that codes ``values`` shortest, the smallest k among equals."""
    sizes = [int((values >> k).sum()) + values.size * (k + 1) for k in range(32)]
    k = int(np.argmin(sizes))
    return sizes[k], k


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
