"""The safetensors container of a .smask file (FORMAT.md §2): header parsing, payload access, writing.

Parsed here rather than through the safetensors package so that every malformation becomes a FormatError
naming the file, and so that payloads are read one at a time with plain file reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .. import safetensors_header, strict_json
from ..errors import FormatError, HeaderChecksumError, where
from ..metadata import check_identity
from ..safetensors_header import LENGTH, header_length
from ..sniff import foreign_kind

METADATA_KEY = "submask"
DIGEST_KEY = "submask_sha256"  # the header checksum (FORMAT.md §2.1)
DIGEST_SINCE_MINOR = 1


#: positional reads of a payload: ``read(offset, length)`` returns those bytes of it
ReadAt = Callable[[int, int], "bytes | memoryview"]


@dataclass(frozen=True)
class PayloadSpan:
    """A payload left in its file and read on demand (``Container.span``), so that decoding a large payload holds
    one piece of it at a time."""

    size: int
    read: ReadAt


class Container:
    """An open .smask container: the parsed submask header JSON and random access to payloads."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._file: io.BufferedReader = open(self.path, "rb")
        except FileNotFoundError:
            raise FormatError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise FormatError(f"{self.path}: is a directory, expected a .smask file") from None
        try:
            self.header, self._spans, self._data_start, self.identity = _parse(self._file, self.path)
        except BaseException:
            self._file.close()
            raise

    @property
    def names(self) -> list[str]:
        return list(self._spans)

    def payload_size(self, name: str) -> int:
        start, end = self._spans[name]
        return end - start

    def read(self, name: str) -> bytes:
        """The payload bytes of one tensor."""
        return self._reader(name)(0, self.payload_size(name))

    def span(self, name: str) -> PayloadSpan:
        """One payload, read on demand (from any thread); FormatError if the file turns out shorter than its
        header says."""
        return PayloadSpan(self.payload_size(name), self._reader(name))

    def _reader(self, name: str) -> Callable[[int, int], bytes]:
        start = self._spans[name][0]

        def read(offset: int, length: int) -> bytes:
            data = self._read_at(self._data_start + start + offset, length)
            self._check_read(name, len(data), length)
            return data

        return read

    def read_into(self, name: str, out: memoryview) -> None:
        """Read the payload of one tensor into ``out`` (exactly ``payload_size(name)`` writable bytes), from any
        thread, without a copy."""
        self._read_exactly(self._spans[name][0], out[: self.payload_size(name)], name)

    def read_run_into(self, names: Sequence[str], out: memoryview) -> None:
        """Read the payloads of ``names`` back to back into ``out`` (their sizes summed, writable), in one read
        when they lie back to back in the file in this order (a run of consecutive tensors), else one by one."""
        spans = [self._spans[name] for name in names]
        if all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1)):
            if spans:
                self._read_exactly(spans[0][0], out, names[0])
            return
        at = 0
        for name, (start, end) in zip(names, spans):
            self._read_exactly(start, out[at : at + end - start], name)
            at += end - start

    def _read_exactly(self, start: int, out: memoryview, name: str) -> None:
        """``len(out)`` bytes of the payload area from ``start`` into ``out``; FormatError (naming ``name``) when
        the file ends first."""
        position, size = self._data_start + start, len(out)
        if not hasattr(os, "preadv"):
            with self._lock:
                self._file.seek(position)
                got = self._file.readinto(out)
        else:
            got = 0
            while got < size and (part := os.preadv(self._file.fileno(), [out[got:]], position + got)):
                got += part
        self._check_read(name, got, size)

    def _read_at(self, position: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``position``: positional reads where the platform has them, so that threads
        decoding several payloads of one file never move each other's file position."""
        if not hasattr(os, "pread"):
            with self._lock:
                self._file.seek(position)
                return self._file.read(length)
        parts = []
        while length > 0 and (part := os.pread(self._file.fileno(), min(length, 1 << 30), position)):
            parts.append(part)
            position, length = position + len(part), length - len(part)
        return b"".join(parts)

    def _check_read(self, name: str, got: int, expected: int) -> None:
        if got != expected:
            raise FormatError(f"{where(self.path, name)}payload is truncated; the file was cut short or changed")

    def close(self) -> None:
        self._file.close()


#: containers parsed and checked in this process, by (file size, header bytes): the same bytes parse and check
#: the same way, so a file opened again (compare in a loop, a server) costs a read and a lookup
_PARSED: dict[tuple[int, bytes], tuple[Any, dict[str, tuple[int, int]], int]] = {}
_PARSED_MAX = 64


def _parse(file: BinaryIO, path: Path) -> tuple[Any, dict[str, tuple[int, int]], int, tuple[int, bytes]]:
    """(submask header, payload spans, payload area offset, identity): every check of §2 made on the header
    bytes read now, or found made on the same bytes in a file of the same size before (``_PARSED``)."""
    size = os.fstat(file.fileno()).st_size
    start = file.read(8)
    try:
        header_length = read_header_length(start, size, path)
    except FormatError:
        kind = foreign_kind(start)
        if kind is None:
            raise
        raise FormatError(f"{path}: {kind}, not a .smask mask; if it holds masks, convert it: "
                          f"submask convert {path} -o MASK.smask") from None
    raw = file.read(header_length)
    identity = (size, raw)
    if (parsed := _PARSED.get(identity)) is not None:
        return (*parsed, identity)
    header, outer = parse_header(raw, path)
    spans = {name: _parse_entry(name, entry, path) for name, entry in outer.items()}
    data_size = size - 8 - header_length
    _check_contiguous(spans, data_size, path)
    remember(_PARSED, identity, (header, spans, 8 + header_length), _PARSED_MAX)
    return header, spans, 8 + header_length, identity


def remember(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """``cache[key] = value``, dropping the oldest entry beyond ``limit``."""
    if len(cache) >= limit:
        cache.pop(next(iter(cache)), None)
    cache[key] = value


def parse_bytes(data: bytes | bytearray | memoryview, path: object = None) -> tuple[Any, dict[str, memoryview]]:
    """A whole .smask file in memory: (the submask header, each payload by name as a view of ``data``), with the
    container checks of ``Container``; ``path`` names the data in errors."""
    view = memoryview(data).cast("B")
    length = read_header_length(bytes(view[:8]), len(view), path)
    header, outer = parse_header(bytes(view[8 : 8 + length]), path)
    spans = {name: _parse_entry(name, entry, path) for name, entry in outer.items()}
    _check_contiguous(spans, len(view) - 8 - length, path)
    start = 8 + length
    return header, {name: view[start + begin : start + end] for name, (begin, end) in spans.items()}


def read_header_length(head: bytes, size: int, path: object = None) -> int:
    """The header length from a file's first 8 bytes, checked against the file's ``size``.

    With ``parse_header`` this reads a header from its bytes alone (e.g. fetched by HTTP range requests).
    """
    return header_length(head, size, _failing(path))


def parse_header(raw: bytes, path: object = None) -> tuple[Any, dict[str, Any]]:
    """Decode the safetensors header JSON ``raw``: (the submask header, the safetensors tensor entries).

    Checks, in this order (FORMAT.md §2.2): both JSON texts, the format name and version, then the header
    checksum; the rest of the header and the layout are left to the caller.
    """
    at = where(path)
    metadata, outer = safetensors_header.parse_header(raw, _failing(path))
    if METADATA_KEY not in metadata:
        raise FormatError(f"{at}no 'submask' entry in the safetensors metadata: this is not a .smask file (a plain "
                          "safetensors file of masks converts with: submask convert FILE -o MASK.smask)")
    text = metadata[METADATA_KEY]
    try:
        header = strict_json.loads(text)
    except strict_json.InvalidJSON as exc:
        raise FormatError(f"{at}submask header is not valid JSON ({exc}); the file is corrupt") from None
    minor = check_identity(header, path)
    _check_digest(metadata.get(DIGEST_KEY), text, minor, path)
    return header, outer


def _check_digest(digest: str | None, text: str, minor: int, path: object) -> None:
    """The header checksum (§2.1): required from 1.1 on, checked whenever present."""
    if digest is None and minor < DIGEST_SINCE_MINOR:
        return
    if digest is None:
        raise HeaderChecksumError(f"{where(path)}the header has no '{DIGEST_KEY}' checksum, which version 1."
                                  f"{minor} requires; the file is damaged or was edited: download or rebuild it")
    if digest != header_digest(text):
        raise HeaderChecksumError(f"{where(path)}the header does not match its '{DIGEST_KEY}' checksum; the file "
                                  "is damaged or was edited: download or rebuild it")


def header_digest(text: str) -> str:
    """The header checksum of a submask header's JSON text: SHA-256 of its UTF-8 bytes, 64 lowercase hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _parse_entry(name: str, entry: Any, path: object) -> tuple[int, int]:
    at = where(path, name)
    if not isinstance(entry, dict) or entry.get("dtype") != "U8":
        raise FormatError(f"{at}every .smask payload must be a U8 safetensors entry, got {entry!r}")
    offsets, shape = entry.get("data_offsets"), entry.get("shape")
    valid = (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)
             and offsets[0] <= offsets[1] and shape == [offsets[1] - offsets[0]])
    if not valid or not isinstance(offsets, list):
        raise FormatError(f"{at}data_offsets {offsets!r} and shape {shape!r} are inconsistent; the file is corrupt")
    return int(offsets[0]), int(offsets[1])


def _check_contiguous(spans: dict[str, tuple[int, int]], data_size: int, path: object) -> None:
    cursor = 0
    for start, end in sorted(spans.values()):
        if start != cursor:
            raise FormatError(f"{where(path)}payloads leave a gap or overlap at byte {cursor}; the file is corrupt")
        cursor = end
    if cursor != data_size:
        raise FormatError(f"{where(path)}payloads cover {cursor} bytes but the file holds {data_size}; "
                          "the file is truncated or has trailing data")


def serialize_header(header: dict[str, Any], path: object = None) -> str:
    """The submask header as written: strict, compact JSON; FormatError for a value JSON cannot hold."""
    try:
        return strict_json.dumps(header)
    except strict_json.InvalidJSON as exc:
        raise FormatError(f"{where(path)}cannot write this mask: its metadata is not JSON ({exc}); "
                          "use strings, finite numbers, lists and dicts") from None


def write_container(out: BinaryIO, header: dict[str, Any], payloads: Sequence[tuple[str, int]], data: BinaryIO,
                    minor: int) -> None:
    """Write a container of version 1.``minor``: ``payloads`` lists (name, length) in order; their bytes are
    read from ``data``."""
    text = serialize_header(header)
    metadata = {METADATA_KEY: text}
    if minor >= DIGEST_SINCE_MINOR:
        metadata[DIGEST_KEY] = header_digest(text)
    outer: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, length in payloads:
        outer[name] = {"dtype": "U8", "shape": [length], "data_offsets": [offset, offset + length]}
        offset += length
    encoded = json.dumps(outer, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # pad to 8 bytes, as safetensors writers do
    out.write(LENGTH.pack(len(encoded)))
    out.write(encoded)
    _copy_all(data, out)


def _copy_all(data: BinaryIO, out: BinaryIO) -> None:
    """Append all of ``data`` to ``out``: in the kernel where both are files (``os.copy_file_range``: no pass
    through Python's buffers, which cost a build with values ~1 ms a MiB), else through a buffer."""
    done = 0
    data.flush()
    out.flush()
    try:
        source, target, size = data.fileno(), out.fileno(), os.fstat(data.fileno()).st_size
        while done < size and (copied := os.copy_file_range(source, target, size - done, done)):
            done += copied
    except (OSError, AttributeError):  # not files (io.UnsupportedOperation), or no copy_file_range here
        pass
    data.seek(done)
    shutil.copyfileobj(data, out, 1 << 20)


def _failing(path: object) -> Callable[[str], FormatError]:
    """How a safetensors-level problem of a .smask file is reported."""
    return lambda problem: FormatError(f"{where(path)}the file {problem}; it is truncated, corrupt or not a mask")
