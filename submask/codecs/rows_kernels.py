"""The compiled decoder of "rice-rows" payloads (FORMAT.md section 5.5); ``rows.py`` holds the numpy path,
which gives the same bits and rejects the same payloads.

The codes come in groups of one Rice parameter each: the row gaps, the counts, then each non-empty row's
gaps. A group is decoded in tight passes (the quotients, counting leading zeros over a 64-bit window of the
unary stream; the remainders, shifted out of a window of the other stream; then the use of the values), each
simpler, and together faster, than one loop doing all.
"""

from __future__ import annotations

from ..accel import Kernel, leading_zeros
from ..packed import POPCOUNT8

ROW_TABLE, POSITIONS, PACKED, COUNT = 0, 1, 2, 3  # what ``rows_kernel`` makes of the payload


@Kernel
def rows_kernel(data, unary_start, unary_nbytes, nonempty, count_mode, count_k, row_k, row_bits, numel,
                rows, counts, scratch, mode, positions, bits, first, stop, origin,
                state):  # pragma: no cover - compiled by numba
    """Decode the groups of codes ``first`` to ``stop`` of a payload whose header is checked: group 0, the row
    codes, and 1, the counts, fill ``rows`` and ``counts`` (the table's rows and their set bits; ``scratch``
    holds at least ``nonempty`` values and any table row's listed positions); group 2 + j decodes table row j, per
    ``mode``: write its flat set positions to ``positions`` (POSITIONS), set its set bits in ``bits``, whose
    bit 0 is flat index ``origin`` (PACKED; zeros on entry), or count its set bits also set in ``bits``
    (COUNT). A call that does not start at group 0 continues where the last stopped (``state`` keeps the
    readers' places). Returns that count (COUNT), the set bits of the table (the other modes), or -1 for a bad
    payload; the ends of the streams are checked by the call that ends at the last group."""
    unary_end = unary_start + unary_nbytes
    rem_end = data.size
    nrows = (numel + row_bits - 1) // row_bits
    every_row = count_mode & 2  # the table holds every row: no row codes, counts from 0
    if first == 0:
        ubuf = ufill = rbuf = rfill = ones = 0  # the streams' windows (next bit in bit 63) and the bits in them
        upos, rpos = unary_start, unary_end  # the next byte of each stream
        if every_row:
            for j in range(nonempty):
                rows[j] = j
    else:
        ubuf, ufill, upos = state[0], state[1], state[2]
        rbuf, rfill, rpos, ones = state[3], state[4], state[5], state[6]
    total = 0
    for group in range(max(first, 1 if every_row else 0), stop):
        value = 1
        n = base = 0
        if group < 2:  # the row table: row gaps, then counts
            listed, k, limit = nonempty, row_k if group == 0 else count_k, 1 << 53
        else:
            row = rows[group - 2]
            n = min(row_bits, numel - row * row_bits)
            base = row * row_bits - origin
            c = counts[group - 2]
            value = 1 if 2 * c <= n else 0
            listed = c if value else n - c
            k = 0
            if listed:
                while 2048 * listed * (1 << k) < 493 * (2 * n - listed):
                    k += 1
            limit = n
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
        for j in range(listed):  # quotients: zeros, then a 1
            quotient = 0
            while ubuf == 0:
                if upos >= unary_end:
                    return -1
                quotient += ufill
                ubuf = ufill = 0
                while ufill < 64 and upos < unary_end:
                    ubuf |= data[upos] << (56 - ufill)
                    ufill += 8
                    upos += 1
            zeros = leading_zeros(ubuf)
            quotient += zeros
            ubuf = (ubuf << zeros) << 1
            ufill -= zeros + 1
            if quotient > limit >> k:
                return -1
            scratch[j] = quotient << k
        if k:
            mask = (1 << k) - 1
            for j in range(listed):  # remainders, k bits each
                if rfill < k:  # 32 more bits at once where the stream has them, else byte by byte
                    if rpos + 4 <= rem_end:
                        word = (data[rpos] << 24) | (data[rpos + 1] << 16) | (data[rpos + 2] << 8) | data[rpos + 3]
                        rbuf |= word << (32 - rfill)
                        rfill += 32
                        rpos += 4
                    while rfill <= 56 and rpos < rem_end:
                        rbuf |= data[rpos] << (56 - rfill)
                        rfill += 8
                        rpos += 1
                    if rfill < k:
                        return -1
                scratch[j] |= (rbuf >> (64 - k)) & mask
                rbuf <<= k
                rfill -= k
        if group == 0:
            row = -1
            for j in range(listed):
                row += scratch[j] + 1  # each step at most 2^53 + 1: checked before a sum could wrap
                if row >= nrows:
                    return -1
                rows[j] = row
            continue
        if group == 1:
            counted = 0  # set bits, or clear bits with the complement flag
            for j in range(listed):
                coded = scratch[j]
                if not count_mode & 1:
                    counted = coded if every_row or count_mode & 4 else coded + 1
                elif coded & 1:
                    counted -= (coded + 1) // 2
                else:
                    counted += coded // 2
                n = min(row_bits, numel - rows[j] * row_bits)
                c = n - counted if count_mode & 4 else counted
                if counted < 0 or c < (0 if every_row else 1) or c > n:
                    return -1
                counts[j] = c
                ones += c
            continue
        span = listed - 1  # the last listed position: gaps + 1 summed, less 1, checked before any use
        for j in range(listed):
            span += scratch[j]
        if span >= n:
            return -1
        at = base - 1
        if mode == PACKED:
            for j in range(listed):
                at += scratch[j] + 1
                bits[at >> 3] ^= 0x80 >> (at & 7)
        elif mode == POSITIONS and value:
            for j in range(listed):
                at += scratch[j] + 1
                positions[total + j] = at
            total += listed
        elif mode == POSITIONS:
            for j in range(listed + 1):  # the clear bits between listed ones, and after the last
                following = at + scratch[j] + 1 if j < listed else base + n
                for other in range(at + 1, following):
                    positions[total] = other
                    total += 1
                at = following
        else:
            hits = 0
            for j in range(listed):
                at += scratch[j] + 1
                hits += (bits[at >> 3] >> (7 - (at & 7))) & 1
            if value:
                total += hits
            else:  # the set bits are the unlisted ones: those set in ``bits`` over the row, less the listed
                a, b = base, base + n
                while a < b and a & 7:
                    total += (bits[a >> 3] >> (7 - (a & 7))) & 1
                    a += 1
                while a + 8 <= b:
                    total += POPCOUNT8[bits[a >> 3]]
                    a += 8
                while a < b:
                    total += (bits[a >> 3] >> (7 - (a & 7))) & 1
                    a += 1
                total -= hits
    state[0], state[1], state[2], state[3], state[4], state[5], state[6] = ubuf, ufill, upos, rbuf, rfill, rpos, ones
    if stop < 2 + nonempty:
        return ones if mode != COUNT else total
    # both streams must end here: the unary one in its last byte, the remainders with zero pad bits
    consumed = 8 * (upos - unary_start) - ufill
    if ubuf != 0 or upos != unary_end or (unary_nbytes and consumed <= 8 * (unary_nbytes - 1)):
        return -1
    consumed = 8 * (rpos - unary_end) - rfill
    if (consumed + 7) // 8 != rem_end - unary_end or rbuf != 0:
        return -1
    return total if mode == COUNT else ones
