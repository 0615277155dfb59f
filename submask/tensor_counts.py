"""Intersection counts of one tensor of N masks, each operand decoded the cheapest way its encoding allows.

A tensor of a mask becomes packed bits, sparse ascending positions, or (two masks, no CRC-32) a payload left
encoded for a codec that counts its set bits against packed bits while streaming it; each pair is then counted
by the cheapest route the two forms allow (``_pair_count``). ``compare`` calls ``compare_tensor`` for every
tensor that its batched kernel (``codecs.batch``) does not count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, TypeVar, cast

import numpy as np

from .algebra import packed_intersection_count, pair_intersection_counts
from .codecs import IntersectionCounter, PositionsDecoder
from .errors import ChecksumError, FormatError, where
from .format.header import TensorEntry
from .format.tensors import decode_tensor, entry_codec, payload_verified
from .limits import check_allocation
from .mask import TensorMask
from .packed import from_positions, packed_nbytes
from .workers import thread_buffer, thread_zeros

T = TypeVar("T")

#: what ``compare_tensor`` takes per mask: a file's entry, payload and path, or an in-memory tensor
Read: TypeAlias = "tuple[TensorEntry, bytes, Path] | TensorMask"

#: without streaming kernels, payloads at most this dense are decoded to positions rather than packed bits
#: (measured crossover)
POSITIONS_MAX_DENSITY = 1 / 16
#: positions are intersected window by window through a reusable byte table of _TABLE elements; dense ones (more
#: than one per _SPARSE elements) in windows of _WINDOW, whose table fits a core's L2 cache (sparse ones would pay
#: more for the windows than they save)
_TABLE, _WINDOW, _SPARSE = 1 << 22, 1 << 20, 256
_GATHER_CHUNK = 1 << 22

@dataclass
class _Operand:
    """One tensor of one mask: packed bits, (sparse) ascending set positions, or a payload left encoded for a
    codec that counts intersections while streaming it (codec, payload, error-message prefix)."""

    numel: int
    count: int
    packed: np.ndarray | None = None
    positions: np.ndarray | None = None
    streamed: tuple[IntersectionCounter, bytes, str] | None = None


def _decode(read: Read, index: int, streamed: bool, verify: bool) -> _Operand:
    """One tensor's operand, decoded into this thread's buffer ``index``. Without ``verify``, a payload whose
    codec counts intersections is left encoded when ``streamed``, and one whose codec lists positions is
    decoded to positions when sparse; with it, a payload that matches its own CRC-32 (format 1.3) is taken so
    too, and any other is decoded to packed bits and fully checked."""
    if isinstance(read, TensorMask):
        return _Operand(read.numel, read.count, packed=read.packed)
    entry, payload, path = read
    verify = verify and not payload_verified(entry, payload)  # a payload CRC-32 that matches stands for the bits'
    at = where(path, entry.name)
    codec = entry_codec(entry, path)
    counter = codec if isinstance(codec, IntersectionCounter) and codec.streams() else None
    streaming = counter is not None
    if not verify and streamed and counter is not None:
        return _Operand(entry.bits, entry.ones, streamed=(counter, payload, at))
    if (not verify and not streaming and isinstance(codec, PositionsDecoder)
            and entry.ones <= entry.bits * POSITIONS_MAX_DENSITY):
        positions = _checked(at, lambda: codec.positions(payload, entry.bits))
        _check_count(at, positions.size, entry.ones)
        return _Operand(entry.bits, entry.ones, positions=positions)
    check_allocation(packed_nbytes(entry.bits), f"{at}{entry.bits:,} bits")
    out = thread_buffer(index, packed_nbytes(entry.bits))
    return _Operand(entry.bits, entry.ones, packed=decode_tensor(entry, payload, path, out=out, verify_crc=verify))


def _checked(at: str, decode: Callable[[], T]) -> T:
    try:
        return decode()
    except FormatError as exc:
        raise FormatError(f"{at}{exc}; the file is corrupt (run `submask validate` on it)") from None


def _check_count(at: str, decoded: int, expected: int) -> None:
    if decoded != expected:
        raise ChecksumError(f"{at}decoded {decoded} set bits, header says {expected}; the file is corrupt")


def compare_tensor(reads: list[Read], verify: bool) -> np.ndarray:
    """N x N intersection counts of one tensor's masks (counts on the diagonal)."""
    n = len(reads)
    # two masks: the second streams its payload against the first's bits; more: each is decoded once and
    # every pair is counted in one pass over their bits (a streamed one would be decoded again for each pair)
    operands = [_decode(read, index, n == 2 and index == 1, verify) for index, read in enumerate(reads)]
    packed = [operand.packed for operand in operands if operand.packed is not None]
    if n > 2 and len(packed) == n:
        return pair_intersection_counts(packed)
    out = np.zeros((n, n), np.int64)
    sparse = [index for index, operand in enumerate(operands) if operand.positions is not None]
    if len(sparse) > 1:  # every pair of them in one pass over their windows
        listed = [cast(np.ndarray, operands[index].positions) for index in sparse]
        out[np.ix_(sparse, sparse)] = _common_counts(listed, operands[0].numel)
    for i in range(n):
        out[i, i] = operands[i].count
        for j in range(i + 1, n):
            if i not in sparse or j not in sparse:
                out[i, j] = out[j, i] = _pair_count(operands[i], operands[j])
    return out


