"""The submask header's file layer: per-tensor entries and their values records, shard records and reader limits
(FORMAT.md §4.2, §6, §8, §12).

The file-level metadata (``MaskMetadata``, format and version rules) lives in ``submask.metadata``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..codecs import CODECS
from ..errors import FormatError, where
from ..metadata import DIFF_EXTENSION, DIFF_MINOR, SHARD_KEY, VALUES_EXTENSION, VALUES_MINOR, MaskMetadata, is_count

MAX_TENSORS = 1_000_000
MAX_NDIM = 64
MAX_BITS = 1 << 53  # the largest integer JSON readers represent exactly

_CRC_PATTERN = re.compile(r"[0-9a-f]{8}")
RESERVED_NAMES = ("", "__metadata__")  # tensor names the safetensors container cannot hold (§2)
SHARD_MINOR = 1  # the minor version that added the "shard" record (FORMAT.md section 6)
_WRITE_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
#: itemsize of each safetensors dtype a values record may hold (FORMAT.md §12)
DIFF_PLANES = "diff-planes"  # the values encoding coded against the base (§12.4)
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass(frozen=True)
class ValuesEntry:
    """A tensor's values record (FORMAT.md §12): the payload entry holding its encoded value bytes, their
    dtype, encoding (``{"id": ..., **settings}``), decoded size in bytes and CRC-32."""

    entry: str
    dtype: str
    encoding: dict[str, Any]
    size: int
    crc32: str

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry, "dtype": self.dtype, "encoding": self.encoding, "size": self.size,
                "crc32": self.crc32}

    @classmethod
    def from_json(cls, obj: Any, ones: int, at: str) -> ValuesEntry:
        """Parse and check a "values" member; an unknown dtype or encoding id is left for the tensor's reader
        to refuse (for that tensor only)."""
        if not isinstance(obj, dict):
            raise FormatError(f"{at}'values' must be a JSON object; the file is corrupt")
        entry, dtype, encoding, size, crc = (obj.get(key) for key in ("entry", "dtype", "encoding", "size", "crc32"))
        if not isinstance(entry, str) or entry in RESERVED_NAMES:
            raise FormatError(f"{at}'values.entry' must name a payload entry, got {entry!r}; the file is corrupt")
        if not isinstance(dtype, str):
            raise FormatError(f"{at}'values.dtype' must be a safetensors dtype name, got {dtype!r}")
        if not isinstance(encoding, dict) or not isinstance(encoding.get("id"), str):
            raise FormatError(f"{at}'values.encoding' must be an object with a string 'id', got {encoding!r}")
        if not isinstance(crc, str) or not _CRC_PATTERN.fullmatch(crc):
            raise FormatError(f"{at}'values.crc32' must be 8 lowercase hex digits, got {crc!r}")
        itemsize = DTYPE_SIZES.get(dtype)
        if not is_count(size) or (itemsize is not None and size != ones * itemsize):
            expected = f"ones * {itemsize} = {ones * itemsize}" if itemsize is not None else "an integer >= 0"
            raise FormatError(f"{at}'values.size' is {size!r}, but must be {expected}; the file is corrupt")
        return cls(entry, dtype, encoding, size, crc)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's record in the header: shape, counts, encoding and checksum of its decoded bits."""

    name: str
    shape: tuple[int, ...]
    ones: int
    encoding: str
    config: dict[str, Any]
    crc32: str
    values: ValuesEntry | None = None  # the tensor's values, in a delta (FORMAT.md §12)
    payload_crc32: str | None = None  # CRC-32 of the payload as stored (FORMAT.md §4.5, since 1.3)

    @property
    def bits(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        entry = {
            "shape": list(self.shape),
            "bits": self.bits,
            "ones": self.ones,
            "encoding": {"id": self.encoding, **self.config},
            "crc32": self.crc32,
        }
        if self.values is not None:
            entry["values"] = self.values.to_json()
        if self.payload_crc32 is not None:
            entry["payload_crc32"] = self.payload_crc32
        return entry

    @classmethod
    def from_json(cls, name: str, obj: Any, path: object = None) -> TensorEntry:
        at = where(path, name)
        if not isinstance(obj, dict):
            raise FormatError(f"{at}tensor entry must be a JSON object; the file is corrupt")
        shape = obj.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(is_count(d) for d in shape):
            raise FormatError(f"{at}'shape' must be a list of at most {MAX_NDIM} non-negative integers, got {shape!r}")
        bits = obj.get("bits")
        if not is_count(bits) or bits > MAX_BITS:
            raise FormatError(f"{at}'bits' must be an integer in [0, 2^53], got {bits!r}")
        if bits != math.prod(shape):
            raise FormatError(f"{at}'bits' is {bits} but shape {shape} has {math.prod(shape)} elements")
        ones = obj.get("ones")
        if not is_count(ones) or ones > bits:
            raise FormatError(f"{at}'ones' must be an integer in [0, bits={bits}], got {ones!r}")
        encoding = obj.get("encoding")
        if not isinstance(encoding, dict) or not isinstance(encoding.get("id"), str):
            raise FormatError(f"{at}'encoding' must be an object with a string 'id', got {encoding!r}")
        crc = obj.get("crc32")
        if not isinstance(crc, str) or not _CRC_PATTERN.fullmatch(crc):
            raise FormatError(f"{at}'crc32' must be 8 lowercase hex digits, got {crc!r}")
        config = {key: value for key, value in encoding.items() if key != "id"}
        values = ValuesEntry.from_json(obj["values"], ones, at) if "values" in obj else None
        payload_crc = obj.get("payload_crc32")
        if payload_crc is not None and (not isinstance(payload_crc, str) or not _CRC_PATTERN.fullmatch(payload_crc)):
            raise FormatError(f"{at}'payload_crc32' must be 8 lowercase hex digits, got {payload_crc!r}")
        return cls(name, tuple(shape), ones, encoding["id"], config, crc, values, payload_crc)


@dataclass(frozen=True)
class ShardInfo:
    """The "shard" record of one file of a sharded mask: the write it belongs to and its place in it."""

    write_id: str
    number: int
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"write_id": self.write_id, "number": self.number, "count": self.count}

    @classmethod
    def from_header(cls, header: dict[str, Any], path: object = None) -> ShardInfo | None:
        """The record in a submask header, None when it has none (a single file, or a 1.0 shard)."""
        obj = header.get(SHARD_KEY)
        if obj is None:
            return None
        count = obj.get("count") if isinstance(obj, dict) else None
        number = obj.get("number") if isinstance(obj, dict) else None
        write_id = obj.get("write_id") if isinstance(obj, dict) else None
        if not (is_write_id(write_id) and is_count(count) and count >= 1 and is_count(number)
                and 1 <= number <= count):
            raise FormatError(f"{where(path)}'shard' must be {{'write_id': 32 lowercase hex digits, 'number': K, "
                              f"'count': N}} with 1 <= K <= N, got {obj!r}; the file is corrupt")
        return cls(write_id, number, count)


