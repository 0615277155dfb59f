"""Writing one rebuilt safetensors file: the base's bytes with the delta's values put in, hashed as written.

Five threads share the work (hashlib, zstd, CRC-32, file I/O and the compiled kernels release the GIL): the
*decoder* decodes each tensor's mask and its blocks of values a few items ahead; the caller's thread reads
the base a chunk at a time into a reused buffer and puts the new values in place (``rebuild_kernels``); the
*hasher* feeds each finished chunk to SHA-256 and the *writer* writes it. ``IN_FLIGHT + 1`` buffers rotate:
one is filled while the others are hashed and written. The *flusher* flushes what is written to the disk
while the rest is still being made (``os.fdatasync`` once ``WRITEBACK_BYTES`` are unsynced, one at a time), so
the caller's final fsync finds little left: on this project's disk the flush, not the writes, is what a copy
waits for, and Linux's sync_file_range (writeback started, no flush) left the final fsync as long.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import numpy as np

from .checkpoints.safetensors_file import TensorInfo
from .checkpoints.sources import CHUNK_ELEMENTS, Source
from .errors import FormatError
from .format.diffs import Scratch
from .mask import TensorMask
from .metadata import CheckpointFile
from .packed import popcount
from .rebuild_kernels import decode_into, scatter_into
from .safetensors_header import LENGTH

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from .rebuild_source import DeltaValues

IN_FLIGHT = 2  # chunks being hashed and written while the next is filled in
# Items the decoder keeps ready: while a tensor's last block is worked on, its end, the next tensor's mask and
# that tensor's first block are prepared (at most this many blocks of values are held ahead).
AHEAD = 3
WRITEBACK_BYTES = 4 << 20  # written but not yet flushed to the disk, from which a flush starts
_END = None  # after a tensor's blocks in the decoder's stream


def write_file(handle: BinaryIO, file: CheckpointFile, tensors: list[TensorInfo], values: DeltaValues,
               base: Source, progress: Callable[[int], None] | None) -> str:
    """Write one file of the delta's layout to ``handle`` (its header or text, then each tensor's bytes in
    order); return the SHA-256 of what was written. FormatError when the delta's values are corrupt."""
    from concurrent.futures import ThreadPoolExecutor  # here, not at import: it imports logging

    with ThreadPoolExecutor(1, "submask-rebuild-values") as decoder, _Output(handle, progress) as output:
        if file.header is None:
            output.emit(np.frombuffer(file.text.encode("utf-8"), np.uint8))  # type: ignore[union-attr]
            return output.finish()
        header = file.header.encode("utf-8")
        output.emit(np.frombuffer(LENGTH.pack(len(header)) + header, np.uint8))
        buffers = itertools.cycle([np.empty(CHUNK_ELEMENTS * 8, np.uint8) for _ in range(IN_FLIGHT + 1)])
        scratch = Scratch()  # the numpy decode's arrays, reused from block to block
        items = _ahead(_stream(tensors, values), decoder)
        for _ in tensors:
            info, bits, block_elements = next(items)
            blocks = _until_end(items)
            if block_elements:
                chunks = _diff_chunks(info, bits, blocks, base, buffers, block_elements, values.label, scratch)
            else:
                chunks = _tensor_chunks(info, bits, _ValueStream(blocks, values.label, info.name), base, buffers)
            for chunk in chunks:
                output.emit(chunk)
            if next(blocks, _END) is not _END:
                raise FormatError(f"{values.label}: tensor {info.name!r}: more difference blocks than its elements "
                                  "take; the delta is corrupt")
        return output.finish()


class _Output:
    """Chunks hashed on one thread and written on another, in order; ``emit`` returns once the buffer that
    will be filled next is free again."""

    def __init__(self, handle: BinaryIO, progress: Callable[[int], None] | None):
        from concurrent.futures import ThreadPoolExecutor

        self._handle, self._progress, self._digest = handle, progress, hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, "submask-rebuild-hash")
        self._writer = ThreadPoolExecutor(1, "submask-rebuild-write")
        self._flusher = ThreadPoolExecutor(1, "submask-rebuild-flush")
        self._pending: deque[tuple[Future[None], Future[None]]] = deque()
        self._flushing: Future[None] | None = None
        self._unflushed = 0

    def emit(self, chunk: np.ndarray) -> None:
        view = chunk.reshape(-1).view(np.uint8).data
        while len(self._pending) >= IN_FLIGHT:
            self._wait()
        self._pending.append((self._hasher.submit(self._digest.update, view), self._writer.submit(self._write, view)))
        if self._progress is not None:
            self._progress(view.nbytes)

    def finish(self) -> str:
        """The SHA-256 of every chunk, once all are written (and the flushes started are done)."""
        while self._pending:
            self._wait()
        if self._flushing is not None:
            self._flushing.result()
        return self._digest.hexdigest()

    def _write(self, view: memoryview) -> None:
        """Write ``view`` (on the writer thread); then start flushing what is written when enough is unflushed
        and no flush runs (an error of an earlier flush is raised here)."""
        self._handle.write(view)
        self._unflushed += view.nbytes
        if self._unflushed >= WRITEBACK_BYTES and _FLUSH is not None \
                and (self._flushing is None or self._flushing.done()):
            if self._flushing is not None:
                self._flushing.result()
            self._handle.flush()
            self._flushing, self._unflushed = self._flusher.submit(_FLUSH, self._handle.fileno()), 0

    def _wait(self) -> None:
        hashed, written = self._pending.popleft()
        hashed.result()
        written.result()

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hasher.shutdown()
        self._writer.shutdown()
        self._flusher.shutdown()  # waits for a flush still running: the caller closes the file after


