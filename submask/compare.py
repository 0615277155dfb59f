"""The N x N comparison of masks: counts, intersections and chance baselines per group, in one streaming pass.

Each tensor of each mask is decoded once and dropped after use, so memory holds a few tensors' masks at a
time whatever the model size. Sparse "rice" tensors are decoded to sorted positions instead of packed
bits, and each pair is counted the cheapest way its two forms allow (see ``_pair_count``).
``compare`` verifies every tensor as ``load`` does, CRC-32 included; ``verify=False`` (``--no-verify``) skips
only the CRC-32, as FORMAT.md section 4.3 allows counting tools, and lets sparse "rice" tensors stay encoded.

>>> result = compare(["seed1.smask", "seed2.smask", "dpo.smask"], by="layer")      # doctest: +SKIP
>>> result.pair(0, 1).jaccard, result.pair(0, 1).chance_jaccard                     # doctest: +SKIP
>>> result.matrix("overlap_a")            # row i, column j: |Mi and Mj| / |Mi|      # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .accel import job
from .algebra import Counts, PairStats, packed_intersection_count, pair_intersection_counts
from .align import aligned_names
from .breakdown import OVERALL, group_of, sort_groups
from .codecs import IntersectionCounter, PositionsDecoder, batch
from .errors import ChecksumError, FormatError, SubmaskError, where
from .io import MaskLike, open_mask
from .format import MaskFile
from .format.header import TensorEntry
from .format.tensors import decode_tensor, entry_codec
from .mask import Mask, TensorMask
from .packed import crc32, packed_nbytes

if TYPE_CHECKING:
    from concurrent.futures import Future

T = TypeVar("T")

#: without streaming kernels, payloads at most this dense are decoded to positions rather than packed bits
#: (measured crossover)
POSITIONS_MAX_DENSITY = 1 / 16
_WINDOW = 1 << 22  # positions are intersected through a reusable bool table of this many elements
_GATHER_CHUNK = 1 << 22
CHUNK_BITS = 1 << 24  # elements, summed over the masks, of the consecutive tensors one task compares


@dataclass
class _Operand:
    """One tensor of one mask: packed bits, (sparse) ascending set positions, or a payload left encoded for a
    codec that counts intersections while streaming it (codec, payload, error-message prefix)."""

    numel: int
    count: int
    packed: np.ndarray | None = None
    positions: np.ndarray | None = None
    streamed: tuple[IntersectionCounter, bytes, str] | None = None


@dataclass
class GroupComparison:
    """Counts of N masks over one group of tensors; ``intersections`` is N x N with the counts on its diagonal."""

    numel: int
    counts: np.ndarray
    intersections: np.ndarray
    chance_intersections: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "GroupComparison":
        return cls(0, np.zeros(n, np.int64), np.zeros((n, n), np.int64), np.zeros((n, n), np.float64))

    def add(self, numel: int, intersections: np.ndarray) -> None:
        counts = np.diagonal(intersections)
        self.numel += numel
        self.counts += counts
        self.intersections += intersections
        if numel:
            self.chance_intersections += np.outer(counts, counts) / numel

    def pair(self, i: int, j: int) -> PairStats:
        return PairStats(self.numel, int(self.counts[i]), int(self.counts[j]), int(self.intersections[i, j]),
                         float(self.chance_intersections[i, j]))

    def density(self, i: int) -> float:
        return Counts(self.numel, int(self.counts[i])).density


@dataclass
class Comparison:
    """The result of ``compare``: every pair of masks, overall ("all") and per group of ``by``."""

    labels: list[str]
    by: str
    groups: dict[str, GroupComparison] = field(default_factory=dict)

    def pair(self, i: int, j: int, group: str = OVERALL) -> PairStats:
        """Stats of mask ``i`` (as A) against mask ``j`` (as B) over ``group``."""
        return self.groups[group].pair(i, j)

    def matrix(self, metric: str, group: str = OVERALL) -> np.ndarray:
        """N x N matrix of a ``PairStats`` attribute, row i = A, column j = B (e.g. "overlap_a", "jaccard")."""
        n = len(self.labels)
        return np.array([[getattr(self.pair(i, j, group), metric) for j in range(n)] for i in range(n)], float)

    def pairs(self) -> Iterator[tuple[int, int]]:
        """Index pairs (i < j) in order."""
        n = len(self.labels)
        return ((i, j) for i in range(n) for j in range(i + 1, n))


def compare(masks: Sequence[MaskLike], *, by: str = "overall", common: bool = False,
            progress: bool = False, workers: int | None = None, verify: bool = True) -> Comparison:
    """Compare N masks pairwise in one pass: counts, intersections and chance baselines per group.

    ``masks`` are paths (opened lazily), open ``MaskFile`` objects or in-memory ``Mask`` objects. Tensors
    must line up (MismatchError) unless ``common``. ``workers`` threads decode tensors in parallel
    (default: up to 4, one per core); memory stays bounded by ``2 * workers`` tensors' masks. Every
    tensor's CRC-32 is checked unless ``verify`` is False (structure, pad bits and set-bit counts always are).
    """
    with ExitStack() as stack:
        sources = [_Source.of(mask, stack, index) for index, mask in enumerate(masks)]
        labels = [source.label for source in sources]
        names = aligned_names([s.shapes for s in sources], common=common, labels=labels)
        stack.enter_context(job(len(sources) * sum(sources[0].numel(name) for name in names)))
        result = Comparison(labels, by)
        for name, intersections in _per_tensor(sources, names, progress, workers, verify):
            numel = sources[0].numel(name)
            for group in dict.fromkeys((OVERALL, group_of(name, by))):
                result.groups.setdefault(group, GroupComparison.empty(len(sources))).add(numel, intersections)
    if not result.groups:
        result.groups[OVERALL] = GroupComparison.empty(len(labels))
    order = [OVERALL] + sort_groups([g for g in result.groups if g != OVERALL], by)
    result.groups = {group: result.groups[group] for group in order}
    return result


class _Source:
    """A mask being streamed: names and shapes up front, each tensor read on request."""

    def __init__(self, label: str, mask: Mask | MaskFile):
        self.label = label
        self.mask = mask
        self.shapes = mask.shapes
        self._counts = mask.counts

    @classmethod
    def of(cls, mask: MaskLike, stack: ExitStack, index: int = 0) -> "_Source":
        label = (f"mask {index + 1}" if isinstance(mask, Mask)
                 else str(mask.path) if isinstance(mask, MaskFile) else str(mask))
        return cls(label, stack.enter_context(open_mask(mask)))

    def numel(self, name: str) -> int:
        return math.prod(self.shapes[name])

    def count(self, name: str) -> int:
        return self._counts[name]

    def read(self, name: str) -> "tuple[TensorEntry, bytes, Path] | TensorMask":
        """What ``_decode`` needs, read in the calling thread (file handles are not shared across threads)."""
        mask = self.mask
        if isinstance(mask, MaskFile):
            return mask.entries[name], mask.payload(name), mask.path
        return mask[name]


def _decode(read: "tuple[TensorEntry, bytes, Path] | TensorMask", index: int, streamed: bool,
            verify: bool) -> _Operand:
    """One tensor's operand, decoded into this thread's buffer ``index``. Without ``verify``, a payload whose
    codec counts intersections is left encoded when ``streamed``, and one whose codec lists positions is
    decoded to positions when sparse; with it, every tensor is decoded to packed bits and fully checked."""
    if isinstance(read, TensorMask):
        return _Operand(read.numel, read.count, packed=read.packed)
    entry, payload, path = read
    at = where(path, entry.name)
    codec = entry_codec(entry, path)
    streaming = isinstance(codec, IntersectionCounter) and codec.streams()
    if not verify and streamed and streaming:
        return _Operand(entry.bits, entry.ones, streamed=(codec, payload, at))
    if (not verify and not streaming and isinstance(codec, PositionsDecoder)
            and entry.ones <= entry.bits * POSITIONS_MAX_DENSITY):
        positions = _checked(at, lambda: codec.positions(payload, entry.bits))
        _check_count(at, positions.size, entry.ones)
        return _Operand(entry.bits, entry.ones, positions=positions)
    out = _buffer(index, packed_nbytes(entry.bits))
    return _Operand(entry.bits, entry.ones, packed=decode_tensor(entry, payload, path, out=out, verify_crc=verify))


def _buffer(index: Hashable, nbytes: int) -> np.ndarray:
    """This thread's reusable decode buffer ``index``, at least ``nbytes`` long (fresh memory costs page faults)."""
    return _room(_tables.__dict__.setdefault("buffers", {}), index, nbytes)


