"""The submask header's file layer: per-tensor entries, shard records and reader limits (FORMAT.md §4.2, §6, §8).

The file-level metadata (``MaskMetadata``, format and version rules) lives in ``submask.metadata``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, where
from ..metadata import SHARD_KEY, is_count

MAX_TENSORS = 1_000_000
MAX_NDIM = 64
MAX_BITS = 1 << 53  # the largest integer JSON readers represent exactly

_CRC_PATTERN = re.compile(r"[0-9a-f]{8}")
RESERVED_NAMES = ("", "__metadata__")  # tensor names the safetensors container cannot hold (§2)
SHARD_MINOR = 1  # the minor version that added the "shard" record (FORMAT.md section 6)
_WRITE_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's record in the header: shape, counts, encoding and checksum of its decoded bits."""

    name: str
    shape: tuple[int, ...]
    ones: int
    encoding: str
    config: dict[str, Any]
    crc32: str

    @property
    def bits(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "bits": self.bits,
            "ones": self.ones,
            "encoding": {"id": self.encoding, **self.config},
            "crc32": self.crc32,
        }

    @classmethod
    def from_json(cls, name: str, obj: Any, path: object = None) -> "TensorEntry":
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
        return cls(name, tuple(shape), ones, encoding["id"], config, crc)


@dataclass(frozen=True)
class ShardInfo:
    """The "shard" record of one file of a sharded mask: the write it belongs to and its place in it."""

    write_id: str
    number: int
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"write_id": self.write_id, "number": self.number, "count": self.count}

    @classmethod
    def from_header(cls, header: dict[str, Any], path: object = None) -> "ShardInfo | None":
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


def is_write_id(value: Any) -> bool:
    """Whether ``value`` is a well-formed write id: 32 lowercase hex digits."""
    return isinstance(value, str) and _WRITE_ID_PATTERN.fullmatch(value) is not None


def parse_tensor_entries(tensors: Any, path: object = None) -> dict[str, TensorEntry]:
    """Validate the header's "tensors" object into entries, in file order."""
    if not isinstance(tensors, dict):
        raise FormatError(f"{where(path)}'tensors' must be a JSON object mapping names to entries")
    if len(tensors) > MAX_TENSORS:
        raise FormatError(f"{where(path)}{len(tensors)} tensors exceed the reader limit of {MAX_TENSORS}")
    reserved = [name for name in RESERVED_NAMES if name in tensors]
    if reserved:
        raise FormatError(f"{where(path)}a tensor is named {reserved[0]!r}, a name safetensors reserves; "
                          "the file is corrupt")
    return {name: TensorEntry.from_json(name, entry, path) for name, entry in tensors.items()}
