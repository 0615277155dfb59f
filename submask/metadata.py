"""A mask's file-level metadata (FORMAT.md §4): ``MaskMetadata``, its JSON form, and the version rules.

In-memory masks, the file format and the Hub all build on this module, which imports none of them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

from ._version import __version__
from .errors import FormatError, VersionError, where

FORMAT_NAME = "submask"
MAJOR, MINOR = 1, 1  # 1.1 added the header checksum (FORMAT.md §2.1): writers write it unless a file needs 1.2
VALUES_MINOR = 2  # 1.2 added values and the checkpoint layout (FORMAT.md §12)
PAYLOAD_CRC_MINOR = 3  # 1.3 added each tensor's payload CRC-32 (FORMAT.md §4.5): writers of new files write it
VALUES_EXTENSION = "values"  # declared, must_understand, by every file with values or a checkpoint layout
DIFF_MINOR = 3  # 1.3 added values coded against the base (FORMAT.md §12.4)
DIFF_EXTENSION = "diff-values"  # declared, must_understand, by every file with values coded against the base
MASK_KINDS = ("update", "pruning", "supermask", "other")  # a reader keeps any other string, read as "other" (§4)
KNOWN_EXTENSIONS: frozenset[str] = frozenset({VALUES_EXTENSION, DIFF_EXTENSION})
SHARD_KEY = "shard"  # a record of the file, not of the mask: parsed by format.header.ShardInfo, never kept in extra
CHECKPOINT_KEY = "checkpoint"

_VERSION_PATTERN = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_FINGERPRINT_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_RESERVED_KEYS = ("format", "version", "extensions", "kind", "criterion", "provenance", "model", "creator",
                  "user", "stats", "tensors", SHARD_KEY, CHECKPOINT_KEY)


@dataclass(frozen=True)
class CheckpointFile:
    """One file of the finetuned checkpoint a delta rebuilds (FORMAT.md §12): its name, size and SHA-256, and
    either its safetensors ``header`` text (the tensors follow from the delta) or its whole ``text``."""

    name: str
    size: int
    sha256: str
    header: str | None = None
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        content = {"header": self.header} if self.header is not None else {"text": self.text}
        return {"name": self.name, "size": self.size, "sha256": self.sha256, **content}

    @classmethod
    def from_json(cls, obj: Any, path: object = None) -> CheckpointFile:
        at = where(path)
        if not isinstance(obj, dict) or ("header" in obj) == ("text" in obj):  # other members: ignored (§7)
            raise FormatError(f"{at}each 'checkpoint' file must be {{'name', 'size', 'sha256', and 'header' or "
                              f"'text'}}, got {_short(obj)}; the file is corrupt")
        name, size, sha256 = obj.get("name"), obj.get("size"), obj.get("sha256")
        content = obj.get("header", obj.get("text"))
        problem = file_name_problem(name)
        if problem:
            raise FormatError(f"{at}checkpoint file name {_short(name)} {problem}: not a bare file name (FORMAT.md "
                              "§8); the file is corrupt or hostile")
        if not (isinstance(name, str) and is_count(size) and isinstance(sha256, str)
                and _SHA256_PATTERN.fullmatch(sha256) and isinstance(content, str)):
            raise FormatError(f"{at}checkpoint file {name!r} needs an integer 'size', a 'sha256' of 64 lowercase "
                              "hex digits and a string 'header' or 'text'; the file is corrupt")
        return cls(name, size, sha256, obj.get("header"), obj.get("text"))


def parse_checkpoint(obj: Any, path: object = None) -> list[CheckpointFile]:
    """The files of a header's "checkpoint" member, names unique (FORMAT.md §12)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("files"), list):  # other members: ignored (§7)
        raise FormatError(f"{where(path)}'checkpoint' must be {{'files': [...]}}, got {_short(obj)}; "
                          "the file is corrupt")
    files = [CheckpointFile.from_json(item, path) for item in obj["files"]]
    names = [file.name for file in files]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise FormatError(f"{where(path)}checkpoint file {twice!r} is listed twice; the file is corrupt")
    return files


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
    minor_version: int = field(default=PAYLOAD_CRC_MINOR, compare=False)  # the file's own when read, so that a rewrite
    #   keeps it (§7); it says how the file is written, not what the mask is, so equal masks may differ in it
    checkpoint: list[CheckpointFile] | None = None  # the layout a delta rebuilds (§12)

    @property
    def declares_values(self) -> bool:
        """Whether the header declares the "values" extension, must_understand, at version 1.2 or later, as values
        and a checkpoint layout require (FORMAT.md §12: a skippable "values" extension does not count)."""
        return self.minor_version >= VALUES_MINOR and any(ext["name"] == VALUES_EXTENSION and ext["must_understand"]
                                                          for ext in self.extensions)

    @property
    def declares_differences(self) -> bool:
        """Whether the header declares the "diff-values" extension at version 1.3 or later (FORMAT.md §12.4)."""
        return self.minor_version >= DIFF_MINOR and any(ext["name"] == DIFF_EXTENSION for ext in self.extensions)

    def for_file(self, has_values: bool, differences: bool = False) -> MaskMetadata:
        """The metadata as written to a file with or without values (FORMAT.md §7): with values or a checkpoint
        layout, version 1.2 or later and the "values" extension declared; with values coded against the base
        (``differences``), 1.3 or later and "diff-values" declared too; without, the extensions dropped."""
        extensions = [ext for ext in self.extensions if ext.get("name") not in (VALUES_EXTENSION, DIFF_EXTENSION)]
        if not (has_values or self.checkpoint is not None):
            return replace(self, extensions=extensions)
        extensions.append({"name": VALUES_EXTENSION, "must_understand": True})
        if not differences:
            return replace(self, minor_version=max(self.minor_version, VALUES_MINOR), extensions=extensions)
        return replace(self, minor_version=max(self.minor_version, DIFF_MINOR),
                       extensions=[*extensions, {"name": DIFF_EXTENSION, "must_understand": True}])

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
        if self.checkpoint is not None:
            header[CHECKPOINT_KEY] = {"files": [file.to_json() for file in self.checkpoint]}
        header.update(self.extra)
        return header

    @classmethod
    def from_json(cls, header: Any, path: object = None) -> MaskMetadata:
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
        checkpoint = header.get(CHECKPOINT_KEY)
        if checkpoint is not None:
            checkpoint = parse_checkpoint(checkpoint, path)
        metadata = cls(
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
            checkpoint=checkpoint,
        )
        if checkpoint is not None and not metadata.declares_values:
            raise FormatError(f"{at}a 'checkpoint' layout needs version 1.{VALUES_MINOR} or later and the "
                              f"'{VALUES_EXTENSION}' extension declared with must_understand true; the file is "
                              "corrupt")
        return metadata


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