def _room(buffers: dict[Hashable, np.ndarray], key: Hashable, nbytes: int) -> np.ndarray:
    """``buffers[key]``, grown to at least ``nbytes`` uint8 bytes, its first ``nbytes``."""
    if key not in buffers or buffers[key].size < nbytes:
        buffers[key] = np.empty(nbytes, np.uint8)
    return buffers[key][:nbytes]


def _checked(at: str, decode: Callable[[], T]) -> T:
    try:
        return decode()
    except FormatError as exc:
        raise FormatError(f"{at}{exc}; the file is corrupt (run `submask validate` on it)") from None


def _check_count(at: str, decoded: int, expected: int) -> None:
    if decoded != expected:
        raise ChecksumError(f"{at}decoded {decoded} set bits, header says {expected}; the file is corrupt")


def _compare_tensor(reads: list, verify: bool) -> np.ndarray:
    """N x N intersection counts of one tensor's masks (counts on the diagonal)."""
    n = len(reads)
    # two masks: the second streams its payload against the first's bits; more: each is decoded once and
    # every pair is counted in one pass over their bits (a streamed one would be decoded again for each pair)
    operands = [_decode(read, index, n == 2 and index == 1, verify) for index, read in enumerate(reads)]
    if n > 2 and all(operand.packed is not None for operand in operands):
        return pair_intersection_counts([operand.packed for operand in operands])
    out = np.zeros((n, n), np.int64)
    for i in range(n):
        out[i, i] = operands[i].count
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = _pair_count(operands[i], operands[j])
    return out