def _pair_count(x: _Operand, y: _Operand) -> int:
    """|X and Y| of two operands that do not both hold positions, by the cheapest route: shortcuts for
    empty/full, a payload streamed against packed bits, bit gathers, AND+popcount."""
    if not x.count or not y.count:
        return 0
    if x.count == x.numel or y.count == y.numel:
        return min(x.count, y.count)
    if y.streamed is not None:  # only the last operand is left encoded, and X holds packed bits or positions
        codec, payload, at = y.streamed
        x_packed = x.packed if x.packed is not None else from_positions(cast(np.ndarray, x.positions), x.numel)
        # a codec is left streamed only when it streams(), and then intersection_count gives a count
        hits, ones = cast(tuple[int, int], _checked(at, lambda: codec.intersection_count(payload, y.numel, x_packed)))
        _check_count(at, ones, y.count)
        return hits
    if x.positions is not None or y.positions is not None:
        sparse, dense = (x, y) if x.positions is not None else (y, x)
        # the operand without positions holds packed bits (only the second of two is left streamed: above)
        return _gather_count(cast(np.ndarray, dense.packed), cast(np.ndarray, sparse.positions))
    # neither has positions and neither is streamed (see above): both hold packed bits
    return packed_intersection_count(cast(np.ndarray, x.packed), cast(np.ndarray, y.packed))


def _common_counts(positions: list[np.ndarray], numel: int) -> np.ndarray:
    """N x N counts of the elements common to ascending arrays of distinct positions below ``numel`` (their
    sizes on the diagonal). Window by window, up to 8 arrays at a time mark their positions in this thread's
    byte table, a bit each, and each later array reads its positions' bytes there: one gather counts it
    against every array marked before it."""
    n = len(positions)
    out = np.diag([listed.size for listed in positions]).astype(np.int64)
    window = _WINDOW if sum(listed.size for listed in positions) * _SPARSE > numel else _TABLE
    table = thread_zeros("marks", _TABLE)[:window]  # cleared again after each window (_clear)
    bounds = np.arange(window, numel, window)
    cuts = [[0, *np.searchsorted(listed, bounds).tolist(), listed.size] for listed in positions]
    for index in range(bounds.size + 1):
        start = index * window
        pieces = [_window_piece(listed, cut[index], cut[index + 1], start, array)
                  for array, (listed, cut) in enumerate(zip(positions, cuts))]
        for first in range(0, n - 1, 8):
            marking = pieces[first : min(first + 8, n - 1)]
            try:
                for later, piece in enumerate(pieces[first:]):
                    for bit, count in enumerate(_count_and_mark(table, piece, later, len(marking))):
                        out[first + bit, first + later] += count
            finally:
                _clear(table, marking)
    return out + np.triu(out, 1).T


def _count_and_mark(table: np.ndarray, piece: np.ndarray, index: int, marking: int) -> list[int]:
    """How many of ``piece`` the table marks with each bit below ``index`` and ``marking`` (bit b: the b-th array
    of the group); then the piece is marked with bit ``index`` if that is below ``marking``."""
    counted = min(index, marking)
    if not piece.size:
        return [0] * counted
    if not index:
        table[piece] = 1  # the table is clear
        return []
    marks = table.take(piece, mode="clip", out=thread_buffer("marks", piece.size))
    bits = thread_buffer("bits", piece.size)
    counts = [int(np.count_nonzero(np.bitwise_and(marks, 1 << bit, out=bits))) for bit in range(counted)]
    if index < marking:
        marks |= 1 << index
        table[piece] = marks
    return counts


def _clear(table: np.ndarray, marked: list[np.ndarray]) -> None:
    """Zero ``table`` at the ``marked`` positions: all of it, where that costs less."""
    if sum(piece.size for piece in marked) > table.size // 64:
        table.fill(0)
        return
    for piece in marked:
        table[piece] = 0


def _window_piece(listed: np.ndarray, first: int, stop: int, start: int, index: int) -> np.ndarray:
    """``listed[first:stop] - start``, in this thread's buffer ``index`` (the first window needs no copy)."""
    piece = listed[first:stop]
    if not start:
        return piece
    return np.subtract(piece, start, out=thread_buffer(("window", index), 8 * piece.size).view(np.int64))


def _gather_count(packed: np.ndarray, positions: np.ndarray) -> int:
    """How many of ``positions`` are set in ``packed`` (MSB-first bits)."""
    total = 0
    for start in range(0, positions.size, _GATHER_CHUNK):
        chunk = positions[start : start + _GATHER_CHUNK]
        total += int(np.count_nonzero((packed[chunk >> 3] << (chunk & 7).astype(np.uint8)) & 0x80))
    return total
