"""The streaming run of a build: chunks of both checkpoints compared on worker threads, each finished tensor
encoded and written in order by a sink (``pipeline`` opens the checkpoints, matches their tensors and makes the
mask or delta from what a ``Run`` streams).

Each tensor is cut along its flat (C order) element order into chunks of a multiple of 8 elements, so each
chunk packs to whole bytes at a known offset of the tensor's packed bits. Worker threads read both chunks
into per-thread buffers (files are never memory-mapped, see ``safetensors_file``; tensors already on a
torch device stay there), compare them and pack the bits, then encode each finished tensor (the compiled
kernel, numpy and zstd release the GIL, so all of it overlaps); one more thread writes the encoded tensors
in order while the next ones are compared. Memory holds the chunks in flight plus the packed bits of the
tensors being finished (2 of them, or more within PENDING_BYTES), never a whole checkpoint (a build with
values also holds each tensor's changed values until it is written: ``values``; the writer, the payloads
up to ``format.writer.SPILL_BYTES``). Each checkpoint file is checked for changes between tensors (at most
every CHECK_SECONDS) and before the mask is committed, so a build never returns a mask of a file rewritten
meanwhile.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..checkpoints.dtypes import DTYPES, DType
from ..checkpoints.safetensors_file import TensorInfo
from ..checkpoints.sources import Source
from ..format.diffs import Differences
from ..format.values import TensorValues
from ..packed import clear_padding, packed_nbytes
from ..workers import Tasks, thread_pool
from .backends import Backend
from .criteria import LADDER_ATOL, Criterion
from .sinks import Sink
from .values import chunk_differences, chunk_values, takes_differences

if TYPE_CHECKING:
    from concurrent.futures import Future

MAX_CHUNK_BYTES = 4 * 1024 * 1024  # per side: read into a buffer, a chunk is compared while still in cache
# Checkpoints read on the CPU too small to give each worker CHUNKS_PER_WORKER chunks get smaller ones, down to
# MIN_CHUNK_BYTES: the workers then start and finish together (at 2 x 18 MB, 8 chunks of up to 4 MiB for 2
# workers left one idle for much of a build: ~0.8x the speed of 1 MiB chunks with the ladder)
CHUNKS_PER_WORKER = 8
MIN_CHUNK_BYTES = 1024 * 1024
READ_BUDGET_BYTES = 256 * 1024 * 1024  # default bound on chunk bytes in flight (both checkpoints)
# Both sides already on a torch device: nothing is read into host memory, and larger chunks on fewer threads
# amortise each chunk's kernel launches and the copy back of its counts.
DEVICE_CHUNK_BYTES = 256 * 1024 * 1024
DEVICE_WORKERS = 4
# Finished tensors being encoded or waiting for the writer thread: up to PENDING_WRITES of them, more while
# their bits and values take at most PENDING_BYTES (a large tensor's encoding then never stalls the compares
# of the small ones after it).
PENDING_WRITES = 2
PENDING_BYTES = 128 * 1024 * 1024
# Between tensors the checkpoint files are checked for changes at most this often (the check before the mask is
# committed is always made): a check stats every file, ~4 syscalls of ~30 us here, once per tensor cost a build of
# 72 tensors ~13 ms of the thread that hands out the chunks
CHECK_SECONDS = 0.02
FLOAT64 = DTYPES["F64"]


@dataclass
class TensorJob:
    """One tensor being built: its chunks' packed bits, counts and (with values) changed values."""

    info: TensorInfo  # the base's tensor (the finetuned one when ``whole``)
    finetuned_dtype: DType  # the base's dtype, or another float dtype (compared by value)
    chunk_bytes: int
    values: bool = False  # keep the changed values, chunk by chunk (``pieces``, in chunk order)
    whole: bool = False  # every element is stored: the finetuned side alone is read
    coded: bool = False  # values kept as differences (``pieces``; ``base_pieces``: their keys), see ``values``
    bits: bool = True  # keep the packed bits (False: counts only, ``count_changes``)
    packed: np.ndarray = field(init=False)
    pieces: list[np.ndarray | None] = field(init=False)
    base_pieces: list[np.ndarray | None] = field(init=False)  # the base's values there (not when ``whole``)
    ones: int = 0
    ladder: np.ndarray = field(default_factory=lambda: np.zeros(len(LADDER_ATOL), dtype=np.int64))

    def __post_init__(self) -> None:
        self.packed = np.empty(packed_nbytes(self.info.numel) if self.bits else 0, dtype=np.uint8)
        if self.whole:
            self.packed.fill(0xFF)
            clear_padding(self.packed, self.info.numel)
        self.pieces = [None] * len(self.chunks) if self.values else []
        self.base_pieces = [None] * len(self.chunks) if self.values and not self.whole else []

    def take_values(self) -> TensorValues | Differences | None:
        """The tensor's value bytes, joined from its chunks, or its differences (the chunks are released)."""
        if not self.values:
            return None
        values: TensorValues | Differences
        if self.coded:
            pieces, keys = cast(list[np.ndarray], self.pieces), cast(list[np.ndarray], self.base_pieces)
            values = Differences(self.finetuned_dtype.name, pieces, keys)
        else:
            values = TensorValues(self.finetuned_dtype.name, _joined(self.pieces),
                                  _joined(self.base_pieces) if self.base_pieces else None)
        self.pieces, self.base_pieces = [], []
        return values

    def held_bytes(self) -> int:
        """What the tensor holds until it is written: its packed bits and the values taken."""
        return self.packed.nbytes + sum(piece.nbytes for pieces in (self.pieces, self.base_pieces)
                                        for piece in pieces if piece is not None)

    @property
    def chunks(self) -> list[tuple[int, int]]:
        itemsize = max(self.info.dtype.itemsize, self.finetuned_dtype.itemsize)
        numel, step = self.info.numel, chunk_elements(self.chunk_bytes, itemsize)
        return [(start, min(start + step, numel)) for start in range(0, numel, step)]


