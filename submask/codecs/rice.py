"""The "rice" encoding: Rice-coded gaps between the positions of the rarer value, block by block
(FORMAT.md section 5.3), with numba kernels for encoding, decoding and intersection counts where numba is
installed and numpy paths otherwise (the two give identical bytes, bits and errors).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..accel import Kernel, leading_zeros
from ..errors import FormatError
from ..packed import POPCOUNT8, SET_BITS, clear_padding, from_positions, packed_nbytes, popcount, set_positions
from .base import CHUNK_BYTES, Codec, IntersectionCounter, PositionsDecoder, Run, allocate_packed


_BLOCK_HEADER = struct.Struct("<BBHII")  # coded value, k, reserved, position count, unary bytes
# The kernels move bit-plane bytes to and from 8 remainders at a time, as the 8 bytes ("lanes") of one int64:
_SPREAD = np.array([sum(((byte >> (7 - i)) & 1) << (8 * i) for i in range(8)) for byte in range(256)], np.int64)
_LANE_BITS = 0x0101010101010101  # bit 0 of every lane; _SPREAD[byte]: its bits (MSB first) in lanes 0..7
_CHUNK = 256  # terminators decoded per pass of ``_rice_block``
_GATHER = sum(1 << (63 - 9 * i) for i in range(8)) - (1 << 64)  # ((lanes & _LANE_BITS) * _GATHER) >> 56 & 0xFF
#   has lane i's bit at bit 7 - i: the inverse of _SPREAD (int64, which wraps as uint64 would)
LONG_GAP = 1 << 17  # bits without a listed position that ``decode_chunks`` passes over as one Run


class RiceCodec(Codec, PositionsDecoder, IntersectionCounter):
    """Rice-coded gaps between the positions of the rarer value, block by block.

    The bits are cut into blocks of ``block_bits``; each block codes the positions of its own rarer
    value with its own Rice parameter, so rows and regions of different density each get a good code.
    """

    id = "rice"

    def __init__(self, block_bits: int = 1 << 22):
        self.block_bits = _check_block_bits(block_bits)

    def configured(self, config: dict[str, Any]) -> "RiceCodec":
        unknown = set(config) - {"block_bits"}
        if unknown:
            raise FormatError(f"unknown rice settings {sorted(unknown)}")
        return RiceCodec(config.get("block_bits", self.block_bits))

    def from_config(self, config: dict[str, Any]) -> "RiceCodec":
        _check_block_bits(config.get("block_bits"))  # a reader needs the block size the writer used
        return self.configured(config)

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        block_bytes = self.block_bits // 8
        parts = []
        for start in range(0, numel, self.block_bits):
            nbits = min(self.block_bits, numel - start)
            block = packed[start // 8 : start // 8 + block_bytes]
            parts.append(_encode_block(block, nbits))
        return b"".join(parts), {"block_bits": self.block_bits}

    def decode(self, payload: bytes, numel: int, out: np.ndarray | None = None) -> np.ndarray:
        block_bits = _check_length(payload, numel, self.block_bits)
        nblocks = -(-numel // block_bits)
        out = allocate_packed(numel) if out is None else out
        if _rice_block.compiled is not None:
            out.fill(0)
            _decode_compiled(payload, numel, block_bits, PACKED, out)
            return clear_padding(out, numel)
        offset = 0
        for index in range(nblocks):
            start = index * block_bits
            nbits = min(block_bits, numel - start)
            block, offset = _decode_block(payload, offset, nbits)
            out[start // 8 : start // 8 + block.size] = block
        if offset != len(payload):
            raise FormatError(f"rice payload has {len(payload) - offset} bytes after its last block")
        return out

    def decode_chunks(self, payload: bytes, numel: int) -> Iterator[np.ndarray | Run]:
        block_bits = _check_length(payload, numel, self.block_bits)
        offset = 0
        for start in range(0, numel, block_bits):
            nbits = min(block_bits, numel - start)
            value, listed, offset = _read_block(payload, offset, nbits)
            yield from _block_chunks(value, listed, nbits)
        if offset != len(payload):
            raise FormatError(f"rice payload has {len(payload) - offset} bytes after its last block")


    def positions(self, payload: bytes, numel: int) -> np.ndarray:
        return decode_positions(payload, numel, self.block_bits)

    def streams(self) -> bool:
        return rice_kernels_compiled()

    def intersection_count(self, payload: bytes, numel: int, packed: np.ndarray) -> tuple[int, int] | None:
        return rice_intersection_count(payload, numel, self.block_bits, packed)

def _block_chunks(value: int, listed: np.ndarray, nbits: int) -> Iterator[np.ndarray | Run]:
    """A block's packed bits from its listed positions: stretches of LONG_GAP bits or more without one as Runs
    of the unlisted value, the rest in arrays of at most CHUNK_BYTES that hold no such stretch, so the work
    follows the listed positions (the payload), not ``nbits``. Blocks start on whole bytes (block_bits is a
    multiple of 8), and so does every piece."""
    first = 0
    while first < nbits:
        index = int(np.searchsorted(listed, first))
        following = int(listed[index]) if index < listed.size else nbits
        run_end = following // 8 * 8
        if (following - first >= LONG_GAP or index == listed.size) and run_end > first:
            yield Run(0 if value else 0xFF, (run_end - first) // 8)
            first = run_end
            continue
        stop = min(first + 8 * CHUNK_BYTES, nbits)
        ahead = listed[index : int(np.searchsorted(listed, stop)) + 1]  # the positions before stop, and one more
        long_gaps = np.flatnonzero(np.diff(ahead) >= LONG_GAP)
        last = int(ahead[long_gaps[0]]) if long_gaps.size else int(ahead[-1]) if ahead.size else stop
        if long_gaps.size or stop - last >= LONG_GAP:  # end the piece just after its last listed position
            stop = min(stop, (last // 8 + 1) * 8)
        bools = np.full(stop - first, not value, dtype=np.bool_)
        bools[listed[index : int(np.searchsorted(listed, stop))] - first] = bool(value)
        yield np.packbits(bools)
        first = stop


def _check_length(payload: bytes, numel: int, block_bits: int) -> int:
    """``block_bits``, once the payload is known to hold every block's header."""
    nblocks = -(-numel // block_bits)
    if len(payload) < nblocks * _BLOCK_HEADER.size:
        raise FormatError(f"rice payload of {len(payload)} bytes is too short for {nblocks} blocks")
    return block_bits


def _check_block_bits(block_bits: Any) -> int:
    if type(block_bits) is not int or block_bits <= 0 or block_bits % 8 or block_bits > 1 << 32:
        raise FormatError(f"rice block_bits must be a positive multiple of 8 up to 2^32, got {block_bits!r}")
    return block_bits


def _encode_block(block: np.ndarray, nbits: int) -> bytes:
    ones = popcount(block)
    value = 1 if 2 * ones <= nbits else 0
    count = ones if value else nbits - ones
    gaps_kernel, write_kernel = _rice_gaps.compiled, _rice_write.compiled
    if gaps_kernel is not None and write_kernel is not None and count:
        gaps = np.empty(count + 8, dtype=np.int64)
        last = gaps_kernel(block, nbits, value, gaps)
        gaps = gaps[:count]
        mean = (last + 1 - count) / count  # the mean gap, as gaps.mean() computes it
        k_first, k_stop = _rice_candidates(mean)
        out = np.empty(_BLOCK_HEADER.size + (nbits + count) // 8 + 1 + (k_stop - 1) * ((count + 7) // 8), np.uint8)
        return out[: write_kernel(gaps, value, k_first, k_stop, out)].tobytes()
    positions = set_positions(block if value else clear_padding(~block, nbits), nbits)
    count = positions.size
    if count == 0:
        return _BLOCK_HEADER.pack(value, 0, 0, 0, 0)
    gaps = np.diff(positions, prepend=-1) - 1
    k = _best_rice_parameter(gaps)
    quotients = gaps >> k
    unary = from_positions(np.cumsum(quotients + 1) - 1, int(quotients.sum()) + count)
    planes = [np.packbits(((gaps >> bit) & 1).astype(np.bool_)).tobytes() for bit in range(k)]
    return b"".join([_BLOCK_HEADER.pack(value, k, 0, count, unary.size), unary.tobytes(), *planes])


@Kernel
def _rice_gaps(block, nbits, value, gaps):  # pragma: no cover - compiled by numba
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
def _rice_write(gaps, value, k_first, k_stop, out):  # pragma: no cover - compiled by numba
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


def _decode_block(payload: bytes, offset: int, nbits: int) -> tuple[np.ndarray, int]:
    """Packed bits of one block and the offset after it."""
    value, listed, end = _read_block(payload, offset, nbits)
    bools = np.full(nbits, not value, dtype=np.bool_)
    bools[listed] = bool(value)
    return np.packbits(bools), end


def decode_positions(payload: bytes, numel: int, block_bits: int) -> np.ndarray:
    """Flat indices (int64, ascending) of the set bits of a "rice" payload, without building packed bits
    (``RiceCodec.positions``). Several times faster than ``decode`` + ``set_positions`` on sparse masks.
    Checks the same block structure as ``decode``; the CRC-32 of the bits is not checked.
    """
    if _rice_block.compiled is not None:
        return _decode_compiled(payload, numel, block_bits, POSITIONS, _NO_BITS)[0]
    blocks = []
    offset = 0
    for start in range(0, numel, block_bits):
        positions, offset = _block_positions(payload, offset, min(block_bits, numel - start))
        blocks.append((start, positions))
    if offset != len(payload):
        raise FormatError(f"rice payload has {len(payload) - offset} bytes after its last block")
    out = np.empty(sum(positions.size for _, positions in blocks), dtype=np.int64)
    cursor = 0
    for start, positions in blocks:
        np.add(positions, start, out=out[cursor : cursor + positions.size])
        cursor += positions.size
    return out


POSITIONS, PACKED, COUNT = 0, 1, 2  # what ``_rice_block`` makes of a block's positions
_NO_BITS = np.zeros(0, dtype=np.uint8)
_NO_POSITIONS = np.zeros(0, dtype=np.int64)


def _decode_compiled(payload: bytes, numel: int, block_bits: int, mode: int, bits: np.ndarray) -> tuple[Any, int]:
    """Run ``_rice_block`` over every block; returns (result, set bits). The result is, per ``mode``: the set
    positions (POSITIONS, int64), 0 with the set bits set in ``bits`` (PACKED; zeros on entry), or how many
    set bits are also set in ``bits`` (COUNT). Raises the numpy path's FormatError for a bad block."""
    kernel = _rice_block.compiled
    data = np.frombuffer(payload, dtype=np.uint8)
    blocks, error = [], None
    offset = 0
    try:
        for start in range(0, numel, block_bits):
            nbits = min(block_bits, numel - start)
            header = _read_header(payload, offset, nbits)
            blocks.append((start, nbits, offset, header))
            offset = header[-1]
        if offset != len(payload):
            raise FormatError(f"rice payload has {len(payload) - offset} bytes after its last block")
    except FormatError as exc:
        error = exc  # raised after the blocks before it, as the block-by-block numpy path would
    positions = _NO_POSITIONS
    if mode == POSITIONS:
        positions = np.empty(sum(h[2] if h[0] else nbits - h[2] for _, nbits, _, h in blocks), dtype=np.int64)
    total = 0
    for start, nbits, offset, (value, k, count, unary_nbytes, data_start, _) in blocks:
        if mode == PACKED and not value:
            bits[start // 8 : start // 8 + packed_nbytes(nbits)] = 0xFF
        done = kernel(data, data_start, unary_nbytes, count, k, nbits, value, mode, start, positions[total:], bits)
        if done < 0:
            _read_block(payload, offset, nbits)  # raises the numpy path's error for this block
            raise FormatError("rice block is invalid")  # pragma: no cover - the line above raises
        total += done
    if error is not None:
        raise error
    ones = sum(h[2] if h[0] else nbits - h[2] for _, nbits, _, h in blocks)  # the kernel checked each count
    return (positions if mode == POSITIONS else total), ones


def rice_kernels_compiled() -> bool:
    """True when the rice kernels run compiled (numba), so ``rice_intersection_count`` is available."""
    return _rice_block.compiled is not None


def rice_intersection_count(payload: bytes, numel: int, block_bits: int,
                            packed: np.ndarray) -> tuple[int, int] | None:
    """(set bits of a "rice" payload also set in ``packed``, set bits of the payload), streaming the payload
    without decoding it; None without compiled kernels. Checks the block structure, not the CRC-32."""
    if _rice_block.compiled is None:
        return None
    return _decode_compiled(payload, numel, _check_length(payload, numel, block_bits), COUNT, packed)


@Kernel
def _rice_block(payload, start, unary_nbytes, count, k, nbits, value, mode, base, positions, bits):
    """Decode one block's listed positions from ``payload[start:]`` (header checked) and, per ``mode``
    (block at flat index ``base``): POSITIONS writes the block's set positions + base to ``positions``,
    PACKED sets (value 1) or clears (value 0) them in ``bits``, COUNT counts the set ones set in ``bits``.
    Returns how many were written (POSITIONS) or counted (COUNT), or -1 for a bad block."""
    # Tight passes per chunk of terminators, each simpler (and together faster) than one fused loop: find the
    # unary terminators 64 bits at a time (count leading zeros); spread 8 remainders' bit-plane bytes into one
    # byte each; turn terminators into positions (listed i = (zeros before terminator i) << k + i + the
    # remainders summed to i); use the positions.
    plane_nbytes = (count + 7) // 8
    planes = start + unary_nbytes
    stop = start + unary_nbytes
    limit = nbits >> k
    listed = np.empty(_CHUNK + 64, dtype=np.int64)
    low_words = np.empty((_CHUNK + 64) // 8, dtype=np.int64)  # 8 remainders' bits 0-7, one per byte
    high_words = np.empty_like(low_words)  # their bits 8-15
    low_bytes, high_bytes = low_words.view(np.uint8), high_words.view(np.uint8)  # byte i: lane i (numba's
    #   targets are little-endian)
    top = np.zeros(_CHUNK + 64, dtype=np.int64)  # their bits 16 and up
    found = j = done = low_sum = 0
    previous = base - 1  # the last listed flat index (POSITIONS of a value 0 block)
    for offset in range(start, stop, 8):
        word = 0  # the next 64 unary bits, the first in bit 63
        if offset + 8 <= stop:
            for index in range(offset, offset + 8):
                word = (word << 8) | payload[index]
        else:
            for index in range(offset, stop):
                word = (word << 8) | payload[index]
            word <<= 8 * (offset + 8 - stop)
        used = 8 * (offset - start)  # unary bit index of the word's bit 63
        while word != 0:
            zeros = leading_zeros(word)
            word = (word << zeros) << 1
            listed[found] = used + zeros
            used += zeros + 1
            found += 1
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


def _block_positions(payload: bytes, offset: int, nbits: int) -> tuple[np.ndarray, int]:
    """Positions of the set bits of one block, relative to its start, and the offset after the block."""
    value, listed, end = _read_block(payload, offset, nbits)
    if value:
        return listed, end
    ones = np.ones(nbits, dtype=np.bool_)  # the block lists its zeros: the set bits are the other positions
    ones[listed] = False
    return np.flatnonzero(ones), end


def _read_header(payload: bytes, offset: int, nbits: int) -> tuple[int, int, int, int, int, int]:
    """One block header's value, k, count and unary bytes, the offset of its unary part and of the block's
    end, with the header checks of FORMAT.md section 5.3."""
    if offset + _BLOCK_HEADER.size > len(payload):
        raise FormatError("rice payload ends inside a block header")
    value, k, reserved, count, unary_nbytes = _BLOCK_HEADER.unpack_from(payload, offset)
    offset += _BLOCK_HEADER.size
    if value > 1 or reserved or k > 31 or count > nbits:
        raise FormatError(f"rice block header is invalid (value={value}, k={k}, count={count} of {nbits} bits)")
    end = offset + unary_nbytes + k * ((count + 7) // 8)
    if end > len(payload):
        raise FormatError("rice payload ends inside a block")
    return value, k, count, unary_nbytes, offset, end


def _read_block(payload: bytes, offset: int, nbits: int) -> tuple[int, np.ndarray, int]:
    """One block's coded value, its listed positions (ascending, relative to the block; int32 where they
    fit) and the offset after the block, with every structural check of FORMAT.md section 5.3."""
    value, k, count, unary_nbytes, offset, end = _read_header(payload, offset, nbits)
    plane_nbytes = (count + 7) // 8
    unary = np.frombuffer(payload, dtype=np.uint8, count=unary_nbytes, offset=offset)
    terminators = np.flatnonzero(np.unpackbits(unary).view(np.bool_))
    if terminators.size != count:
        raise FormatError(f"rice block codes {terminators.size} positions, its header says {count}")
    if not count:
        return value, np.zeros(0, dtype=np.int32), end
    # position i = (quotients summed to i) << k + (low bits summed to i) + i, where the quotients summed to
    # i are the zeros before the i-th unary terminator, t_i - i: a few whole-array passes, no gap array
    bound = ((int(terminators[-1]) - count + 1) << k) + count * (1 << k)  # exceeds every intermediate value
    dtype = np.int32 if bound < 1 << 31 else np.int64
    index = np.arange(count, dtype=dtype)
    positions = terminators.astype(dtype)
    positions -= index
    positions <<= k
    positions += index
    if k:
        planes = np.frombuffer(payload, dtype=np.uint8, count=k * plane_nbytes, offset=offset + unary_nbytes)
        bits = np.unpackbits(planes.reshape(k, plane_nbytes), axis=1, count=count)
        low_dtype = np.uint8 if k <= 8 else np.uint16 if k <= 16 else np.uint32
        low = bits[0].astype(low_dtype)
        for bit in range(1, k):
            low |= bits[bit].astype(low_dtype, copy=False) << low_dtype(bit)
        positions += np.cumsum(low, dtype=dtype)
    if positions[-1] >= nbits:
        raise FormatError(f"rice block codes a position past its {nbits} bits")
    return value, positions, end


def _rice_candidates(mean_gap: float) -> tuple[int, int]:
    """The Rice parameters worth trying, [first, stop), around the geometric optimum for this mean gap."""
    guess = max(0, int(math.log2(mean_gap * math.log(2) + 1))) if mean_gap > 0 else 0
    return max(0, guess - 1), min(32, guess + 2)


def _best_rice_parameter(gaps: np.ndarray) -> int:
    """The Rice parameter k minimising the coded size (the first of equals)."""
    candidates = range(*_rice_candidates(float(gaps.mean())))
    sizes = [int((gaps >> k).sum()) + gaps.size * k for k in candidates]
    return candidates[int(np.argmin(sizes))]