def _pair_count(x: _Operand, y: _Operand) -> int:
    """|X and Y|, by the cheapest route: shortcuts for empty/full, a payload streamed against packed
    bits, position tables, bit gathers, AND+popcount."""
    if not x.count or not y.count:
        return 0
    if x.count == x.numel or y.count == y.numel:
        return min(x.count, y.count)
    if y.streamed is not None and x.packed is not None:  # only the last operand is left encoded
        codec, payload, at = y.streamed
        hits, ones = _checked(at, lambda: codec.intersection_count(payload, y.numel, x.packed))
        _check_count(at, ones, y.count)
        return hits
    if x.positions is not None and y.positions is not None:
        return _common_positions(x.positions, y.positions, x.numel)
    if x.positions is not None or y.positions is not None:
        sparse, dense = (x, y) if x.positions is not None else (y, x)
        return _gather_count(dense.packed, sparse.positions)
    return packed_intersection_count(x.packed, y.packed)


_tables = threading.local()  # per thread: a bool table for positions, decode buffers


def _common_positions(a: np.ndarray, b: np.ndarray, numel: int) -> int:
    """Common elements of two ascending position arrays: mark one window of ``a`` in a bool table (cache
    sized, reused and cleared by unmarking), look up ``b`` in it."""
    table = getattr(_tables, "table", None)
    if table is None:
        table = _tables.table = np.zeros(_WINDOW, np.bool_)
    bounds = np.arange(_WINDOW, numel, _WINDOW)
    a_cuts = [0, *np.searchsorted(a, bounds).tolist(), a.size]
    b_cuts = [0, *np.searchsorted(b, bounds).tolist(), b.size]
    total = 0
    for window in range(len(a_cuts) - 1):
        a0, a1, b0, b1 = a_cuts[window], a_cuts[window + 1], b_cuts[window], b_cuts[window + 1]
        if a0 == a1 or b0 == b1:
            continue
        start = window * _WINDOW
        in_a, in_b = a[a0:a1] - start, b[b0:b1] - start
        table[in_a] = True
        total += int(np.count_nonzero(table[in_b]))
        table[in_a] = False
    return total