def model_fingerprint(shapes: Mapping[str, Iterable[int]]) -> str:
    """Fingerprint of a model's parameter names and shapes: "sha256:" + hex digest (FORMAT.md §4.1)."""
    lines = "".join(f"{name}\t{','.join(str(int(d)) for d in shape)}\n" for name, shape in sorted(shapes.items()))
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()




def combined_metadata(op: str, metadata: Sequence[MaskMetadata], inputs: Iterable[dict[str, Any]]) -> MaskMetadata:
    """Metadata of a combined mask: the inputs' kind if they agree (else "other"), their model if they
    agree, and provenance ``{"combined": {"op": op, "inputs": inputs}}``."""
    kinds = {m.kind for m in metadata}
    models = [m.model for m in metadata]
    return MaskMetadata(kind=kinds.pop() if len(kinds) == 1 else "other",
                        model=models[0] if all(m == models[0] for m in models) else None,
                        provenance={"combined": {"op": op, "inputs": list(inputs)}})


def is_count(value: Any) -> TypeGuard[int]:
    """A JSON integer >= 0 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


MAX_FILE_NAME_BYTES = 255  # NAME_MAX of Linux and macOS file systems; NTFS allows 255 UTF-16 units


def file_name_problem(value: Any) -> str | None:
    """Why ``value`` is not a bare file name that every file system can hold safely (FORMAT.md §8: shard names
    in an index, checkpoint file names), or None when it is one. Readers and writers both apply it."""
    if not isinstance(value, str):
        return "is not a string"
    if value in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in value or "\\" in value:
        return "holds a '/' or '\\' (a path, not a file name)"
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in value):
        return "holds a NUL or another control character"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "holds a lone surrogate (not Unicode text)"
    if size > MAX_FILE_NAME_BYTES:
        return f"is {size} bytes long in UTF-8, more than {MAX_FILE_NAME_BYTES}"
    return None


def is_bare_file_name(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is a bare file name (``file_name_problem``)."""
    return file_name_problem(value) is None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_extension(ext: Any) -> bool:
    return isinstance(ext, dict) and isinstance(ext.get("name"), str) and isinstance(ext.get("must_understand"), bool)
