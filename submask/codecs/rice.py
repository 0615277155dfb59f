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

from ..errors import FormatError
from ..limits import check_allocation
from ..packed import clear_padding, from_positions, packed_nbytes, popcount, set_positions
from ..workers import KEPT_BYTES, thread_buffer
from .base import CHUNK_BYTES, Codec, IntersectionCounter, PositionsDecoder, Run, allocate_packed, check_settings
from .rice_kernels import COUNT, PACKED, POSITIONS, rice_block, rice_gaps, rice_write

_BLOCK_HEADER = struct.Struct("<BBHII")  # coded value, k, reserved, position count, unary bytes
LONG_GAP = 1 << 17  # bits without a listed position that ``decode_chunks`` passes over as one Run


class RiceCodec(Codec, PositionsDecoder, IntersectionCounter):
    """Rice-coded gaps between the positions of the rarer value, block by block.

    The bits are cut into blocks of ``block_bits``; each block codes the positions of its own rarer
    value with its own Rice parameter, so rows and regions of different density each get a good code.
    """

    id = "rice"

    def __init__(self, block_bits: int = 1 << 22):
        self.block_bits = _check_block_bits(block_bits)

    def configured(self, config: dict[str, Any]) -> RiceCodec:
        check_settings(self.id, config, "block_bits")
        return RiceCodec(config.get("block_bits", self.block_bits))

    def from_config(self, config: dict[str, Any]) -> RiceCodec:
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
        if rice_block.compiled is not None:
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
    if not count:  # all one value (a frozen or wholly trained block): no positions to look for
        return _BLOCK_HEADER.pack(value, 0, 0, 0, 0)
    gaps_kernel, write_kernel = rice_gaps.compiled, rice_write.compiled
    if gaps_kernel is not None and write_kernel is not None:
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


def _decode_block(payload: bytes, offset: int, nbits: int) -> tuple[np.ndarray, int]:
    """Packed bits of one block and the offset after it."""
    value, listed, end = _read_block(payload, offset, nbits)
    return np.packbits(_block_bools(value, listed, nbits)), end


def _block_bools(value: int, listed: np.ndarray, nbits: int) -> np.ndarray:
    """A block's bits as bools, from its coded value and listed positions, in this thread's scratch."""
    bools = _scratch("rice bools", nbits).view(np.bool_)
    bools.fill(not value)
    bools[listed] = bool(value)
    return bools


def decode_positions(payload: bytes, numel: int, block_bits: int) -> np.ndarray:
    """Flat indices (int64, ascending) of the set bits of a "rice" payload, without building packed bits
    (``RiceCodec.positions``). Several times faster than ``decode`` + ``set_positions`` on sparse masks.
    Checks the same block structure as ``decode``; the CRC-32 of the bits is not checked.
    """
    if rice_block.compiled is not None:
        return _decode_compiled(payload, numel, block_bits, POSITIONS, _NO_BITS)[0]
    blocks = []
    offset = 0
    for start in range(0, numel, block_bits):
        positions, offset = _block_positions(payload, offset, min(block_bits, numel - start))
        blocks.append((start, positions))
    if offset != len(payload):
        raise FormatError(f"rice payload has {len(payload) - offset} bytes after its last block")
    if len(blocks) == 1:
        return blocks[0][1]  # its own array, from the block's start
    out = np.empty(sum(positions.size for _, positions in blocks), dtype=np.int64)
    cursor = 0
    for start, positions in blocks:
        np.add(positions, start, out=out[cursor : cursor + positions.size])
        cursor += positions.size
    return out


_NO_BITS = np.zeros(0, dtype=np.uint8)
_NO_POSITIONS = np.zeros(0, dtype=np.int64)


def _decode_compiled(payload: bytes, numel: int, block_bits: int, mode: int, bits: np.ndarray) -> tuple[Any, int]:
    """Run ``rice_block`` over every block; returns (result, set bits). The result is, per ``mode``: the set
    positions (POSITIONS, int64), 0 with the set bits set in ``bits`` (PACKED; zeros on entry), or how many
    set bits are also set in ``bits`` (COUNT). Raises the numpy path's FormatError for a bad block."""
    kernel = rice_block.compiled
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
        listed = sum(h[2] if h[0] else nbits - h[2] for _, nbits, _, h in blocks)
        check_allocation(8 * listed, f"{listed:,} set positions")
        positions = np.empty(listed, dtype=np.int64)
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
    return rice_block.compiled is not None


def rice_intersection_count(payload: bytes, numel: int, block_bits: int,
                            packed: np.ndarray) -> tuple[int, int] | None:
    """(set bits of a "rice" payload also set in ``packed``, set bits of the payload), streaming the payload
    without decoding it; None without compiled kernels. Checks the block structure, not the CRC-32."""
    if rice_block.compiled is None:
        return None
    return _decode_compiled(payload, numel, _check_length(payload, numel, block_bits), COUNT, packed)