_FLUSH: Callable[[int], None] | None = getattr(os, "fdatasync", None)  # absent on some systems: fsync does it all


def _stream(tensors: list[TensorInfo], values: DeltaValues) -> Iterator[Any]:
    """What the decoder prepares, in order: per tensor (info, its mask, block_elements or 0 for values stored
    as they are), then its blocks of values, then ``_END``."""
    for info in tensors:
        coded = values.differences(info.name)
        yield info, values.bits(info.name), 0 if coded is None else coded[0]
        yield from values.blocks(info.name) if coded is None else coded[1]  # its end checks (CRC-32) run here
        yield _END


def _ahead(items: Iterator[Any], thread: ThreadPoolExecutor) -> Iterator[Any]:
    """``items``, each prepared on ``thread`` up to ``AHEAD`` ahead of its use (errors surface in order)."""
    queued: deque[Future[Any]] = deque(thread.submit(next, items, StopIteration) for _ in range(AHEAD))
    while (item := queued.popleft().result()) is not StopIteration:
        queued.append(thread.submit(next, items, StopIteration))
        yield item


def _until_end(items: Iterator[Any]) -> Iterator[np.ndarray]:
    """The items of one tensor: those before the next ``_END``."""
    while (item := next(items)) is not _END:
        yield item


def _diff_chunks(info: TensorInfo, bits: TensorMask | np.ndarray, blocks: Iterator[np.ndarray], base: Source,
                 buffers: Iterator[np.ndarray], block_elements: int, label: str,
                 scratch: Scratch) -> Iterator[np.ndarray]:
    """One tensor's bytes from values coded against the base (FORMAT.md §12.4): block ``k`` holds the values of
    elements ``[k * block_elements, (k + 1) * block_elements)``, so each is decoded into the base's chunk of
    those elements, in place."""
    positions = bits if isinstance(bits, np.ndarray) else None
    whole = (bits.size if isinstance(bits, np.ndarray) else bits.count) == info.numel
    done = 0
    for start in range(0, info.numel, block_elements):
        stop = min(start + block_elements, info.numel)
        chunk = _base_chunk(info, start, stop, base, buffers)
        if whole:
            where = None
        elif positions is None:
            where = cast(TensorMask, bits).packed[start // 8: (stop + 7) // 8]
        else:
            end = done + int(np.searchsorted(positions[done:], stop))
            where, done = positions[done:end] - start, end
        block = next(blocks, _END)
        try:
            if block is _END:
                raise FormatError("no block of differences left")
            decode_into(chunk, where, block, info.dtype.name, scratch)
        except FormatError as exc:
            raise FormatError(f"{label}, tensor {info.name!r}, elements {start}-{stop}: {exc}; the delta is "
                              "corrupt") from None
        yield chunk


def _base_chunk(info: TensorInfo, start: int, stop: int, base: Source, buffers: Iterator[np.ndarray]) -> np.ndarray:
    """Elements ``[start, stop)`` of the base's tensor, read into the next of ``buffers`` (writable)."""
    buffer = next(buffers)
    if buffer.size < (stop - start) * info.dtype.itemsize:  # a writer's block larger than the default
        buffer = np.empty((stop - start) * info.dtype.itemsize, np.uint8)
    chunk = base.read(info.name, start, stop, buffer)
    return chunk if chunk.flags.writeable else chunk.copy()  # a source may hand back a read-only view


def _tensor_chunks(info: TensorInfo, bits: TensorMask | np.ndarray, stream: _ValueStream, base: Source,
                   buffers: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """One tensor's bytes from values stored as they are: the values alone when every bit is set, else the
    base's chunk with the values at the set positions (``bits``: packed, or the positions)."""
    positions = bits if isinstance(bits, np.ndarray) else None
    itemsize = info.dtype.itemsize
    whole = (bits.size if isinstance(bits, np.ndarray) else bits.count) == info.numel
    done = 0  # set positions before this chunk
    for start in range(0, info.numel, CHUNK_ELEMENTS):
        stop = min(start + CHUNK_ELEMENTS, info.numel)
        if whole:
            yield stream.take((stop - start) * itemsize)
            continue
        chunk = _base_chunk(info, start, stop, base, buffers)
        if positions is None:
            packed = cast(TensorMask, bits).packed[start // 8: (stop + 7) // 8]  # not positions: a TensorMask
            scatter_into(chunk, packed, stream.take(popcount(packed) * itemsize).view(info.dtype.raw))
        else:
            end = done + int(np.searchsorted(positions[done:], stop))
            chunk[positions[done:end] - start] = stream.take((end - done) * itemsize).view(info.dtype.raw)
            done = end
        yield chunk
    stream.finish()


class _ValueStream:
    """A tensor's value bytes, taken in the amounts asked for, from blocks of another size."""

    def __init__(self, blocks: Iterator[np.ndarray], label: str, name: str):
        self._blocks, self._rest, self._at = blocks, np.empty(0, np.uint8), f"{label}, tensor {name!r}: "

    def take(self, nbytes: int) -> np.ndarray:
        parts = []
        while nbytes:
            if not self._rest.size:
                block = next(self._blocks, None)
                if block is None:
                    raise FormatError(f"{self._at}fewer values than set bits; the delta is corrupt")
                self._rest = block
            parts.append(self._rest[:nbytes])
            self._rest, nbytes = self._rest[nbytes:], nbytes - parts[-1].size
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else self._rest[:0]

    def finish(self) -> None:
        """Drain the blocks, so that their end checks (CRC-32) run; FormatError if values are left over."""
        left = self._rest.size + sum(block.size for block in self._blocks)
        if left:
            raise FormatError(f"{self._at}{left} value bytes more than set bits; the delta is corrupt")