def _gather_count(packed: np.ndarray, positions: np.ndarray) -> int:
    """How many of ``positions`` are set in ``packed`` (MSB-first bits)."""
    total = 0
    for start in range(0, positions.size, _GATHER_CHUNK):
        chunk = positions[start : start + _GATHER_CHUNK]
        total += int(np.count_nonzero((packed[chunk >> 3] << (chunk & 7).astype(np.uint8)) & 0x80))
    return total


def _per_tensor(sources: list[_Source], names: list[str], progress: bool, workers: int | None,
                verify: bool) -> Iterator[tuple[str, np.ndarray]]:
    """(name, N x N intersections) per tensor, in order; reads here, decodes and counts on worker threads,
    a chunk of consecutive tensors (CHUNK_BITS) per task."""
    workers = workers or min(4, os.cpu_count() or 1)
    batched = len(sources) == 2 and all(isinstance(s.mask, MaskFile) for s in sources) and batch.available()
    rooms: dict[Hashable, np.ndarray] = {}  # payload buffers, by slot: fresh memory would page-fault per chunk

    def work(name: str) -> int:
        return len(sources) * sources[0].numel(name)

    def read(chunk: list[str], slot: int) -> _Chunk:
        room = (lambda side, nbytes: _room(rooms, (slot, side), nbytes)) if batched else None
        return _read_chunk(sources, chunk, room)

    chunks = _chunks(tensor_progress(names, progress, "comparing"), work)
    if workers == 1 or sum(map(work, names)) <= CHUNK_BITS:  # one task: no threads to start
        for chunk in chunks:
            yield from zip(chunk, _compare_chunk(read(chunk, 0), verify))
        return
    from concurrent.futures import ThreadPoolExecutor  # here: it imports logging, 15 ms of a command's start

    pending: deque[tuple[list[str], Future]] = deque()
    with ThreadPoolExecutor(workers) as pool:
        for index, chunk in enumerate(chunks):  # a slot is free again once its chunk's task has finished
            pending.append((chunk, pool.submit(_compare_chunk, read(chunk, index % (2 * workers + 1)), verify)))
            if len(pending) >= 2 * workers:
                yield from _finished(*pending.popleft())
        while pending:
            yield from _finished(*pending.popleft())


def _finished(chunk: list[str], future: Future) -> Iterator[tuple[str, np.ndarray]]:
    return zip(chunk, future.result())


def _chunks(names: Iterator[str], work: Callable[[str], int]) -> Iterator[list[str]]:
    """Consecutive names in runs of about CHUNK_BITS elements of ``work`` (one task: a few tensors, or one
    large one)."""
    chunk, bits = [], 0
    for name in names:
        chunk.append(name)
        bits += work(name)
        if bits >= CHUNK_BITS:
            yield chunk
            chunk, bits = [], 0
    if chunk:
        yield chunk


@dataclass
class _Chunk:
    """What the tasks of one chunk need: per tensor the reads for ``_compare_tensor``, or (for tensors counted
    by ``batch.pair_counts``) None and a row of ``table`` over the payloads read into ``data``."""

    reads: list[list | None]
    entries: list[tuple[TensorEntry, TensorEntry, Path, Path]] = field(default_factory=list)
    table: list[list[int]] = field(default_factory=list)
    data: tuple[np.ndarray, np.ndarray] | None = None


