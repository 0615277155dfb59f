"""Raw, lazy reading of one .safetensors file: a validated header, then byte ranges read on demand.

The header (8-byte little-endian length, then JSON with each tensor's dtype, shape and data_offsets) is
parsed here rather than by ``safetensors.safe_open``, whose numpy framework cannot return bf16 or fp8.
Element ranges come back as unsigned integers of their width, read with ``os.preadv`` into a caller's
buffer: any dtype streams in bounded memory, from several threads at once (the GIL is released). Reads
never go through a memory map, because a file truncated while a map of it is read kills the process with
SIGBUS; a short read instead raises SourceError. The file's identity (inode, size, modification time) is
recorded at open, and ``check_unchanged`` tells whether it was rewritten since.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from ..safetensors_header import header_length, parse_header
from .dtypes import DType, dtype_named


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of a checkpoint: name, dtype and shape."""

    name: str
    dtype: DType
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class SafetensorsFile:
    """An open .safetensors file: ``tensors`` (name -> TensorInfo) and ``read`` of element ranges.

    >>> with SafetensorsFile("model.safetensors") as f:            # doctest: +SKIP
    ...     f.read("bert.pooler.dense.bias", 0, 8, np.empty(64, np.uint8))
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot open checkpoint ({exc.strerror})") from None
        try:
            stat = os.fstat(self._fd)
            self.size, self.mtime_ns, self._inode = stat.st_size, stat.st_mtime_ns, (stat.st_dev, stat.st_ino)
            self.tensors, self._offsets, self.metadata = self._parse_header()
        except BaseException:
            os.close(self._fd)
            raise

    def _parse_header(self) -> tuple[dict[str, TensorInfo], dict[str, int], dict[str, Any]]:
        length = header_length(os.pread(self._fd, 8, 0), self.size, self._corrupt)
        self.raw_header = os.pread(self._fd, 8 + length, 0)  # length prefix included: what ``apply`` copies
        metadata, entries = parse_header(self.raw_header[8:], self._corrupt)
        data_start = 8 + length
        tensors, offsets = {}, {}
        for name, entry in entries.items():
            info, begin = self._parse_entry(name, entry, data_start)
            tensors[name], offsets[name] = info, begin
        return tensors, offsets, metadata

    def _parse_entry(self, name: str, entry: Any, data_start: int) -> tuple[TensorInfo, int]:
        at = f"{self.path}, tensor {name!r}: "
        if not isinstance(entry, dict):
            raise self._corrupt(f"has a non-object entry for tensor {name!r}")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise self._corrupt(f"has an invalid shape {shape!r} for tensor {name!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise self._corrupt(f"has invalid data_offsets {offsets!r} for tensor {name!r}")
        dtype = dtype_named(str(entry.get("dtype")), at)
        info = TensorInfo(name, dtype, tuple(shape))
        if offsets[1] - offsets[0] != info.nbytes:
            raise self._corrupt(f"gives tensor {name!r} ({dtype.name} {list(shape)}) {offsets[1] - offsets[0]} "
                                f"bytes instead of {info.nbytes}")
        if data_start + offsets[1] > self.size:
            raise self._corrupt(f"is truncated: tensor {name!r} ends at byte {data_start + offsets[1]}, "
                                f"past the end of the file ({self.size} bytes)")
        return info, data_start + offsets[0]

    @property
    def names_in_file_order(self) -> list[str]:
        """The file's tensors in the order of their bytes."""
        return sorted(self._offsets, key=self._offsets.__getitem__)

    def _corrupt(self, problem: str) -> SourceError:
        return SourceError(f"{self.path}: not a valid safetensors checkpoint: the file {problem}; "
                           "download or save it again")

    def read(self, name: str, start: int, stop: int, buffer: np.ndarray) -> np.ndarray:
        """Elements ``[start, stop)`` of tensor ``name`` (flat, C order) as raw unsigned ints, in ``buffer``."""
        dtype = self.tensors[name].dtype
        nbytes = (stop - start) * dtype.itemsize
        view = buffer.data[:nbytes]
        offset, done = self._offsets[name] + start * dtype.itemsize, 0
        while done < nbytes:
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got == 0:
                raise self._ended_early(name)
            done += got
        return buffer[:nbytes].view(dtype.raw)

    def sha256(self, piece: int = 8 * 1024 * 1024) -> str:
        """Hex SHA-256 of the whole file as opened (read through this descriptor; hashlib releases the GIL)."""
        digest, view, offset = hashlib.sha256(), memoryview(bytearray(piece)), 0
        while got := os.preadv(self._fd, [view], offset):
            digest.update(view[:got])
            offset += got
        return digest.hexdigest()

    def check_unchanged(self) -> None:
        """SourceError if the file was rewritten, truncated or replaced since it was opened."""
        try:
            now, at_path = os.fstat(self._fd), os.stat(self.path)
        except OSError as exc:
            raise SourceError(f"{self.path}: the checkpoint went away during the build ({exc.strerror}); build "
                              "again once it is no longer being written") from None
        if (now.st_size, now.st_mtime_ns) != (self.size, self.mtime_ns):
            change = (f"size {self.size} -> {now.st_size} bytes" if now.st_size != self.size
                      else "rewritten in place")
        elif (at_path.st_dev, at_path.st_ino) != self._inode:
            change = "replaced by another file"
        else:
            return
        raise SourceError(f"{self.path}: the checkpoint changed while the build read it ({change}); build again "
                          "once it is no longer being written")

    def _ended_early(self, name: str) -> SourceError:
        return SourceError(f"{self.path}, tensor {name!r}: the checkpoint changed while the build read it (the "
                           "file ended early); build again once it is no longer being written")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
