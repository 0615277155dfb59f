"""The compiled kernels of the "rice" encoding (FORMAT.md section 5.3): finding and writing a block's gaps,
and decoding a block's positions into positions, packed bits or an intersection count. ``rice`` calls them
where numba is installed (``Kernel.compiled``) and runs its numpy paths otherwise.
"""

from __future__ import annotations

import numpy as np

from ..accel import Kernel
from ..packed import POPCOUNT8, SET_BITS

# The kernels move bit-plane bytes to and from 8 remainders at a time, as the 8 bytes ("lanes") of one int64:
_SPREAD = np.array([sum(((byte >> (7 - i)) & 1) << (8 * i) for i in range(8)) for byte in range(256)], np.int64)
_LANE_BITS = 0x0101010101010101  # bit 0 of every lane; _SPREAD[byte]: its bits (MSB first) in lanes 0..7
_CHUNK = 256  # terminators decoded per pass of ``rice_block``
_GATHER = sum(1 << (63 - 9 * i) for i in range(8)) - (1 << 64)  # ((lanes & _LANE_BITS) * _GATHER) >> 56 & 0xFF
#   has lane i's bit at bit 7 - i: the inverse of _SPREAD (int64, which wraps as uint64 would)
POSITIONS, PACKED, COUNT = 0, 1, 2  # what ``rice_block`` makes of a block's positions


@Kernel
def rice_gaps(block, nbits, value, gaps):  # pragma: no cover - compiled by numba
    """Write the gaps between the block's bits equal to ``value`` into ``gaps`` (8 entries longer than
    their count); return the last position."""
    flip = 0 if value else 0xFF
    nbytes = (nbits + 7) // 8
    found = 0  # positions first, found branch-free: write 8 candidates per byte, keep popcount of them
    sparse = gaps.size < nbytes // 8
    for group in range(0, nbytes, 8):
        stop = min(group + 8, nbytes)
        any_listed = 0
        for index in range(group, stop):
            any_listed |= block[index] ^ flip
        if not any_listed & 0xFF:  # sparse blocks: skip 8 bytes at a time
            continue
        for index in range(group, stop):
            byte = (block[index] ^ flip) & 0xFF
            if index == nbytes - 1 and nbits % 8:
                byte &= (0xFF << (8 - nbits % 8)) & 0xFF
            if sparse and not byte:  # a well-predicted skip where most bytes list nothing
                continue
            for i in range(8):
                gaps[found + i] = 8 * index + SET_BITS[byte, i]
            found += POPCOUNT8[byte]
    last = -1
    for j in range(found):
        position = gaps[j]
        gaps[j] = position - last - 1
        last = position
    return last


@Kernel
def rice_write(gaps, value, k_first, k_stop, out):  # pragma: no cover - compiled by numba
    """Write one block's code (header included) into ``out`` with the k in [k_first, k_stop) that codes
    ``gaps`` shortest (the first of equals); return its length in bytes."""
    count = gaps.size
    first = second = third = 0  # sum(gaps >> k) for the (up to 3) candidates, in one pass
    for gap in gaps:
        first += gap >> k_first
        second += gap >> (k_first + 1)
        third += gap >> (k_first + 2)
    k, quotients = k_first, first
    for candidate, total in ((k_first + 1, second), (k_first + 2, third)):
        if candidate < k_stop and total + count * candidate < quotients + count * k:
            k, quotients = candidate, total
    unary_nbytes = (quotients + count + 7) // 8
    plane_nbytes = (count + 7) // 8
    header = 12
    out[0], out[1], out[2], out[3] = value, k, 0, 0
    for byte in range(4):
        out[4 + byte] = (count >> (8 * byte)) & 0xFF
        out[8 + byte] = (unary_nbytes >> (8 * byte)) & 0xFF
    end = header + unary_nbytes + k * plane_nbytes
    out[header:end] = 0
    bit = 0
    planes = header + unary_nbytes
    for group in range(plane_nbytes):  # 8 gaps at a time: their low bytes side by side in one word
        lanes = 0
        for lane in range(min(8, count - 8 * group)):
            gap = gaps[8 * group + lane]
            bit += gap >> k
            out[header + (bit >> 3)] |= 0x80 >> (bit & 7)
            bit += 1
            lanes |= (gap & 0xFF) << (8 * lane)
            for plane in range(8, k):
                out[planes + plane * plane_nbytes + group] |= ((gap >> plane) & 1) << (7 - lane)
        for plane in range(min(k, 8)):
            out[planes + plane * plane_nbytes + group] = ((((lanes >> plane) & _LANE_BITS) * _GATHER) >> 56) & 0xFF
    return end