def _read_chunk(sources: list[_Source], names: list[str],
                room: Callable[[int, int], np.ndarray] | None) -> _Chunk:
    """Read one chunk's payloads (file handles are not shared across threads); with ``room`` (two mask files,
    compiled kernels), tensors whose two encodings ``batch`` reads go into one buffer per mask, ``room(side,
    nbytes)``."""
    if room is None:
        return _Chunk([[source.read(name) for source in sources] for name in names])
    files: list[MaskFile] = [source.mask for source in sources]  # type: ignore[misc]
    chunk = _Chunk([])
    rows: list[tuple[str, list[int]]] = []
    offsets = [0, 0]
    for name in names:
        kinds = [_batch_kind(file, name) for file in files]
        if None in kinds:
            chunk.reads.append([source.read(name) for source in sources])
            continue
        chunk.reads.append(None)
        row = [files[0].entries[name].bits]
        for side, file in enumerate(files):
            size = file.payload_size(name)
            row += [kinds[side][0], offsets[side], offsets[side] + size, kinds[side][1]]
            offsets[side] += size
        rows.append((name, row))
    if rows:
        data = (room(0, offsets[0]), room(1, offsets[1]))
        for name, row in rows:
            for side, (file, start, end) in enumerate(((files[0], row[2], row[3]), (files[1], row[6], row[7]))):
                file.payload_into(name, memoryview(data[side][start:end]))
            chunk.entries.append((files[0].entries[name], files[1].entries[name], files[0].path, files[1].path))
            chunk.table.append(row)
        chunk.data = data
    return chunk


def _batch_kind(file: MaskFile, name: str) -> tuple[int, int] | None:
    """(kind, rice block bits) of a tensor that ``batch.pair_counts`` reads, or None (also for a bad encoding:
    the per-tensor path reports it)."""
    entry = file.entries[name]
    try:
        codec = entry_codec(entry, file.path)
    except SubmaskError:
        return None
    kind = batch.batch_kind(codec)
    return None if kind is None else (kind, batch.batch_block_bits(codec))


def _compare_chunk(chunk: _Chunk, verify: bool) -> list[np.ndarray]:
    """N x N intersection counts of each tensor of a chunk: the batched ones in one kernel call (which keeps
    their bits when ``verify``, for their CRC-32s), and any whose payload, counts or CRC-32 fail its checks
    again by ``_compare_tensor``, which raises the error that says why."""
    counted: Iterator = iter(())
    bits = None
    if chunk.table:
        data_a, data_b = chunk.data  # type: ignore[misc]
        table = np.array(chunk.table, np.int64)
        sizes = (table[:, 0] + 7) // 8
        bits = (_buffer(("kept", 0), int(sizes.sum())), _buffer(("kept", 1), int(sizes.sum()))) if verify else None
        counts = batch.pair_counts(data_a, data_b, table, bits)
        counted = iter(zip(counts.tolist(), chunk.entries, chunk.table, np.cumsum(sizes) - sizes, sizes))
    out = []
    for reads in chunk.reads:
        if reads is not None:
            out.append(_compare_tensor(reads, verify))
            continue
        (hits, ones_a, ones_b), (entry_a, entry_b, path_a, path_b), row, at, size = next(counted)
        sound = hits >= 0 and (ones_a, ones_b) == (entry_a.ones, entry_b.ones)
        if sound and bits is not None:
            sound = all(crc32(_kept_bits(row, side, data, kept[at : at + size])) == entry.crc32
                        for side, (entry, data, kept) in enumerate(((entry_a, data_a, bits[0]),
                                                                    (entry_b, data_b, bits[1]))))
        if not sound:
            reads = [(entry_a, bytes(data_a[row[2] : row[3]]), path_a),
                     (entry_b, bytes(data_b[row[6] : row[7]]), path_b)]
            out.append(_compare_tensor(reads, verify))
            continue
        out.append(np.array([[ones_a, hits], [hits, ones_b]], np.int64))
    return out


def _kept_bits(row: list[int], side: int, data: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The packed bits of one side (0: A, 1: B) of a ``batch.pair_counts`` row that kept them: a raw payload is
    its own bits, where it was read; a rice one's are in ``kept``."""
    kind, start, end = row[batch.KIND_A + 4 * side : batch.END_A + 1 + 4 * side]
    return data[start:end] if kind == batch.RAW else kept


def tensor_progress(names: list[str], enabled: bool, description: str) -> Iterator[str]:
    if not enabled:
        return iter(names)
    from tqdm import tqdm  # only here: importing it costs a command line about 0.1 s

    return iter(tqdm(names, desc=description, unit="tensor", file=sys.stderr, leave=False))