def is_write_id(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is a well-formed write id: 32 lowercase hex digits."""
    return isinstance(value, str) and _WRITE_ID_PATTERN.fullmatch(value) is not None


def parse_tensor_entries(tensors: Any, metadata: MaskMetadata, path: object = None) -> dict[str, TensorEntry]:
    """Validate the header's "tensors" object into entries, in file order; values only where ``metadata``
    declares them, each naming its own payload entry (FORMAT.md §12)."""
    if not isinstance(tensors, dict):
        raise FormatError(f"{where(path)}'tensors' must be a JSON object mapping names to entries")
    if len(tensors) > MAX_TENSORS:
        raise FormatError(f"{where(path)}{len(tensors)} tensors exceed the reader limit of {MAX_TENSORS}")
    reserved = [name for name in RESERVED_NAMES if name in tensors]
    if reserved:
        raise FormatError(f"{where(path)}a tensor is named {reserved[0]!r}, a name safetensors reserves; "
                          "the file is corrupt")
    entries = {name: TensorEntry.from_json(name, entry, path) for name, entry in tensors.items()}
    _check_values_references(entries, metadata, path)
    for name, entry in entries.items():
        codec = CODECS.get(entry.encoding)
        if codec is not None and codec.minor_version > metadata.minor_version:  # §7: "1.2 or later" is a rule
            raise FormatError(f"{where(path, name)}encoding {entry.encoding!r} was added in version "
                              f"1.{codec.minor_version}, but the file says version 1.{metadata.minor_version}; the "
                              "file is corrupt")
    return entries


def payload_names(entries: dict[str, TensorEntry]) -> list[str]:
    """The payload entries a file of these tensors holds, in the writers' order: each tensor's mask payload, then
    its values payload (FORMAT.md §2, §12)."""
    return [name for entry in entries.values()
            for name in ((entry.name, entry.values.entry) if entry.values is not None else (entry.name,))]


def _check_values_references(entries: dict[str, TensorEntry], metadata: MaskMetadata, path: object) -> None:
    referenced: dict[str, str] = {}
    for name, entry in entries.items():
        if entry.values is None:
            continue
        at = where(path, name)
        if not metadata.declares_values:
            raise FormatError(f"{at}has values, but the header does not declare the '{VALUES_EXTENSION}' extension "
                              f"with must_understand true at version 1.{VALUES_MINOR} or later; the file is corrupt")
        if entry.values.encoding.get("id") == DIFF_PLANES and not metadata.declares_differences:
            raise FormatError(f"{at}has values coded against the base, but the header does not declare the "
                              f"'{DIFF_EXTENSION}' extension at version 1.{DIFF_MINOR} or later; the file is corrupt")
        target = entry.values.entry
        if target in entries:
            raise FormatError(f"{at}values entry {target!r} is also a tensor name; the file is corrupt")
        if target in referenced:
            raise FormatError(f"{at}values entry {target!r} is also the values of tensor {referenced[target]!r}; "
                              "the file is corrupt")
        referenced[target] = name
