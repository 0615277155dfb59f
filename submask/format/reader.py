"""Lazy, random-access reading of .smask files and sharded masks (FORMAT.md §2, §6)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import strict_json
from ..errors import FormatError, LimitError, SubmaskError, where
from ..limits import check_allocation
from ..mask import Mask, TensorMask, renamed_metadata
from ..metadata import MaskMetadata, check_version, file_name_problem
from ..names import mapped
from ..packed import packed_nbytes
from .container import Container, PayloadSpan, remember
from .diffs import block_counts, block_elements_of
from .header import ShardInfo, TensorEntry, ValuesEntry, is_write_id, parse_tensor_entries, payload_names
from .layout import check_layout
from .stats import stats_problems
from .tensors import decode_positions, decode_tensor, verify_tensor
from .values import TensorValues, checked_pieces, difference_blocks, is_diff, plane_methods, read_values, verify_values

INDEX_SUFFIX = ".index.json"
#: tensor entries parsed and checked in this process, by container identity (``container._PARSED``)
_ENTRIES: dict[tuple[int, bytes], dict[str, TensorEntry]] = {}
_ENTRIES_MAX = 64
Shard = TypeVar("Shard")


class MaskFile:
    """An open mask: metadata and per-tensor entries parsed, payloads decoded on access.

    >>> with submask.open("rl.smask") as f:          # doctest: +SKIP
    ...     f.entries["model.layers.0.mlp.up_proj.weight"].ones
    ...     q = f["model.layers.0.self_attn.q_proj.weight"]   # decodes this tensor only
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bits: int | None = None):
        self.path = Path(path)
        self._containers: list[Container] = []
        self._where: dict[str, Container] = {}
        #: the shard files in shard-number order ([] for a single file), and the write they belong to
        self.shards: list[Path] = []
        self.write_id: str | None = None
        try:
            if self.path.name.endswith(INDEX_SUFFIX):
                self._open_index()
            else:
                self._open_single(self.path)
            self._check_size(max_bits)
        except BaseException:
            self.close()
            raise

    def _open_single(self, path: Path, expected: set[str] | None = None) -> None:
        container = Container(path)
        self._containers.append(container)
        metadata = MaskMetadata.from_json(container.header, path)
        ShardInfo.from_header(container.header, path)  # a lone shard's record too (§6)
        entries = _ENTRIES.get(container.identity)  # checked on the same header bytes before
        if entries is None:
            entries = parse_tensor_entries(container.header.get("tensors"), metadata, path)
            if set(payload_names(entries)) != set(container.names):
                odd = sorted(set(payload_names(entries)) ^ set(container.names))[:3]
                raise FormatError(f"{where(path)}header entries and payloads differ (e.g. {odd}); the file is corrupt")
            remember(_ENTRIES, container.identity, entries, _ENTRIES_MAX)
        if expected is not None and set(entries) != expected:
            odd = sorted(set(entries) ^ expected)[:3]
            raise FormatError(f"{where(path)}shard holds other tensors than its index lists (e.g. {odd}); "
                              "the shards and index do not belong together")
        if not self._containers[1:]:
            self.metadata = metadata
            self.entries: dict[str, TensorEntry] = {}
        elif metadata.checkpoint != self.metadata.checkpoint:
            raise FormatError(f"{where(path)}records another checkpoint layout than shard {self._containers[0].path}; "
                              "every shard of a delta carries the same layout (FORMAT.md §12.3): the shards do not "
                              "belong together")
        self.entries.update(entries)
        self._where.update({name: container for name in entries})

    def _check_size(self, max_bits: int | None) -> None:
        """Refuse a mask of more than ``max_bits`` bits in all, the guard for untrusted files."""
        total = sum(entry.bits for entry in self.entries.values())
        if max_bits is not None and total > max_bits:
            raise LimitError(f"{self.path}: the mask holds {total:,} bits, more than max_bits={max_bits:,}; "
                             "raise max_bits if you trust this file")

    def _open_index(self) -> None:
        index = read_index(self.path)
        by_shard: dict[str, set[str]] = {}
        for name, shard in index["weight_map"].items():
            by_shard.setdefault(shard, set()).add(name)
        for shard, names in by_shard.items():
            shard_path = self.path.parent / shard
            if not shard_path.exists():
                raise FormatError(f"{where(self.path)}shard {shard} listed in the index is missing next to it; "
                                  "download or copy every shard of this mask")
            self._open_single(shard_path, names)
        self.shards = check_shards(self.path, index, [(c.path, c.header) for c in self._containers])
        self.write_id = index["metadata"].get("write_id")

    @cached_property  # an open file's entries never change
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor name -> shape, from the header (no decoding)."""
        return {name: entry.shape for name, entry in self.entries.items()}

    @cached_property
    def counts(self) -> dict[str, int]:
        """Tensor name -> number of set bits, from the header (no decoding)."""
        return {name: entry.ones for name, entry in self.entries.items()}

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def payload(self, name: str) -> bytes:
        """The encoded payload of one tensor, as stored."""
        return self._container(name).read(name)

    def payload_into(self, name: str, out: memoryview) -> None:
        """Read the encoded payload of one tensor into ``out`` (``payload_size(name)`` writable bytes): no copy."""
        self._container(name).read_into(name, out)

    def payloads_into(self, names: Sequence[str], out: memoryview) -> None:
        """Read the encoded payloads of ``names`` back to back into ``out`` (their ``payload_size`` summed,
        writable), from any thread: one read for a run of consecutive tensors of one file."""
        containers = {id(self._container(name)) for name in names}
        if len(containers) == 1:
            self._container(names[0]).read_run_into(names, out)
            return
        at = 0
        for name in names:
            size = self.payload_size(name)
            self.payload_into(name, out[at : at + size])
            at += size

    def payload_size(self, name: str) -> int:
        return self._container(name).payload_size(name)

    def __getitem__(self, name: str) -> TensorMask:
        """Decode and verify one tensor's mask."""
        entry = self._entry(name)
        container = self._container(name)
        packed = decode_tensor(entry, container.read(name), container.path)
        return TensorMask(entry.shape, packed, entry.ones)

    def positions(self, name: str) -> np.ndarray | None:
        """Decode and verify one tensor's set positions (flat indices, int64, ascending), or None when its
        encoding cannot list them directly (then ``self[name]``: decoding to positions would cost more)."""
        container = self._container(name)
        return decode_positions(self._entry(name), container.read(name), container.path)

    def load(self) -> Mask:
        """Decode every tensor into an in-memory ``Mask`` (without values: a delta's mask, ``io.load_delta``);
        LimitError, before decoding, when all the tensors' bits together exceed the memory limit (``limits``)."""
        bits = sum(entry.bits for entry in self.entries.values())
        check_allocation(sum(packed_nbytes(entry.bits) for entry in self.entries.values()),
                         f"{self.path}: the mask's {bits:,} bits")
        return Mask({name: self[name] for name in self.entries}, replace(self.metadata, checkpoint=None))

    @property
    def has_values(self) -> bool:
        """Whether any tensor carries values: the file is a delta (FORMAT.md §12)."""
        return any(entry.values is not None for entry in self.entries.values())

    def values(self, name: str, base: np.ndarray | None = None) -> TensorValues | None:
        """Decode and verify one tensor's values (None when it has none). Values coded against the base
        (``diff-planes``) need ``base``: the base's value bytes at the tensor's set positions (uint8)."""
        found = self._values_of(name)
        if found is None:
            return None
        counts = None
        if base is not None and is_diff(found[0]):
            entry = self._entry(name)
            counts = block_counts(entry.bits, block_elements_of(found[0].encoding, where(found[3], name)),
                                  self[name].packed)
        return read_values(*found, base=base, counts=counts)

    def value_blocks(self, name: str) -> Iterator[np.ndarray]:
        """One tensor's value bytes in consecutive pieces of bounded size (``format.values.iter_value_blocks``); the
        CRC-32 is checked once the last piece is taken. Nothing for a tensor without values."""
        found = self._values_of(name)
        return iter(()) if found is None else checked_pieces(*found)

    def difference_blocks(self, name: str) -> tuple[int, Iterator[np.ndarray]] | None:
        """For a tensor whose values are coded against the base (``diff-planes``, FORMAT.md §12.4): its
        block_elements and its blocks of stored differences (``format.diffs.iter_blocks``, CRC-32 checked once
        the last is taken); None otherwise."""
        found = self._values_of(name)
        if found is None or not is_diff(found[0]):
            return None
        return block_elements_of(found[0].encoding, where(found[3], name)), difference_blocks(*found)

    def values_size(self, name: str) -> int:
        """Bytes of one tensor's values payload as stored (0 without values)."""
        found = self._values_of(name)
        return 0 if found is None else found[1].size

    def value_planes(self, name: str) -> list[str]:
        """How each byte plane of one tensor's values is stored: "stored", "zstd" or "mixed" ([] without values)."""
        found = self._values_of(name)
        return [] if found is None else plane_methods(*found)

    def _values_of(self, name: str) -> tuple[ValuesEntry, PayloadSpan, int, Path, str] | None:
        """What ``format.values`` reads a tensor's values from: (record, payload, count, file, tensor name), or
        None when the tensor has no values."""
        entry = self._entry(name)
        if entry.values is None:
            return None
        container = self._container(name)
        return entry.values, container.span(entry.values.entry), entry.ones, container.path, name

    def _entry(self, name: str) -> TensorEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(f"{self.path}: no tensor {name!r} in this mask ({len(self.entries)} tensors)")
        return entry

    def problems(self) -> list[str]:
        """Verify every tensor and the stats; return one message per failure (empty when the file is sound).

        Tensors and their values are decoded piece by piece, so memory stays bounded whatever sizes the header
        claims.
        """
        found = [f"{self.path}: {problem}" for problem in stats_problems(self.metadata.stats)]
        if self.metadata.checkpoint is not None:
            held = {name: (entry.values.dtype, entry.shape) for name, entry in self.entries.items()
                    if entry.values is not None}
            try:
                check_layout(self.metadata.checkpoint, held, str(self.path))
            except SubmaskError as exc:
                found.append(str(exc))
        for name, entry in self.entries.items():
            container = self._container(name)
            try:
                verify_tensor(entry, container.read(name), container.path)
                values = self._values_of(name)
                if values is not None:
                    verify_values(*values)
            except SubmaskError as exc:
                found.append(str(exc))
        return found

    def _container(self, name: str) -> Container:
        return self._where[name]

    def renamed(self, names: Callable[[str], str]) -> MaskFile:
        """This open file with its tensors under the names ``names`` gives them (``submask.names.NameMap``).

        The view shares the open file (closing either closes both); entries keep their stored ``name``, so
        messages name the tensor as the file holds it.
        """
        new_names = mapped(self.entries, names, str(self.path))
        view = copy.copy(self)
        for cached in ("shapes", "counts"):
            view.__dict__.pop(cached, None)
        view.entries = {new_names[name]: entry for name, entry in self.entries.items()}
        view.metadata = renamed_metadata(self.metadata, view.shapes)
        view._where = {new_names[name]: _StoredNames(self._where[name], {new_names[name]: name})  # type: ignore[misc]
                       for name in self.entries}
        return view

    def close(self) -> None:
        for container in self._containers:
            container.close()

    def __enter__(self) -> MaskFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StoredNames:
    """A container read under mapped names: ``read(new)`` reads the payload stored as ``stored[new]``."""

    def __init__(self, container: Container, stored: dict[str, str]):
        self.container, self.stored, self.path = container, stored, container.path

    def read(self, name: str) -> bytes:
        return self.container.read(self.stored.get(name, name))

    def read_into(self, name: str, out: memoryview) -> None:
        self.container.read_into(self.stored.get(name, name), out)

    def read_run_into(self, names: Sequence[str], out: memoryview) -> None:
        self.container.read_run_into([self.stored.get(name, name) for name in names], out)

    def payload_size(self, name: str) -> int:
        return self.container.payload_size(self.stored.get(name, name))

    def span(self, name: str) -> PayloadSpan:
        return self.container.span(self.stored.get(name, name))