def _joined(pieces: list[Any]) -> np.ndarray:
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces or [np.empty(0, np.uint8)])


class Run:
    """One build's threads and counters: ``stream`` compares the tensors and hands each finished one to a sink."""

    def __init__(self, source_a: Source, source_b: Source, backend: Backend, criterion: Criterion, ladder: bool,
                 workers: int | None, chunk_bytes: int | None, progress: bool, bits: bool = True):
        self.sources, self.backend, self.criterion, self.ladder = (source_a, source_b), backend, criterion, ladder
        self.bits = bits  # False: counts only, no packed bits kept
        workers = max(1, workers or os.cpu_count() or 1)
        on_device = backend.takes_tensors and source_a.resident is not None and source_b.resident is not None
        if on_device:
            workers = min(workers, DEVICE_WORKERS)
        self.workers, self.depth = workers, workers + 1
        self.chunk_bytes = max(8 * 8, chunk_bytes or (DEVICE_CHUNK_BYTES if on_device else
                                                      min(MAX_CHUNK_BYTES, READ_BUDGET_BYTES // (2 * self.depth))))
        self.fit_chunks = chunk_bytes is None and not backend.takes_tensors  # ``_fit_chunks``
        self.progress = progress
        self._buffers = threading.local()

    def stream(self, infos: list[TensorInfo], sink: Sink, whole: list[str] | None = None) -> dict[str, Any]:
        """Compare every tensor, hand each finished one to ``sink`` in order, and return the build stats.

        With ``whole`` (the names stored whole) each tensor's changed values go to the sink too.
        """
        self._fit_chunks(sum(info.nbytes for info in infos))
        stats: dict[str, Any] = {"changed": 0, "numel": 0, "dtypes": {}}
        ladders: dict[str, list[int]] = {}
        pending: deque[tuple[TensorJob, Future[tuple[int, list[int] | None, int]], bool]] = deque()
        writes: deque[tuple[Future[None], int]] = deque()  # and the bytes each holds
        finetuned, stored_whole = self.sources[1].tensors, set(whole or ())
        bar = _progress_bar(sum(i.numel * finetuned[i.name].dtype.itemsize + (0 if i.name in stored_whole else i.nbytes)
                                for i in infos)) if self.progress else _NoBar()
        # kept threads: starting them cost a small build ~1.5 ms of CPU (~5% at 2 x 18 MB)
        pool, writer, tasks = thread_pool(self.workers, "build"), thread_pool(1, "write"), Tasks()
        checked = time.monotonic()

        def finish(job: TensorJob) -> None:
            nonlocal checked
            if time.monotonic() - checked >= CHECK_SECONDS:  # fail early, between tensors, once a file is rewritten
                self.check_unchanged()
                checked = time.monotonic()
            held = job.held_bytes()
            while len(writes) >= PENDING_WRITES and sum(nbytes for _, nbytes in writes) + held > PENDING_BYTES:
                writes.popleft()[0].result()
            if sink.inline:  # nothing to encode: no hand-off to the threads
                sink.commit(sink.prepare(job.info.name, job.info.shape, job.packed, job.ones, job.take_values()))
            else:
                prepared = tasks.submit(pool, sink.prepare, job.info.name, job.info.shape, job.packed, job.ones,
                                        job.take_values())
                writes.append((tasks.submit(writer, lambda: sink.commit(prepared.result())), held))
            stats["changed"] += job.ones
            stats["numel"] += job.info.numel
            stats["dtypes"][job.info.name] = job.info.dtype.name
            if job.finetuned_dtype != job.info.dtype:
                stats.setdefault("cross_dtype", {})[job.info.name] = [job.info.dtype.name, job.finetuned_dtype.name]
            ladders[job.info.name] = job.ladder.tolist()

        def collect() -> None:
            job, future, last = pending.popleft()
            ones, counts, nbytes = future.result()
            job.ones += ones
            if counts is not None:
                job.ladder += counts
            bar.update(nbytes)
            if last:
                finish(job)

        try:
            for info in infos:
                job = TensorJob(info, finetuned[info.name].dtype, self.chunk_bytes, values=whole is not None,
                                 whole=info.name in stored_whole, bits=self.bits)
                job.coded = job.values and not job.whole and sink.takes_differences \
                    and not self.backend.takes_tensors and takes_differences(info.dtype)
                chunks = job.chunks
                if not chunks:
                    finish(job)
                for k, (start, stop) in enumerate(chunks):
                    while len(pending) >= self.depth:
                        collect()
                    pending.append((job, tasks.submit(pool, self._compare, job, k, start, stop), k == len(chunks) - 1))
            while pending:
                collect()
            while writes:
                writes.popleft()[0].result()
        finally:
            bar.close()
            tasks.settle()
        if self.ladder:
            total = [sum(counts[k] for counts in ladders.values()) for k in range(len(LADDER_ATOL))]
            stats["ladder"] = {"atol": list(LADDER_ATOL), "changed": {"__all__": total, **ladders}}
        return stats

    def _fit_chunks(self, nbytes: int) -> None:
        """Halve the default chunks of a CPU build of ``nbytes`` (a side) until each worker gets CHUNKS_PER_WORKER
        of them, down to MIN_CHUNK_BYTES, and hand out twice as many at a time (the same bytes): a worker then
        waits less for the thread that hands them out."""
        while self.fit_chunks and self.chunk_bytes // 2 >= MIN_CHUNK_BYTES \
                and nbytes < CHUNKS_PER_WORKER * self.workers * self.chunk_bytes:
            self.chunk_bytes //= 2
            self.depth *= 2

    def _compare(self, job: TensorJob, k: int, start: int, stop: int) -> tuple[int, list[int] | None, int]:
        """Worker: read chunk ``k`` of both sides, compare, and place its packed bits (and values); returns
        counts. A tensor stored whole reads its finetuned side only: every element counts as changed."""
        if job.whole:
            job.pieces[k] = chunk_values(self._read(1, job.info.name, start, stop), None)
            count = stop - start
            return count, [count] * len(LADDER_ATOL) if self.ladder else None, count * job.info.dtype.itemsize
        a, b = (self._read(side, job.info.name, start, stop) for side in range(2))
        base, dtype = a, job.info.dtype
        if job.finetuned_dtype != dtype:  # by value: float64 bits are equal iff the values are the same
            a, b, dtype = self.backend.widen(a, dtype), self.backend.widen(b, job.finetuned_dtype), FLOAT64
        result = self.backend.compare(a, b, dtype, self.criterion, self.ladder, bits=job.bits)
        if job.bits:
            packed = cast(np.ndarray, result.packed)  # compare gives packed bits when asked for them (bits=True)
            job.packed[start // 8: start // 8 + packed.size] = packed
        if job.coded:  # the same dtype on both sides: a delta stores a tensor whole when its dtype changed
            job.pieces[k], job.base_pieces[k] = chunk_differences(base, b, cast(np.ndarray, result.packed), dtype,
                                                                  self._buffers)
        elif job.values:
            job.pieces[k] = chunk_values(b, result.packed)
            job.base_pieces[k] = chunk_values(base, result.packed)
        return result.ones, result.ladder, (stop - start) * (job.info.dtype.itemsize + job.finetuned_dtype.itemsize)

    def check_unchanged(self) -> None:
        """Raise SourceError if either checkpoint changed since it was opened."""
        for source in self.sources:
            source.check_unchanged()

    def _read(self, side: int, name: str, start: int, stop: int) -> Any:
        """A chunk of side 0 (base) or 1: a torch view where the backend takes them (tensors stay on their
        device), else numpy, read into this thread's staging buffer for that side (made on first use)."""
        source = self.sources[side]
        chunk = source.read_tensor(name, start, stop) if self.backend.takes_tensors else None
        if chunk is not None:
            return chunk
        buffers = getattr(self._buffers, "by_side", None)
        if buffers is None:
            buffers = self._buffers.by_side = [None, None]
        if buffers[side] is None:
            buffers[side] = self.backend.staging(self.chunk_bytes)
        return source.read(name, start, stop, buffers[side])


class _NoBar:
    """What a build without ``progress`` updates: nothing (a disabled tqdm still costs ~2 ms a build)."""

    def update(self, nbytes: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm  # here, not at import: every command line would pay for it

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="build", file=sys.stderr,
                dynamic_ncols=True)


def chunk_elements(chunk_bytes: int, itemsize: int) -> int:
    """Elements per chunk: as many as fit in ``chunk_bytes``, a multiple of 8 so chunks pack to whole bytes."""
    return max(8, chunk_bytes // itemsize // 8 * 8)
