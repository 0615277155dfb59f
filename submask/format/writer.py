"""Streaming, atomic writing of .smask files and sharded masks (FORMAT.md §2, §6).

Payloads are spilled to a scratch file next to the target as tensors arrive, so memory holds one tensor
at a time; the final file(s) appear under their names only once everything is written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .. import strict_json
from ..atomic import atomic_write, check_target, scratch_file, writing
from ..codecs import get_codec
from ..errors import FormatError, MismatchError, OutputError
from ..mask import TensorMask
from .container import serialize_header, write_container
from ..metadata import FORMAT_NAME, MAJOR, SHARD_KEY, MaskMetadata
from .reader import INDEX_SUFFIX
from .header import RESERVED_NAMES, SHARD_MINOR, ShardInfo, TensorEntry
from .shards import new_write_id, publish_sharded
from .stats import stats_problems
from .tensors import encode_tensor


@dataclass
class _Shard:
    data: BinaryIO
    entries: list[TensorEntry] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)


class MaskWriter:
    """Write tensor masks one at a time; the file appears atomically when the ``with`` block ends.

    >>> with MaskWriter("rl.smask", MaskMetadata(kind="update")) as writer:   # doctest: +SKIP
    ...     writer.add("w", TensorMask.from_numpy(bools))

    With ``max_shard_bytes``, payloads are split across ``STEM-ID-0000K-of-0000N.smask`` shards (ID from
    the write id) next to an index ``PATH.index.json`` once they exceed one shard, published atomically over
    any mask at ``path`` (``format.shards``); otherwise a single file is written at ``path``. If the block
    raises (Ctrl-C included), nothing is left under the final names. After the block, ``paths`` lists the
    files written (the shards, then the index) and ``index_path`` is the index, or None. ``write_id`` fixes
    the write id of a sharded mask (for reproducible files); by default each write draws a random one.
    An existing ``path`` (or its index) is refused at construction with OutputError unless ``overwrite``;
    an OSError while writing (disk full) becomes an OutputError naming ``path``.
    """

    def __init__(self, path: str | os.PathLike[str], metadata: MaskMetadata, *, max_shard_bytes: int | None = None,
                 write_id: str | None = None, overwrite: bool = False):
        self.path = check_mask_target(path, overwrite)
        check_writable(metadata, self.path)
        self.metadata = metadata
        self.max_shard_bytes = max_shard_bytes
        self.write_id = write_id
        self._stack = ExitStack()
        self._shards: list[_Shard] = []
        self._names: set[str] = set()
        self.paths: list[Path] = []
        self.index_path: Path | None = None

    def __enter__(self) -> "MaskWriter":
        return self

    def add(self, name: str, mask: TensorMask, encoding: str = "auto",
            config: dict[str, Any] | None = None) -> TensorEntry:
        """Encode and append one tensor's mask; returns its header entry.

        ``encoding`` is "auto" (the smallest default encoding) or an id; ``config`` overrides that encoding's
        default settings (e.g. ``{"block_bits": 4096}`` for "rice").
        """
        return self.add_packed(name, mask.shape, mask.packed, mask.count, encoding, config)

    def add_packed(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int,
                   encoding: str = "auto", config: dict[str, Any] | None = None) -> TensorEntry:
        """Encode and append packed bits with a known popcount."""
        return self.add_encoded(*encode_tensor(name, shape, packed, ones, encoding, config))

    def add_encoded(self, entry: TensorEntry, payload: bytes) -> TensorEntry:
        """Append a tensor already encoded by ``format.tensors.encode_tensor`` (e.g. on another thread)."""
        name = entry.name
        if not isinstance(name, str) or name in RESERVED_NAMES:
            raise FormatError(f"{self.path}: a tensor cannot be named {name!r} in a .smask file (safetensors "
                              "reserves it); rename the tensor")
        if name in self._names:
            raise MismatchError(f"{self.path}: tensor {name!r} was already added")
        shard = self._shard_for(len(payload))
        with writing(self.path):
            shard.data.write(payload)
        shard.entries.append(entry)
        shard.sizes.append(len(payload))
        self._names.add(name)
        return entry

    def _shard_for(self, size: int) -> _Shard:
        last = self._shards[-1] if self._shards else None
        if last is None or (self.max_shard_bytes and last.entries and last.nbytes + size > self.max_shard_bytes):
            data = self._stack.enter_context(scratch_file(self.path.parent, self.path))
            last = _Shard(data)
            self._shards.append(last)
        return last

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        with self._stack:
            if exc_type is None:
                self._finish()

    def _finish(self) -> None:
        shards = self._shards or [_Shard(self._stack.enter_context(scratch_file(self.path.parent, self.path)))]
        if len(shards) == 1:
            with atomic_write(self.path) as out:
                self._write_shard(out, shards[0])
            self.paths = [self.path]
            return
        write_id = self.write_id or new_write_id()
        writers = [partial(self._write_shard, shard=shard, record=ShardInfo(write_id, number, len(shards)))
                   for number, shard in enumerate(shards, 1)]

        def index(names: list[str]) -> dict[str, Any]:
            return {
                "metadata": {"format": FORMAT_NAME, "version": f"{MAJOR}.{self._minor(sharded=True)}", "write_id": write_id,
                             "total_bits": sum(e.bits for s in shards for e in s.entries),
                             "total_ones": sum(e.ones for s in shards for e in s.entries),
                             "total_size": sum(s.nbytes for s in shards)},
                "weight_map": {entry.name: name for name, shard in zip(names, shards) for entry in shard.entries},
            }

        self.paths = publish_sharded(self.path, write_id, writers, index)
        self.index_path = self.paths[-1]

    def _write_shard(self, out: BinaryIO, shard: _Shard, record: ShardInfo | None = None) -> None:
        header, minor = self.metadata.to_json(), self._minor(sharded=record is not None)
        header["version"] = f"{MAJOR}.{minor}"
        if record is not None:
            header[SHARD_KEY] = record.to_json()
        header["tensors"] = {entry.name: entry.to_json() for entry in shard.entries}
        write_container(out, header, [(e.name, size) for e, size in zip(shard.entries, shard.sizes)], shard.data,
                        minor)


    def _minor(self, sharded: bool) -> int:
        """The minor version the file (every shard, and the index) declares: the metadata's, raised to the
        one that added the shard record when sharded, and to the one that added each encoding used (§7)."""
        encodings = {entry.encoding for shard in self._shards for entry in shard.entries}
        return max([self.metadata.minor_version, SHARD_MINOR if sharded else 0,
                    *(get_codec(encoding).minor_version for encoding in encodings)])


def check_writable(metadata: MaskMetadata, path: Path) -> None:
    """Refuse, before any work, metadata that the reader, ``validate`` or JSON would reject: the header is
    serialized and read back with the reader's own checks."""
    MaskMetadata.from_json(strict_json.loads(serialize_header(metadata.to_json(), path)), path)
    problems = stats_problems(metadata.stats)
    if problems:
        raise FormatError(f"{path}: cannot write this mask: {problems[0]}")


def check_mask_target(path: str | os.PathLike[str], overwrite: bool = False, inputs: Iterable[object] = ()) -> Path:
    """``atomic.check_target`` for a mask and its sharded index; a checkpoint is never replaced by a mask."""
    target = check_target(path, overwrite, inputs=inputs)
    check_target(target.with_name(target.name + INDEX_SUFFIX), overwrite)
    if target.suffix == ".safetensors" and target.exists():
        raise OutputError(target, "is a checkpoint (.safetensors), not a mask; write the mask to a .smask path")
    return target