def read_index(path: Path) -> dict[str, Any]:
    """Read and validate a sharded mask's index JSON."""
    at = where(path)
    try:
        index = strict_json.loads(path.read_bytes())
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except strict_json.InvalidJSON as exc:
        raise FormatError(f"{at}index is not valid JSON ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("metadata"), dict):
        raise FormatError(f"{at}index must be an object with 'metadata' and 'weight_map'")
    if index["metadata"].get("format") != "submask":
        raise FormatError(f"{at}index 'metadata.format' must be 'submask'; this is not a mask index")
    check_version(index["metadata"].get("version"), path)
    if "write_id" in index["metadata"] and not is_write_id(index["metadata"]["write_id"]):
        raise FormatError(f"{at}index 'metadata.write_id' must be 32 lowercase hex digits, got "
                          f"{index['metadata']['write_id']!r}; the index is corrupt")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise FormatError(f"{at}'weight_map' must map tensor names to shard file names in the same directory")
    for shard in weight_map.values():
        problem = file_name_problem(shard)
        if problem:
            raise FormatError(f"{at}'weight_map' must map tensor names to shard file names in the same directory: "
                              f"shard {shard!r} {problem} (FORMAT.md §8); the index is corrupt or hostile")
    return index


def check_shards(index_at: object, index: dict[str, Any], headers: Sequence[tuple[Shard, Any]]) -> list[Shard]:
    """The shards of ``index`` in number order, once each shard's header shows it belongs (FORMAT.md §6).

    ``headers`` pairs each shard the index names (a path or URL) with its submask header. Every shard must
    carry a "shard" record with the index's write id, the shard count and its own number; an index without
    a write id (format 1.0) is read without this check.
    """
    write_id = index["metadata"].get("write_id")
    if write_id is None:
        return [shard for shard, _ in headers]
    numbered: dict[int, Shard] = {}
    for shard, header in headers:
        info = ShardInfo.from_header(header, shard)
        if info is None or info.write_id != write_id:
            owner = "no write (it has no 'shard' record)" if info is None else f"write {info.write_id}"
            raise FormatError(f"{where(shard)}this shard belongs to {owner}, but its index {index_at} is write "
                              f"{write_id}: a shard of another mask or another write; save, copy or download "
                              "the whole mask again")
        if info.count != len(headers) or info.number in numbered:
            clash = f", like {numbered[info.number]}" if info.number in numbered else ""
            raise FormatError(f"{where(shard)}shard record says number {info.number} of {info.count}{clash}, but its "
                              f"index {index_at} lists {len(headers)} shards; save, copy or download the whole "
                              "mask again")
        numbered[info.number] = shard
    return [numbered[number] for number in sorted(numbered)]


def local_mask_path(path: str | os.PathLike[str]) -> Path:
    """The file to open for a local mask path: itself, or its sharded index (``PATH.index.json``)."""
    candidate = Path(path)
    if not candidate.exists():
        index = candidate.with_name(candidate.name + INDEX_SUFFIX)
        if index.exists():
            return index
    return candidate
