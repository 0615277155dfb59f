"""The compiled decoder of "rice-rows" payloads (FORMAT.md section 5.5); ``rows.py`` holds the numpy path,
which gives the same bits and rejects the same payloads.

Both streams are read through a 64-bit window each: unary codes with a count of leading zeros, remainders
by shifting out their bits, so one code costs a few instructions whatever its row.
"""

from __future__ import annotations

import numpy as np

from ..accel import Kernel, leading_zeros
from ..packed import POPCOUNT8

ROW_TABLE, POSITIONS, PACKED, COUNT = 0, 1, 2, 3  # what ``rows_kernel`` makes of the payload
_MASK64 = -1  # all 64 bits of an int64 window


@Kernel
def rows_kernel(data, unary_start, unary_nbytes, nonempty, count_mode, count_k, row_k, row_bits, numel,
                rows, counts, state, mode, positions, bits):  # pragma: no cover - compiled by numba
    """Decode a payload whose header is checked. ROW_TABLE fills ``rows`` and ``counts`` (the non-empty rows
    and their set bits) and keeps the readers' places in ``state``; the other modes continue from there
    over every row: POSITIONS writes the flat set positions to ``positions``, PACKED sets the set bits in
    ``bits`` (zeros on entry), COUNT counts the set bits also set in ``bits``. Returns that count (COUNT),
    0 otherwise, or -1 for a bad payload."""
    unary_end = unary_start + unary_nbytes
    rem_end = data.size
    nrows = (numel + row_bits - 1) // row_bits
    # reader state: unary window and bits in it, next unary byte; remainder window, bits, next byte
    ubuf, ufill, upos = state[0], state[1], state[2]
    rbuf, rfill, rpos = state[3], state[4], state[5]
    if mode == ROW_TABLE:
        upos, rpos = unary_start, unary_end
    total = 0
    ncodes = 2 * nonempty if mode == ROW_TABLE else nonempty
    row = -1
    previous = 0
    for i in range(ncodes):
        if mode == ROW_TABLE:
            k = row_k if i < nonempty else count_k
            if i == nonempty:
                row = -1
            limit = 1 << 53
            n = 0
            listed = 1
        else:
            row = rows[i]
            n = min(row_bits, numel - row * row_bits)
            c = counts[i]
            value = 1 if 2 * c <= n else 0
            listed = c if value else n - c
            k = 0
            if listed:
                while 2048 * listed * (1 << k) < 493 * (2 * n - listed):
                    k += 1
            limit = n
            base = row * row_bits
            if mode == PACKED and not value:  # the row lists its clear bits: set it all, flip the listed
                a, b = base, base + n
                while a < b and a & 7:
                    bits[a >> 3] |= 0x80 >> (a & 7)
                    a += 1
                while a + 8 <= b:
                    bits[a >> 3] = 0xFF
                    a += 8
                while a < b:
                    bits[a >> 3] |= 0x80 >> (a & 7)
                    a += 1
        position = -1
        hits = 0
        for j in range(listed):
            quotient = 0
            while True:  # the unary code: zeros, then a 1
                if ufill == 0:
                    if upos >= unary_end:
                        return -1
                    ubuf = 0
                    while ufill < 64 and upos < unary_end:
                        ubuf |= data[upos] << (56 - ufill)
                        ufill += 8
                        upos += 1
                if ubuf == 0:
                    quotient += ufill
                    ufill = 0
                    continue
                zeros = leading_zeros(ubuf)
                quotient += zeros
                ubuf = (ubuf << zeros) << 1
                ufill -= zeros + 1
                break
            if quotient > limit >> k:
                return -1
            remainder = 0
            if k:
                while rfill <= 56 and rpos < rem_end:
                    rbuf |= data[rpos] << (56 - rfill)
                    rfill += 8
                    rpos += 1
                if rfill < k:
                    return -1
                remainder = (rbuf >> (64 - k)) & ((1 << k) - 1)
                rbuf = rbuf << k
                rfill -= k
            coded = (quotient << k) | remainder
            if mode == ROW_TABLE:
                if i < nonempty:
                    row += coded + 1
                    if row >= nrows:
                        return -1
                    rows[i] = row
                else:
                    r = rows[i - nonempty]
                    n = min(row_bits, numel - r * row_bits)
                    if count_mode == 0:
                        c = coded + 1
                    elif coded & 1:
                        c = previous - (coded + 1) // 2
                    else:
                        c = previous + coded // 2
                    if c < 1 or c > n:
                        return -1
                    counts[i - nonempty] = c
                    previous = c
                continue
            position += coded + 1
            if position >= n:
                return -1
            at = base + position
            if mode == PACKED:
                bits[at >> 3] ^= 0x80 >> (at & 7)
            elif mode == COUNT:
                hits += (bits[at >> 3] >> (7 - (at & 7))) & 1
            elif value:
                positions[total] = at
                total += 1
            else:
                for other in range(base + position - coded, at):  # the clear bits since the last listed one
                    positions[total] = other
                    total += 1
        if mode == COUNT:
            if value:
                total += hits
            else:  # the set bits are the unlisted ones: those set in ``bits`` over the row, less the listed
                a, b = base, base + n
                ones = 0
                while a < b and a & 7:
                    ones += (bits[a >> 3] >> (7 - (a & 7))) & 1
                    a += 1
                while a + 8 <= b:
                    ones += POPCOUNT8[bits[a >> 3]]
                    a += 8
                while a < b:
                    ones += (bits[a >> 3] >> (7 - (a & 7))) & 1
                    a += 1
                total += ones - hits
        elif mode == POSITIONS and not value:
            for other in range(base + position + 1, base + n):
                positions[total] = other
                total += 1
    if mode == ROW_TABLE:
        state[0], state[1], state[2], state[3], state[4], state[5] = ubuf, ufill, upos, rbuf, rfill, rpos
        return 0
    # both streams must end here: the unary one in its last byte, the remainders with zero pad bits
    consumed = 8 * (upos - unary_start) - ufill
    if ubuf != 0 or upos != unary_end or (unary_nbytes and consumed <= 8 * (unary_nbytes - 1)):
        return -1
    consumed = 8 * (rpos - unary_end) - rfill
    if (consumed + 7) // 8 != rem_end - unary_end or rbuf != 0:
        return -1
    return total if mode != PACKED else 0
