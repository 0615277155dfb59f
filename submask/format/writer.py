"""Streaming, atomic writing of .smask files and sharded masks (FORMAT.md §2, §6).

Payloads are kept as they arrive, in memory up to SPILL_BYTES (all shards together) and beyond that in a
scratch file next to the target, so memory stays bounded; the final file(s) appear under their names only
once everything is written. A delta or mask smaller than SPILL_BYTES is thus written once, not written to the
scratch file and copied from it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from .. import strict_json
from ..atomic import atomic_write, check_target, scratch_file, writing
from ..codecs import get_codec
from ..errors import FormatError, MismatchError, OutputError, UsageError
from ..mask import TensorMask
from ..metadata import FORMAT_NAME, MAJOR, PAYLOAD_CRC_MINOR, SHARD_KEY, MaskMetadata, file_name_problem
from ..packed import crc32_update
from .container import serialize_header, write_container
from .header import RESERVED_NAMES, SHARD_MINOR, ShardInfo, TensorEntry, payload_names
from .layout import check_layout
from .reader import INDEX_SUFFIX
from .shards import new_write_id, publish_sharded, remove_orphans, shard_names
from .stats import stats_problems
from .tensors import encode_tensor
from .values import VALUES_PREFIX, TensorValues, encode_tensor_values, is_diff

SPILL_BYTES = 64 * 1024 * 1024  # payload bytes a writer keeps in memory before it spills to a scratch file


class _Held:
    """Payload bytes in memory until SPILL_BYTES is reached (``budget``: what is left of it, shared by a
    writer's shards), then in the scratch file that ``spill`` opens; read back once, as a file, by
    ``container.write_container``."""

    def __init__(self, spill: Callable[[], BinaryIO], budget: list[int]):
        self._spill, self._budget = spill, budget
        self._pieces: list[bytes] = []
        self.file: BinaryIO | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.file is None and len(data) > self._budget[0]:
            self.file = self._spill()
            for piece in self._pieces:
                self.file.write(piece)
            self._budget[0] += sum(map(len, self._pieces))
            self._pieces = []
        if self.file is not None:
            self.file.write(data)
            return
        if not data:  # an empty piece would read as the end
            return
        self._pieces.append(data if type(data) is bytes else bytes(data))  # kept: never a caller's mutable buffer
        self._budget[0] -= len(data)

    def source(self) -> BinaryIO | _Pieces:
        """What ``write_container`` copies the payloads from."""
        return self.file if self.file is not None else _Pieces(self._pieces)


class _Pieces:
    """Bytes held in memory, read as a file by ``container._copy_all`` (no ``fileno``: it reads them in turn)."""

    def __init__(self, pieces: list[bytes]):
        self._pieces, self._next = pieces, 0

    def flush(self) -> None:
        pass

    def seek(self, offset: int) -> None:
        if offset:
            raise ValueError("held payloads are read from their start")
        self._next = 0

    def read(self, size: int = -1) -> bytes:
        if self._next == len(self._pieces):
            return b""
        self._next += 1
        return self._pieces[self._next - 1]


@dataclass
class _Shard:
    data: _Held
    entries: list[TensorEntry] = field(default_factory=list)
    sizes: list[tuple[int, ...]] = field(default_factory=list)  # per entry: its mask payload's, then its values'

    @property
    def nbytes(self) -> int:
        return sum(map(sum, self.sizes))

    def payloads(self) -> list[tuple[str, int]]:
        """(name, length) of each payload, in file order."""
        return list(zip(payload_names({entry.name: entry for entry in self.entries}),
                        (size for sizes in self.sizes for size in sizes)))


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
    An existing ``path`` (or its index) is refused at construction with OutputError unless ``overwrite``, and
    so is, at the end, one that another process wrote meanwhile (this result is then not kept, ``atomic``);
    an OSError while writing (disk full) becomes an OutputError naming ``path``.
    """

    def __init__(self, path: str | os.PathLike[str], metadata: MaskMetadata, *, max_shard_bytes: int | None = None,
                 write_id: str | None = None, overwrite: bool = False):
        self.path = check_mask_target(path, overwrite)
        self.overwrite = overwrite
        if max_shard_bytes is not None:
            check_shard_names(self.path)
        if self.path.parent.is_dir():
            remove_orphans(self.path.parent)  # what a killed sharded publish left in this folder
        check_writable(metadata, self.path)
        self.metadata = metadata
        self.max_shard_bytes = max_shard_bytes
        self.write_id = write_id
        self._stack = ExitStack()
        self._budget = [SPILL_BYTES]  # what the shards may still hold in memory
        self._shards: list[_Shard] = []
        self._names: set[str] = set()
        self.paths: list[Path] = []
        self.index_path: Path | None = None

    def __enter__(self) -> MaskWriter:
        return self

    def add(self, name: str, mask: TensorMask, encoding: str = "auto", config: dict[str, Any] | None = None, *,
            values: TensorValues | None = None, values_config: dict[str, Any] | None = None) -> TensorEntry:
        """Encode and append one tensor's mask (and its values, in a delta); returns its header entry.

        ``encoding`` is "auto" (the smallest default encoding) or an id; ``config`` overrides that encoding's
        default settings (e.g. ``{"block_bits": 4096}`` for "rice"). ``values`` holds the value bytes at the set
        positions (FORMAT.md §12), ``values_config`` their encoding's settings (e.g. ``{"block_values": 4096}``).
        """
        return self.add_packed(name, mask.shape, mask.packed, mask.count, encoding, config, values=values,
                               values_config=values_config)

    def add_packed(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int,
                   encoding: str = "auto", config: dict[str, Any] | None = None, *,
                   values: TensorValues | None = None, values_config: dict[str, Any] | None = None) -> TensorEntry:
        """Encode and append packed bits with a known popcount (and values, as ``add``)."""
        entry, payload = encode_tensor(name, shape, packed, ones, encoding, config)
        if values is None:
            return self.add_encoded(entry, payload)
        record, values_payload = encode_tensor_values(name, values, ones, values_config, packed, math.prod(shape))
        return self.add_encoded(replace(entry, values=record), payload, values_payload)

    def add_encoded(self, entry: TensorEntry, payload: bytes, values_payload: bytes | None = None) -> TensorEntry:
        """Append a tensor already encoded by ``format.tensors.encode_tensor`` (e.g. on another thread), with
        ``values_payload`` from ``format.values.encode_tensor_values`` when ``entry.values`` is set. The name
        of the values entry is settled when the file is written (``entry.values.entry`` is a first choice); the
        payload's CRC-32 (format 1.3) is computed here unless the entry has it."""
        name = entry.name
        if (entry.values is None) != (values_payload is None):
            raise UsageError(f"{self.path}: tensor {name!r}: pass values_payload exactly when entry.values is set")
        if not isinstance(name, str) or name in RESERVED_NAMES:
            raise FormatError(f"{self.path}: a tensor cannot be named {name!r} in a .smask file (safetensors "
                              "reserves it); rename the tensor")
        if name in self._names:
            raise MismatchError(f"{self.path}: tensor {name!r} was already added")
        if entry.payload_crc32 is None:
            entry = replace(entry, payload_crc32=f"{crc32_update(payload):08x}")
        payloads = (payload,) if values_payload is None else (payload, values_payload)
        shard = self._shard_for(sum(map(len, payloads)))
        with writing(self.path):
            for data in payloads:
                shard.data.write(data)
        shard.entries.append(entry)
        shard.sizes.append(tuple(map(len, payloads)))
        self._names.add(name)
        return entry

    def _shard_for(self, size: int) -> _Shard:
        last = self._shards[-1] if self._shards else None
        if last is None or (self.max_shard_bytes and last.entries and last.nbytes + size > self.max_shard_bytes):
            last = _Shard(self._held())
            self._shards.append(last)
        return last

    def _held(self) -> _Held:
        return _Held(lambda: self._stack.enter_context(scratch_file(self.path.parent, self.path)), self._budget)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        with self._stack:
            if exc_type is None:
                self._finish()

    def _finish(self) -> None:
        shards = self._shards or [_Shard(self._held())]
        taken = set(self._names)
        for shard in shards:
            shard.entries = [replace(e, values=replace(e.values, entry=_free_values_name(e.name, taken)))
                             if e.values is not None else e for e in shard.entries]
        check_writable(self.metadata, self.path)  # again: the metadata may have changed since (a build's stats)
        values = [e.values for s in shards for e in s.entries if e.values is not None]
        metadata = _layout_for(self.metadata, shards, str(self.path))
        metadata = metadata.for_file(bool(values), differences=any(map(is_diff, values)))
        encodings = {entry.encoding for shard in shards for entry in shard.entries}
        # a file declares at least the minor version that added each encoding it uses (§7)
        metadata = replace(metadata, minor_version=max([metadata.minor_version,
                                                        *(get_codec(e).minor_version for e in encodings)]))
        if len(shards) == 1:
            with atomic_write(self.path, self.overwrite) as out:
                _write_shard(out, metadata, shards[0])
            self.paths = [self.path]
            return
        write_id = self.write_id or new_write_id()
        writers = [partial(_write_shard, metadata=metadata, shard=shard,
                           record=ShardInfo(write_id, number, len(shards))) for number, shard in enumerate(shards, 1)]

        def index(names: list[str]) -> dict[str, Any]:
            return {
                "metadata": {"format": FORMAT_NAME, "version": f"{MAJOR}.{_shard_minor(metadata)}",
                             "write_id": write_id,
                             "total_bits": sum(e.bits for s in shards for e in s.entries),
                             "total_ones": sum(e.ones for s in shards for e in s.entries),
                             "total_size": sum(s.nbytes for s in shards)},
                "weight_map": {entry.name: name for name, shard in zip(names, shards) for entry in shard.entries},
            }

        self.paths = publish_sharded(self.path, write_id, writers, index, self.overwrite)
        self.index_path = self.paths[-1]



def _layout_for(metadata: MaskMetadata, shards: list[_Shard], label: str) -> MaskMetadata:
    """The metadata to write, its checkpoint layout checked against the tensors written (FORMAT.md §12.3): a
    layout with no values at all is dropped (a delta's mask saved alone is a mask); one that lists a tensor
    without matching values is refused before anything is written."""
    if metadata.checkpoint is None:
        return metadata
    held = {e.name: (e.values.dtype, e.shape) for s in shards for e in s.entries if e.values is not None}
    if not held:
        return replace(metadata, checkpoint=None)
    try:
        check_layout(metadata.checkpoint, held, label)
    except FormatError as exc:
        raise UsageError(f"{exc}; a delta's checkpoint layout needs the values of every tensor it lists: add "
                         "them, or write a mask without the layout (metadata with checkpoint=None)") from None
    return metadata


def _write_shard(out: BinaryIO, metadata: MaskMetadata, shard: _Shard, record: ShardInfo | None = None) -> None:
    header, minor = metadata.to_json(), metadata.minor_version
    if record is not None:
        minor = _shard_minor(metadata)
        header["version"] = f"{MAJOR}.{minor}"
        header[SHARD_KEY] = record.to_json()
    header["tensors"] = {entry.name: (entry if minor >= PAYLOAD_CRC_MINOR else replace(entry, payload_crc32=None))
                         .to_json() for entry in shard.entries}
    write_container(out, header, shard.payloads(), cast(BinaryIO, shard.data.source()), minor)


def check_writable(metadata: MaskMetadata, path: Path) -> None:
    """Refuse, before any work, metadata that the reader, ``validate`` or JSON would reject: the header is
    serialized and read back with the reader's own checks."""
    written = metadata.for_file(has_values=False)
    MaskMetadata.from_json(strict_json.loads(serialize_header(written.to_json(), path)), path)
    problems = stats_problems(metadata.stats)
    if problems:
        raise FormatError(f"{path}: cannot write this mask: {problems[0]}")


def _free_values_name(name: str, taken: set[str]) -> str:
    """The writers' name for a tensor's values entry: "~values/" + its name, then with ~2, ~3, ... (§12)."""
    candidate, number = VALUES_PREFIX + name, 2
    while candidate in taken:
        candidate, number = f"{VALUES_PREFIX}{name}~{number}", number + 1
    taken.add(candidate)
    return candidate


def _shard_minor(metadata: MaskMetadata) -> int:
    """The minor version a shard and its index declare: at least the one that added the "shard" record."""
    return max(metadata.minor_version, SHARD_MINOR)


def check_shard_names(target: Path) -> None:
    """FormatError, before any work, when the shards of a mask saved at ``target`` would get names that a reader
    refuses (FORMAT.md §8): a control character, or too long."""
    longest = shard_names(target.name, "f" * 32, 1, lambda names: False)[0]
    problem = file_name_problem(longest)
    if problem:
        raise FormatError(f"{target}: cannot write a sharded mask here: its shards would be named like {longest!r}, "
                          f"which {problem} (FORMAT.md §8); choose another file name")


def check_mask_target(path: str | os.PathLike[str], overwrite: bool = False, inputs: Iterable[object] = ()) -> Path:
    """``atomic.check_target`` for a mask and its sharded index; a checkpoint is never replaced by a mask."""
    target = check_target(path, overwrite, inputs=inputs)
    check_target(target.with_name(target.name + INDEX_SUFFIX), overwrite)
    if target.suffix == ".safetensors" and target.exists():
        raise OutputError(target, "is a checkpoint (.safetensors), not a mask; write the mask to a .smask path")
    return target

