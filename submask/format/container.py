"""The safetensors container of a .smask file (FORMAT.md §2): header parsing, payload access, writing.

Parsed here rather than through the safetensors package so that every malformation becomes a FormatError
naming the file, and so that payloads are read one at a time with plain file reads.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from ..errors import FormatError, where
from .header import MAX_HEADER_BYTES

METADATA_KEY = "submask"
_LENGTH = struct.Struct("<Q")


class Container:
    """An open .smask container: the parsed submask header JSON and random access to payloads."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self._file: BinaryIO = open(self.path, "rb")
        except FileNotFoundError:
            raise FormatError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise FormatError(f"{self.path}: is a directory, expected a .smask file") from None
        try:
            self.header, self._spans, self._data_start = _parse(self._file, self.path)
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
        start, end = self._spans[name]
        self._file.seek(self._data_start + start)
        data = self._file.read(end - start)
        if len(data) != end - start:
            raise FormatError(f"{where(self.path, name)}payload is truncated; the file was cut short or changed")
        return data

    def close(self) -> None:
        self._file.close()


def _parse(file: BinaryIO, path: Path) -> tuple[Any, dict[str, tuple[int, int]], int]:
    size = os.fstat(file.fileno()).st_size
    header_length = read_header_length(file.read(8), size, path)
    header, outer = parse_header(file.read(header_length), path)
    spans = {name: _parse_entry(name, entry, path) for name, entry in outer.items()}
    data_size = size - 8 - header_length
    _check_contiguous(spans, data_size, path)
    return header, spans, 8 + header_length


def read_header_length(head: bytes, size: int, path: object = None) -> int:
    """The header length from a file's first 8 bytes, checked against the file's ``size``.

    With ``parse_header`` this reads a header from its bytes alone (e.g. fetched by HTTP range requests).
    """
    at = where(path)
    if len(head) < 8:
        raise FormatError(f"{at}file has {size} bytes, too short for a .smask header; it is truncated or not a mask")
    (header_length,) = _LENGTH.unpack(head[:8])
    if header_length > MAX_HEADER_BYTES:
        raise FormatError(f"{at}header length {header_length} exceeds the {MAX_HEADER_BYTES}-byte limit; not a mask file")
    if 8 + header_length > size:
        raise FormatError(f"{at}header length {header_length} is larger than the file ({size} bytes); "
                          "the file is truncated or not a mask")
    return header_length


def parse_header(raw: bytes, path: object = None) -> tuple[Any, dict[str, Any]]:
    """Decode the safetensors header JSON ``raw``: (the submask header, the safetensors tensor entries)."""
    at = where(path)
    try:
        outer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{at}header is not valid UTF-8 JSON ({exc}); the file is corrupt") from None
    if not isinstance(outer, dict):
        raise FormatError(f"{at}safetensors header must be a JSON object; the file is corrupt")
    metadata = outer.pop("__metadata__", None)
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise FormatError(f"{at}no 'submask' entry in the safetensors metadata: this is not a .smask file")
    if not isinstance(metadata[METADATA_KEY], str):
        raise FormatError(f"{at}safetensors metadata values must be strings; the file is corrupt")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise FormatError(f"{at}submask header is not valid JSON ({exc}); the file is corrupt") from None
    return header, outer


def _parse_entry(name: str, entry: Any, path: Path) -> tuple[int, int]:
    at = where(path, name)
    if not isinstance(entry, dict) or entry.get("dtype") != "U8":
        raise FormatError(f"{at}every .smask payload must be a U8 safetensors entry, got {entry!r}")
    offsets, shape = entry.get("data_offsets"), entry.get("shape")
    valid = (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)
             and offsets[0] <= offsets[1] and shape == [offsets[1] - offsets[0]])
    if not valid:
        raise FormatError(f"{at}data_offsets {offsets!r} and shape {shape!r} are inconsistent; the file is corrupt")
    return offsets[0], offsets[1]


def _check_contiguous(spans: dict[str, tuple[int, int]], data_size: int, path: Path) -> None:
    cursor = 0
    for start, end in sorted(spans.values()):
        if start != cursor:
            raise FormatError(f"{where(path)}payloads leave a gap or overlap at byte {cursor}; the file is corrupt")
        cursor = end
    if cursor != data_size:
        raise FormatError(f"{where(path)}payloads cover {cursor} bytes but the file holds {data_size}; "
                          "the file is truncated or has trailing data")


def write_container(out: BinaryIO, header: dict[str, Any], payloads: Sequence[tuple[str, int]], data: BinaryIO) -> None:
    """Write a container: ``payloads`` lists (name, length) in order; their bytes are read from ``data``."""
    outer: dict[str, Any] = {"__metadata__": {METADATA_KEY: json.dumps(header, separators=(",", ":"))}}
    offset = 0
    for name, length in payloads:
        outer[name] = {"dtype": "U8", "shape": [length], "data_offsets": [offset, offset + length]}
        offset += length
    encoded = json.dumps(outer, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # pad to 8 bytes, as safetensors writers do
    out.write(_LENGTH.pack(len(encoded)))
    out.write(encoded)
    data.seek(0)
    shutil.copyfileobj(data, out, 1 << 20)
