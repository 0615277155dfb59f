"""The N x N comparison of masks: counts, intersections and chance baselines per group, in one streaming pass.

Each tensor of each mask is decoded once and dropped after use, so memory holds a few tensors' masks at a
time whatever the model size. Consecutive tensors go to a worker thread together: two files' raw and rice
tensors are counted in one compiled call (``codecs.batch``), the rest tensor by tensor, each pair the cheapest
way its two forms allow (``tensor_counts``).
``compare`` verifies every tensor as ``load`` does, CRC-32 included; ``verify=False`` (``--no-verify``) skips
only the CRC-32, as FORMAT.md section 4.3 allows counting tools, and lets sparse "rice" tensors stay encoded.

>>> result = compare(["seed1.smask", "seed2.smask", "dpo.smask"], by="layer")      # doctest: +SKIP
>>> result.pair(0, 1).jaccard, result.pair(0, 1).chance_jaccard    # stratified chance  # doctest: +SKIP
>>> result.pair("seed1.smask", "dpo.smask").global_jaccard_ratio    # model-wide chance   # doctest: +SKIP
>>> result.matrix("overlap_a")            # row i, column j: |Mi and Mj| / |Mi|      # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .accel import job
from .algebra import PAIR_FIELDS, Counts, PairStats
from .align import aligned_names
from .breakdown import OVERALL, group_of, sort_groups
from .built import BuiltMask
from .codecs import batch
from .errors import SubmaskError, UsageError
from .format import MaskFile
from .format.header import TensorEntry
from .format.tensors import entry_codec, payload_verified
from .io import MaskLike, open_mask
from .limits import check_allocation
from .mask import Mask, TensorMask
from .names import Names
from .packed import crc32
from .tensor_counts import Read, compare_tensor
from .workers import kept_buffers, reusable, thread_buffer, thread_pool

if TYPE_CHECKING:
    from concurrent.futures import Future

#: A mask of a comparison: its index in ``labels``, its label, or its file name when that names one mask.
MaskKey = int | str | os.PathLike[str]
CHUNK_BITS = 1 << 26  # work (``_Source.work``), summed over the masks, of the consecutive tensors one task compares
SPARSE_WORK = 64  # elements whose decoding costs about what a byte of a sparse payload's does
SPLIT_WORK = 1 << 24  # less work (about 2 ms on one core) is one task in the calling thread, more is split


@dataclass
class GroupComparison:
    """Counts of N masks over one group of tensors; ``intersections`` is N x N with the counts on its diagonal."""

    numel: int
    counts: np.ndarray
    intersections: np.ndarray
    chance_intersections: np.ndarray

    @classmethod
    def empty(cls, n: int) -> GroupComparison:
        return cls(0, np.zeros(n, np.int64), np.zeros((n, n), np.int64), np.zeros((n, n), np.float64))

    def add(self, numels: np.ndarray, intersections: np.ndarray) -> None:
        """Add tensors: their element counts (k) and N x N intersections (k x N x N)."""
        counts = np.diagonal(intersections, axis1=1, axis2=2).astype(np.float64)
        self.numel += int(numels.sum())
        self.counts += np.diagonal(intersections, axis1=1, axis2=2).sum(axis=0)
        self.intersections += intersections.sum(axis=0)
        shares = counts / np.maximum(numels, 1)[:, None]  # an empty tensor adds no chance intersections
        self.chance_intersections += np.einsum("ki,kj->ij", shares, counts)

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

    def pair(self, a: MaskKey, b: MaskKey, group: str = OVERALL) -> PairStats:
        """Stats of mask ``a`` (as A) against mask ``b`` (as B) over ``group``; each is an index into
        ``labels`` or a label (the path as given, or its file name when that names one mask).

        >>> result.pair("rl.smask", "sft.smask").jaccard       # doctest: +SKIP
        """
        if group not in self.groups:
            raise UsageError(f"no group {group!r} in this comparison (by={self.by!r}); groups: "
                             f"{', '.join(list(self.groups)[:8])}{', ...' if len(self.groups) > 8 else ''}")
        return self.groups[group].pair(self.index(a), self.index(b))

    def index(self, mask: MaskKey) -> int:
        """The position in ``labels`` of a mask given by index, label or unique file name (else UsageError)."""
        if isinstance(mask, int) and not isinstance(mask, bool):
            if -len(self.labels) <= mask < len(self.labels):
                return mask % len(self.labels)
            raise UsageError(f"mask index {mask} is out of range: this comparison has {len(self.labels)} masks")
        if isinstance(mask, (str, os.PathLike)):
            text = os.fspath(mask)
            if text in self.labels:
                return self.labels.index(text)
            named = [i for i, label in enumerate(self.labels) if Path(label).name == text]
            if len(named) == 1:
                return named[0]
            if len(named) > 1:
                raise UsageError(f"{text!r} names {len(named)} masks of this comparison; give the path as passed "
                                 "to compare")
        raise UsageError(f"no mask {mask!r} in this comparison; masks: {', '.join(self.labels)}")

    def matrix(self, metric: str, group: str = OVERALL) -> np.ndarray:
        """N x N matrix of a ``PairStats`` attribute, row i = A, column j = B (e.g. "overlap_a", "jaccard")."""
        n = len(self.labels)
        if metric not in PAIR_FIELDS:
            raise UsageError(f"no metric {metric!r}; PairStats has: {', '.join(PAIR_FIELDS)}")
        return np.array([[getattr(self.pair(i, j, group), metric) for j in range(n)] for i in range(n)], float)

    def pairs(self) -> Iterator[tuple[int, int]]:
        """Index pairs (i < j) in order."""
        n = len(self.labels)
        return ((i, j) for i in range(n) for j in range(i + 1, n))


def compare(masks: Sequence[MaskLike], *, by: str = "overall", common: bool = False,
            progress: bool = False, workers: int | None = None, verify: bool = True,
            names: Names | None = None) -> Comparison:
    """Compare N masks pairwise in one pass: counts, intersections and chance baselines per group.

    ``masks`` are paths (opened lazily), open ``MaskFile`` objects or in-memory ``Mask`` objects. Tensors
    must line up (MismatchError) unless ``common``. ``workers`` threads decode tensors in parallel
    (default: up to 4, one per core); memory stays bounded by ``2 * workers + 1`` chunks of consecutive
    tensors (about CHUNK_BITS elements over all masks, or one larger tensor). Every
    tensor's CRC-32 is checked unless ``verify`` is False (structure, pad bits and set-bit counts always are).
    ``names`` (``submask.names.NameMap``) renames every mask's tensors before they are lined up.
    """
    with ExitStack() as stack:
        sources = [_Source.of(mask, stack, index, names) for index, mask in enumerate(masks)]
        labels = [source.label for source in sources]
        tensor_names = aligned_names([s.shapes for s in sources], common=common, labels=labels)
        stack.enter_context(job(len(sources) * sum(sources[0].numel(name) for name in tensor_names)))
        result = Comparison(labels, by)
        for chunk, intersections in _per_chunk(sources, tensor_names, progress, workers, verify):
            numels = np.array([sources[0].numel(name) for name in chunk], np.int64)
            stacked = np.array(intersections, np.int64).reshape(len(chunk), len(sources), len(sources))
            members: dict[str, list[int]] = {OVERALL: list(range(len(chunk)))}
            for index, name in enumerate(chunk):
                if (group := group_of(name, by)) != OVERALL:
                    members.setdefault(group, []).append(index)
            for group, indices in members.items():
                result.groups.setdefault(group, GroupComparison.empty(len(sources))).add(numels[indices],
                                                                                        stacked[indices])
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
    def of(cls, mask: MaskLike, stack: ExitStack, index: int = 0, names: Names | None = None) -> _Source:
        if isinstance(mask, BuiltMask):
            mask = mask.source
        label = (f"mask {index + 1}" if isinstance(mask, Mask)
                 else str(mask.path) if isinstance(mask, MaskFile) else os.fspath(mask))
        return cls(label, stack.enter_context(open_mask(mask, names=names)))

    def numel(self, name: str) -> int:
        return math.prod(self.shapes[name])

    def work(self, name: str) -> int:
        """Decoding and counting cost of a tensor, in elements: its numel, or less for a sparse payload (a payload
        byte costs about as much as SPARSE_WORK elements), so that sparse masks take few, large tasks."""
        numel = self.numel(name)
        if isinstance(self.mask, MaskFile):
            return min(numel, SPARSE_WORK * self.mask.payload_size(name))
        return numel

    def count(self, name: str) -> int:
        return self._counts[name]

    def read(self, name: str) -> tuple[TensorEntry, bytes, Path] | TensorMask:
        """What ``_decode`` needs, read in the calling thread (file handles are not shared across threads)."""
        mask = self.mask
        if isinstance(mask, MaskFile):
            return mask.entries[name], mask.payload(name), mask.path
        return mask[name]


def _per_chunk(sources: list[_Source], names: list[str], progress: bool, workers: int | None,
               verify: bool) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """(names, their N x N intersections) per chunk of consecutive tensors (at most about CHUNK_BITS of work, as
    many chunks as a multiple of the workers), in order; reads here, decodes and counts on worker threads, a
    chunk per task (one task, no threads, for little work)."""
    workers = workers or min(4, os.cpu_count() or 1)
    batched = all(isinstance(s.mask, MaskFile) for s in sources) and len(sources) > 1 and batch.available()
    works = {name: sum(source.work(name) for source in sources) for name in names}
    total = sum(works.values())
    # at least a task per worker where the work pays for starting threads (sparse masks: a few ms in all), and
    # a multiple of the workers, so that none idles while another finishes a last task alone
    tasks = workers * -(-total // (workers * CHUNK_BITS))
    chunks = _chunks(tensor_progress(names, progress, "comparing"), works.__getitem__, -(-total // max(tasks, 1)))
    with kept_buffers() as rooms:  # payload buffers, by slot: fresh memory would page-fault per chunk

        def read(chunk: list[str], slot: int) -> _Chunk:
            room = (lambda nbytes: reusable(rooms, slot, nbytes)) if batched else None
            return _read_chunk(sources, chunk, room)

        if workers == 1 or total <= SPLIT_WORK:  # one task: no threads to wake
            for chunk in chunks:
                yield chunk, _compare_chunk(read(chunk, 0), verify)
            return
        pending: deque[tuple[list[str], Future[list[np.ndarray]]]] = deque()
        pool = thread_pool(workers)
        try:
            for index, chunk in enumerate(chunks):  # a slot is free again once its chunk's task has finished
                pending.append((chunk, pool.submit(_compare_chunk, read(chunk, index % (2 * workers + 1)),
                                                   verify)))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:  # on an error: no task of this call may outlive it (they read its buffers)
            for _, future in pending:
                future.cancel()
            for _, future in pending:
                if not future.cancelled():
                    future.exception()  # waits; the error that stopped the call is the one raised


def _chunks(names: Iterator[str], work: Callable[[str], int], size: int) -> Iterator[list[str]]:
    """Consecutive names in runs of about ``size`` elements of ``work`` (one task: a few tensors, or one
    large one)."""
    chunk, bits = [], 0
    for name in names:
        chunk.append(name)
        bits += work(name)
        if bits >= size:
            yield chunk
            chunk, bits = [], 0
    if chunk:
        yield chunk


@dataclass
class _Chunk:
    """What the tasks of one chunk need: per tensor the reads for ``compare_tensor``, or (for tensors counted
    by ``batch``'s kernels) None, its entries and a row of ``table`` over the payloads read into ``data``."""

    reads: list[list[Read] | None]
    entries: list[tuple[TensorEntry, ...]] = field(default_factory=list)
    table: list[list[int]] = field(default_factory=list)
    data: np.ndarray | None = None
    paths: list[Path] = field(default_factory=list)


def _read_chunk(sources: list[_Source], names: list[str],
                room: Callable[[int], np.ndarray] | None) -> _Chunk:
    """Read one chunk's payloads (file handles are not shared across threads); with ``room`` (mask files,
    compiled kernels), tensors whose encodings ``batch`` reads go into one buffer, ``room(nbytes)``, each file's
    back to back (one read for a run of consecutive tensors), each row of the table holding the tensor's bits,
    then per mask its kind, payload start and end, and rice block bits."""
    if room is None:
        return _Chunk([[source.read(name) for source in sources] for name in names])
    files: list[MaskFile] = [source.mask for source in sources]  # type: ignore[misc]
    chunk = _Chunk([], paths=[file.path for file in files])
    batched: list[tuple[str, list[tuple[int, int]]]] = []
    for name in names:
        found = [_batch_kind(file, name) for file in files]
        kinds = [kind for kind in found if kind is not None]
        if len(kinds) < len(found):
            chunk.reads.append([source.read(name) for source in sources])
            continue
        chunk.reads.append(None)
        batched.append((name, kinds))
    if not batched:
        return chunk
    rows = [[files[0].entries[name].bits] for name, _ in batched]
    offset = 0
    for side, file in enumerate(files):
        for row, (name, kinds) in zip(rows, batched):
            size = file.payload_size(name)
            row += [kinds[side][0], offset, offset + size, kinds[side][1]]
            offset += size
    data = chunk.data = room(offset)
    for side, file in enumerate(files):
        start, end = rows[0][2 + 4 * side], rows[-1][3 + 4 * side]
        file.payloads_into([name for name, _ in batched], data[start:end].data)
    chunk.entries = [tuple(file.entries[name] for file in files) for name, _ in batched]
    chunk.table = rows
    return chunk


def _batch_kind(file: MaskFile, name: str) -> tuple[int, int] | None:
    """(kind, rice block bits) of a tensor that ``batch``'s kernels read, or None (also for a bad encoding: the
    per-tensor path reports it); worked out once per encoding and settings."""
    entry = file.entries[name]
    key = (entry.encoding, repr(sorted(entry.config.items())))
    if key not in _KINDS:
        try:
            codec = entry_codec(entry, file.path)
        except SubmaskError:
            return None
        kind = batch.batch_kind(codec)
        _KINDS[key] = None if kind is None else (kind, batch.batch_block_bits(codec))
    return _KINDS[key]


_KINDS: dict[tuple[str, str], tuple[int, int] | None] = {}


def _compare_chunk(chunk: _Chunk, verify: bool) -> list[np.ndarray]:
    """N x N intersection counts of each tensor of a chunk: the batched ones in one kernel call, and any whose
    payload, counts or CRC-32 fail its checks again by ``compare_tensor``, which raises the error that says why."""
    counts, sound = _batched_counts(chunk, verify)
    out, batched = [], 0
    for reads in chunk.reads:
        if reads is None:
            index, batched = batched, batched + 1
            if sound[index]:
                out.append(counts[index])
                continue
            assert chunk.data is not None  # a chunk with batched tensors read their payloads into data
            row, data = chunk.table[index], chunk.data
            reads = [(entry, bytes(data[row[2 + 4 * side] : row[3 + 4 * side]]), path)
                     for side, (entry, path) in enumerate(zip(chunk.entries[index], chunk.paths))]
        out.append(compare_tensor(reads, verify))
    return out


def _batched_counts(chunk: _Chunk, verify: bool) -> tuple[np.ndarray, list[bool]]:
    """The N x N counts of the chunk's batched tensors (one kernel call) and whether each passed every check:
    structure, set-bit counts against the header and, with ``verify``, a payload that matches its own CRC-32
    (format 1.3: stands for the CRC-32 of its bits), or else the CRC-32 of its bits: two masks' kernel keeps
    the bits of such payloads for it, the N-mask kernel leaves them to ``compare_tensor`` (not sound here)."""
    n, data = len(chunk.paths), chunk.data
    if not chunk.table or data is None:
        return np.zeros((0, n, n), np.int64), []
    table = np.array(chunk.table, np.int64)
    sizes = (table[:, 0] + 7) // 8
    checked = [[verify and payload_verified(entry, data[row[2 + 4 * side] : row[3 + 4 * side]])
                for side, entry in enumerate(entries)] for entries, row in zip(chunk.entries, chunk.table)]
    bits = None
    if n == 2:
        if verify and not all(all(sides) for sides in checked):
            kept = int(sizes.sum())
            check_allocation(2 * kept, f"the bits of {len(chunk.table)} tensors of two masks")
            bits = (thread_buffer(("kept", 0), kept), thread_buffer(("kept", 1), kept))
        hits_ones = batch.pair_counts(data, data, table, bits)
        counts = np.empty((table.shape[0], 2, 2), np.int64)
        counts[:, 0, 0], counts[:, 1, 1] = hits_ones[:, 1], hits_ones[:, 2]
        counts[:, 0, 1] = counts[:, 1, 0] = hits_ones[:, 0]
    else:
        counts = batch.group_counts(data, table, n)
    expected = np.array([[entry.ones for entry in entries] for entries in chunk.entries], np.int64)
    sound: list[bool] = ((counts[:, 0, 0] >= 0)
                         & (np.diagonal(counts, axis1=1, axis2=2) == expected).all(axis=1)).tolist()
    starts = (np.cumsum(sizes) - sizes).tolist()
    for index, (entries, row, sides) in enumerate(zip(chunk.entries, chunk.table, checked)):
        if verify and sound[index] and not all(sides):  # a side without a matching payload CRC-32: its bits'
            at, size = starts[index], int(sizes[index])
            sound[index] = all(ok or (bits is not None and entry.payload_crc32 is None
                                      and crc32(_kept_bits(row, side, data, bits[side][at : at + size])) == entry.crc32)
                               for side, (ok, entry) in enumerate(zip(sides, entries)))
    return counts, sound


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
