"""How a block of a delta's stored differences is coded (FORMAT.md §12.4): each byte plane stored or as one zstd
frame, whichever is shorter; and the encode threads that code planes (and a build's masks) beside the caller.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import numpy as np

from ..workers import thread_pool
from .payloads import STORED, ZSTD

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

BLOCK_HEADER = 4  # u32 LE: the block's values
ZSTD_LEVEL = 3  # level 1 is 2-3x faster and smaller on most bench pairs, but larger on MiniLM bf16 (0.0323 vs 0.0320)
# ... except on the top plane of values of 2 bytes or more, where level 1 coded no delta of the delta bench larger
# than level 3 did (all 9 smaller, by up to 1%), in about half the time; the larger MiniLM bf16 delta at level 1 came
# from its low plane.
TOP_PLANE_LEVEL = 1
PARALLEL_PLANE_BYTES = 1 << 18  # a block's planes from this size on are coded in parallel (``Planes``)


class Planes:
    """A block's record: its count, then each plane stored or as one zstd frame, whichever is shorter.

    The top plane of values of two bytes or more (sign, exponent and the high mantissa bits) is coded at
    ``TOP_PLANE_LEVEL``, the others at ``ZSTD_LEVEL``. Planes of ``PARALLEL_PLANE_BYTES`` or more are coded on
    the encode threads (``encode_pool``), one plane each, so a large tensor's block does not keep one core busy
    while the other waits (zstd releases the GIL); the record is the same bytes either way."""

    def record(self, planes: np.ndarray) -> bytes:
        """The record of a block whose planes are the rows of ``planes`` (uint8, itemsize x count)."""
        levels = [ZSTD_LEVEL] * planes.shape[0]
        if len(levels) > 1:
            levels[-1] = TOP_PLANE_LEVEL
        if planes.shape[1] >= PARALLEL_PLANE_BYTES and len(levels) > 1:
            pool = encode_pool()
            later = [pool.submit(_plane, raw, level) for raw, level in zip(planes[::-1][:-1], levels[::-1][:-1])]
            coded = [_plane(planes[0], levels[0]), *(future.result() for future in reversed(later))]
        else:
            coded = [_plane(raw, level) for raw, level in zip(planes, levels)]
        records: list[bytes | memoryview] = [planes.shape[1].to_bytes(BLOCK_HEADER, "little")]
        for method, data in coded:
            records += [bytes([method]), len(data).to_bytes(4, "little"), data]
        return b"".join(records)


_compressors = threading.local()  # each thread's, by level: a new one costs as much as coding a plane of a few MiB


def _plane(raw: np.ndarray, level: int) -> tuple[int, bytes | memoryview]:
    """(method, data) of one plane: one zstd frame at ``level``, or the plane stored when that is not shorter."""
    by_level = getattr(_compressors, "by_level", None)
    if by_level is None:
        by_level = _compressors.by_level = {}
    compressor = by_level.get(level)
    if compressor is None:
        import zstandard  # here: commands that never write values skip its import

        compressor = by_level[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    packed = compressor.compress(raw.data)
    return (ZSTD, packed) if len(packed) < raw.size else (STORED, raw.data)


def encode_pool() -> ThreadPoolExecutor:
    """The threads that code planes (and a build's masks) beside the caller: one per core, started on first use
    and kept by the process (``workers.thread_pool``). Tasks on it never wait for each other."""
    return thread_pool(os.cpu_count() or 1, "encode")
