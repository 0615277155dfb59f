"""The submask header: file-level metadata and per-tensor entries, validated on read (FORMAT.md §3-§5)."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .._version import __version__
from ..errors import FormatError, VersionError, where

FORMAT_NAME = "submask"
MAJOR, MINOR = 1, 1  # 1.1 added the header checksum (FORMAT.md §2.1)
MASK_KINDS = ("update", "pruning", "supermask", "other")  # a reader keeps any other string, read as "other" (§4)
KNOWN_EXTENSIONS: frozenset[str] = frozenset()

MAX_HEADER_BYTES = 100_000_000  # the cap of safetensors' own reader (its MAX_HEADER_SIZE)
MAX_TENSORS = 1_000_000
MAX_NDIM = 64
MAX_BITS = 1 << 53  # the largest integer JSON readers represent exactly

_CRC_PATTERN = re.compile(r"[0-9a-f]{8}")
_VERSION_PATTERN = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_FINGERPRINT_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
RESERVED_NAMES = ("", "__metadata__")  # tensor names the safetensors container cannot hold (§2)
SHARD_KEY = "shard"  # a record of the file, not of the mask: parsed by ShardInfo, never kept in MaskMetadata.extra
SHARD_MINOR = 1  # the minor version that added the "shard" record (FORMAT.md section 6)
_RESERVED_KEYS = ("format", "version", "extensions", "kind", "criterion", "provenance", "model", "creator",
                  "user", "stats", "tensors", SHARD_KEY)
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
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(_is_count(d) for d in shape):
            raise FormatError(f"{at}'shape' must be a list of at most {MAX_NDIM} non-negative integers, got {shape!r}")
        bits = obj.get("bits")
        if not _is_count(bits) or bits > MAX_BITS:
            raise FormatError(f"{at}'bits' must be an integer in [0, 2^53], got {bits!r}")
        if bits != math.prod(shape):
            raise FormatError(f"{at}'bits' is {bits} but shape {shape} has {math.prod(shape)} elements")
        ones = obj.get("ones")
        if not _is_count(ones) or ones > bits:
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
        if not (is_write_id(write_id) and _is_count(count) and count >= 1 and _is_count(number)
                and 1 <= number <= count):
            raise FormatError(f"{where(path)}'shard' must be {{'write_id': 32 lowercase hex digits, 'number': K, "
                              f"'count': N}} with 1 <= K <= N, got {obj!r}; the file is corrupt")
        return cls(write_id, number, count)


def is_write_id(value: Any) -> bool:
    """Whether ``value`` is a well-formed write id: 32 lowercase hex digits."""
    return isinstance(value, str) and _WRITE_ID_PATTERN.fullmatch(value) is not None


@dataclass
class MaskMetadata:
    """File-level metadata of a mask (FORMAT.md §4). Unknown top-level fields are kept in ``extra``."""

    kind: str = "update"
    criterion: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    creator: dict[str, Any] = field(default_factory=lambda: {"library": "submask", "version": __version__})
    user: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    minor_version: int = MINOR  # the file's own when read, so that a rewrite keeps it (§7)

    def to_json(self) -> dict[str, Any]:
        """The header object without its "tensors" member."""
        header: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": f"{MAJOR}.{self.minor_version}",
            "extensions": self.extensions,
            "kind": self.kind,
            "criterion": self.criterion,
            "provenance": self.provenance,
            "model": self.model,
            "creator": self.creator,
            "user": self.user,
            "stats": self.stats,
        }
        header.update(self.extra)
        return header

    @classmethod
    def from_json(cls, header: Any, path: object = None) -> "MaskMetadata":
        at = where(path)
        minor = check_identity(header, path)
        extensions = header.get("extensions", [])
        if not isinstance(extensions, list) or not all(_is_extension(ext) for ext in extensions):
            raise FormatError(f"{at}'extensions' must be a list of {{'name': str, 'must_understand': bool}}")
        unknown = [ext["name"] for ext in extensions if ext["must_understand"] and ext["name"] not in KNOWN_EXTENSIONS]
        if unknown:
            raise VersionError(f"{at}the file needs extension(s) {unknown} that this submask does not understand; "
                               "upgrade submask to read it")
        kind = header.get("kind")
        if not isinstance(kind, str) or not kind:
            raise FormatError(f"{at}'kind' must be a non-empty string such as {list(MASK_KINDS)}, got {kind!r}")
        for key in ("provenance", "creator", "user", "stats"):
            if not isinstance(header.get(key, {}), dict):
                raise FormatError(f"{at}'{key}' must be a JSON object")
        for key in ("criterion", "model"):
            if not isinstance(header.get(key), (dict, type(None))):
                raise FormatError(f"{at}'{key}' must be a JSON object or null")
        fingerprint = (header.get("model") or {}).get("fingerprint")
        if fingerprint is not None and not (isinstance(fingerprint, str)
                                            and _FINGERPRINT_PATTERN.fullmatch(fingerprint)):
            raise FormatError(f"{at}'model.fingerprint' must be 'sha256:' and 64 lowercase hex digits, "
                              f"got {fingerprint!r}")
        return cls(
            kind=kind,
            criterion=header.get("criterion"),
            provenance=header.get("provenance", {}),
            model=header.get("model"),
            creator=header.get("creator", {}),
            user=header.get("user", {}),
            stats=header.get("stats", {}),
            extensions=extensions,
            extra={key: value for key, value in header.items() if key not in _RESERVED_KEYS},
            minor_version=minor,
        )


def check_identity(header: Any, path: object = None) -> int:
    """Check that ``header`` is a submask header this reader can read (format, version); return its minor."""
    if not isinstance(header, dict):
        raise FormatError(f"{where(path)}the submask header must be a JSON object; the file is corrupt")
    if header.get("format") != FORMAT_NAME:
        raise FormatError(f"{where(path)}not a submask file ('format' is {header.get('format')!r}, "
                          "expected 'submask')")
    return check_version(header.get("version"), path)


def check_version(version: Any, path: object = None) -> int:
    """Return the minor version of a "MAJOR.MINOR" string this reader can read, else raise."""
    match = _VERSION_PATTERN.fullmatch(version) if isinstance(version, str) else None
    if not match:
        raise FormatError(f"{where(path)}'version' must be a string 'MAJOR.MINOR', got {version!r}")
    major, minor = int(match.group(1)), int(match.group(2))
    if major != MAJOR:
        raise VersionError(f"{where(path)}format version {version} is not readable by submask (reads {MAJOR}.x); "
                           "upgrade submask" + (" to a newer release" if major > MAJOR else ""))
    return minor


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


def model_fingerprint(shapes: Mapping[str, Iterable[int]]) -> str:
    """Fingerprint of a model's parameter names and shapes: "sha256:" + hex digest (FORMAT.md §4.1)."""
    lines = "".join(f"{name}\t{','.join(str(int(d)) for d in shape)}\n" for name, shape in sorted(shapes.items()))
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_extension(ext: Any) -> bool:
    return isinstance(ext, dict) and isinstance(ext.get("name"), str) and isinstance(ext.get("must_understand"), bool)