def _block_positions(payload: bytes, offset: int, nbits: int) -> tuple[np.ndarray, int]:
    """Positions of the set bits of one block, relative to its start, and the offset after the block."""
    value, listed, end = _read_block(payload, offset, nbits)
    if value:
        return listed, end
    return np.flatnonzero(_block_bools(value, listed, nbits)), end  # the block lists its zeros


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
    """One block's coded value, its listed positions (int64, ascending, relative to the block) and the offset
    after the block, with every structural check of FORMAT.md section 5.3."""
    value, k, count, unary_nbytes, offset, end = _read_header(payload, offset, nbits)
    unary = np.frombuffer(payload, dtype=np.uint8, count=unary_nbytes, offset=offset)
    bools = _scratch("rice unary", 8 * unary_nbytes).view(np.bool_)
    _UNPACKED.take(unary, axis=0, mode="clip", out=bools.reshape(unary_nbytes, 8))
    positions = np.flatnonzero(bools)  # the unary terminators t_i, made the positions in place
    if positions.size != count:
        raise FormatError(f"rice block codes {positions.size} positions, its header says {count}")
    # position i = ((t_i - i) << k) + i + r_0 + ... + r_i, where t_i - i (the zeros before the i-th terminator)
    # sums the quotients and r_j is the remainder of gap j; that is (t_i << k) - (D_i - (2^k - 1)), D_i the sum
    # of 2^k - 1 - r_j over j <= i, computed in place without an index array. Its first term is at most position
    # i: below nbits (else the block is bad), it keeps every value below 2^32 + (count << k), inside int64 for
    # any block under 16 GiB
    if count and (int(positions[-1]) + 1 - count) << k >= nbits:
        raise FormatError(f"rice block codes a position past its {nbits} bits")
    if count and k:
        plane_nbytes = (count + 7) // 8
        planes = np.frombuffer(payload, dtype=np.uint8, count=k * plane_nbytes, offset=offset + unary_nbytes)
        positions <<= k
        _subtract_complement_sums(positions, planes.reshape(k, plane_nbytes))
    if count and positions[-1] >= nbits:
        raise FormatError(f"rice block codes a position past its {nbits} bits")
    return value, positions, end


_UNPACKED = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).view(np.bool_)  # a byte's bits, MSB first
#: per byte x of a bit plane and lane width: the 8 bits of ~x, MSB first, one per lane of that many bits
_SPREAD = {width: np.unpackbits(~np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(f"<u{width // 8}")
           for width in (8, 16, 32)}


def _subtract_complement_sums(positions: np.ndarray, planes: np.ndarray) -> None:
    """Subtract D_i - (2^k - 1) from each ``positions[i]`` (t_i << k), which makes it position i (the identity in
    ``_read_block``); D_i sums 2^k - 1 - r_j over j <= i, the remainders r_j in the k bit ``planes``.

    The complemented remainders go into lanes of 8, 16 or 32 bits, narrow enough that a 64-bit word of lanes
    holds their sums: multiplying a word by 0x0101...01 (a 1 per lane) sums each lane with the lanes before it,
    so numpy's serial cumsum (slow: 2 ns a value) runs over the words' totals only, 8 times fewer for k <= 5."""
    k, plane_nbytes = planes.shape
    width = 8 if k <= 5 else 16 if k <= 14 else 32  # the widest sum of a word, (64 / width) (2^k - 1), must fit
    per_word, spread = 64 // width, _SPREAD[width]
    nwords = plane_nbytes * 8 // per_word
    scratch = _scratch("rice planes", 8 * nwords * (k + 3)).view("<u8").reshape(k + 3, nwords)
    spread_planes, words, totals, starts = scratch[:k], scratch[k], scratch[k + 1], scratch[k + 2].view("<i8")
    spread.take(planes, axis=0, mode="clip", out=spread_planes.view(spread.dtype).reshape(k, plane_nbytes, 8))
    spread_planes <<= _PLANE_SHIFTS[:k]  # each lane holds 0 or 1: shifting the word shifts each lane alone
    np.bitwise_or.reduce(spread_planes, axis=0, out=words)
    words *= np.uint64(sum(1 << (width * lane) for lane in range(per_word)))  # lane j: lanes 0 to j summed
    np.right_shift(words, np.uint64(64 - width), out=totals)  # the last lane: the word's sum, below 2^32
    np.cumsum(totals.view("<i8"), out=starts)
    starts -= totals.view("<i8")
    starts -= (1 << k) - 1  # D before each word, less 2^k - 1
    positions -= words.view(spread.dtype)[: positions.size]
    full = positions.size // per_word  # words whose lanes all hold positions; a last one may hold fewer
    head = positions[: full * per_word].reshape(full, per_word)
    np.subtract(head, starts[:full, None], out=head)
    if full < nwords:
        positions[full * per_word :] -= starts[full]


def _scratch(key: str, nbytes: int) -> np.ndarray:
    """This thread's scratch buffer ``key`` for decoding a block, kept for the next (fresh memory costs page
    faults: about as much as the decoding), or new memory where a block is too large to keep its scratch."""
    return thread_buffer(key, nbytes) if nbytes <= KEPT_BYTES else np.empty(nbytes, np.uint8)


_PLANE_SHIFTS = np.arange(32, dtype=np.uint64)[:, None]


def _rice_candidates(mean_gap: float) -> tuple[int, int]:
    """The Rice parameters worth trying, [first, stop), around the geometric optimum for this mean gap."""
    guess = max(0, int(math.log2(mean_gap * math.log(2) + 1))) if mean_gap > 0 else 0
    return max(0, guess - 1), min(32, guess + 2)


def _best_rice_parameter(gaps: np.ndarray) -> int:
    """The Rice parameter k minimising the coded size (the first of equals)."""
    candidates = range(*_rice_candidates(float(gaps.mean())))
    sizes = [int((gaps >> k).sum()) + gaps.size * k for k in candidates]
    return candidates[int(np.argmin(sizes))]