@Kernel
def rice_block(payload, start, unary_nbytes, count, k, nbits, value, mode, base, positions, bits):
    """Decode one block's listed positions from ``payload[start:]`` (header checked) and, per ``mode``
    (block at flat index ``base``): POSITIONS writes the block's set positions + base to ``positions``,
    PACKED sets (value 1) or clears (value 0) them in ``bits``, COUNT counts the set ones set in ``bits``.
    Returns how many were written (POSITIONS) or counted (COUNT), or -1 for a bad block. PACKED with a
    non-empty ``positions`` (value 1) also writes the positions it sets there, as many as fit, and returns how
    many it set (more than fit: the caller clears the span instead)."""
    # Tight passes per chunk of terminators, each simpler (and together faster) than one fused loop: find the
    # unary terminators 64 bits at a time (count leading zeros); spread 8 remainders' bit-plane bytes into one
    # byte each; turn terminators into positions (listed i = (zeros before terminator i) << k + i + the
    # remainders summed to i); use the positions.
    plane_nbytes = (count + 7) // 8
    planes = start + unary_nbytes
    stop = start + unary_nbytes
    limit = nbits >> k
    listed = np.empty(_CHUNK + 72, dtype=np.int64)  # a word's 64 terminators, and 8 candidates
    low_words = np.empty((_CHUNK + 64) // 8, dtype=np.int64)  # 8 remainders' bits 0-7, one per byte
    high_words = np.empty_like(low_words)  # their bits 8-15
    low_bytes, high_bytes = low_words.view(np.uint8), high_words.view(np.uint8)  # byte i: lane i (numba's
    #   targets are little-endian)
    top = np.zeros(_CHUNK + 64, dtype=np.int64)  # their bits 16 and up
    found = j = done = low_sum = 0
    previous = base - 1  # the last listed flat index (POSITIONS of a value 0 block)
    for offset in range(start, stop, 8):
        for index in range(offset, min(offset + 8, stop)):  # a byte's terminators from tables, branch-free:
            byte = payload[index]                            # 8 candidates written, its popcount of them kept
            used = 8 * (index - start)
            for i in range(8):
                listed[found + i] = used + SET_BITS[byte, i]
            found += POPCOUNT8[byte]
        if found < _CHUNK and offset + 8 < stop:
            continue
        if j + found > count:
            return -1
        take = found if offset + 8 >= stop else found & ~7  # whole groups of 8 remainders, but for the last
        if not take:
            continue
        if listed[take - 1] - (j + take - 1) > limit:  # zeros before terminator i, less i, never decrease:
            return -1                                    # the last bounds all (larger could overflow below)
        for group in range(0, take, 8):  # the low 16 bits of 8 remainders, 8 bits side by side in two words
            lanes = lanes_high = 0
            at = planes + ((j + group) >> 3)
            for plane in range(min(k, 8)):
                lanes |= _SPREAD[payload[at + plane * plane_nbytes]] << plane
            for plane in range(8, min(k, 16)):
                lanes_high |= _SPREAD[payload[at + plane * plane_nbytes]] << (plane - 8)
            low_words[group >> 3] = lanes
            high_words[group >> 3] = lanes_high
            for plane in range(16, k):
                for lane in range(8):
                    top[group + lane] |= ((payload[at + plane * plane_nbytes] >> (7 - lane)) & 1) << plane
        # branch-free: listed i = (zeros before terminator i) << k + i + the remainders summed to i
        if k <= 8:  # most blocks (density above 1/400): one table of remainders
            for i in range(take):
                low_sum += low_bytes[i]
                listed[i] = ((listed[i] - j - i) << k) + j + i + low_sum + base
        else:
            for i in range(take):
                low_sum += low_bytes[i] | (high_bytes[i] << 8) | top[i]
                listed[i] = ((listed[i] - j - i) << k) + j + i + low_sum + base
        if k > 16:
            top[:take] = 0
        j += take
        if listed[take - 1] >= base + nbits:  # positions ascend: the last is the largest
            return -1
        if mode == POSITIONS and value:
            positions[done : done + take] = listed[:take]
            done += take
        elif mode == POSITIONS:
            for i in range(take):
                for other in range(previous + 1, listed[i]):
                    positions[done] = other
                    done += 1
                previous = listed[i]
        elif mode == PACKED and value:
            for i in range(take):
                bits[listed[i] >> 3] |= 0x80 >> (listed[i] & 7)
            if positions.size:  # also noted, for a caller that clears them again (as many as fit)
                if done + take <= positions.size:
                    positions[done : done + take] = listed[:take]
                done += take
        elif mode == PACKED:
            for i in range(take):
                bits[listed[i] >> 3] &= ~(0x80 >> (listed[i] & 7))
        else:
            for i in range(take):
                done += (bits[listed[i] >> 3] >> (7 - (listed[i] & 7))) & 1
        listed[: found - take] = listed[take:found]
        found -= take
    if j != count:
        return -1
    if not value and mode == POSITIONS:
        for other in range(previous + 1, base + nbits):
            positions[done] = other
            done += 1
    elif not value and mode == COUNT:  # the set bits are the unlisted ones: all set bits in range less the listed
        ones = 0
        for index in range(base >> 3, (base + nbits + 7) >> 3):
            ones += POPCOUNT8[bits[index]]
        done = ones - done
    return done
