"""The safetensors header, read the same way for every file submask opens: .smask masks and model checkpoints.

A safetensors file starts with ``N``, an unsigned 64-bit little-endian length, then ``N`` bytes of a JSON
object: ``"__metadata__"`` (an object of strings, optional) and one entry per tensor. This module checks the
length against the cap and the file size, and parses the JSON strictly (``strict_json``); what the entries must
hold is the caller's business (a .smask payload, FORMAT.md §2; a checkpoint tensor). Callers choose the error
type by passing ``fail``, which turns a problem ("declares a ... header") into the exception to raise.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from . import strict_json

MAX_HEADER_BYTES = 100_000_000  # the cap of safetensors' own reader (its MAX_HEADER_SIZE)
LENGTH = struct.Struct("<Q")

Fail = Callable[[str], Exception]


def header_length(head: bytes, size: int, fail: Fail) -> int:
    """``N`` from a file's first 8 bytes ``head``, checked against the cap and the file's ``size``."""
    if len(head) < 8:
        raise fail(f"is {size} bytes, too short for a safetensors header")
    (length,) = LENGTH.unpack(head[:8])
    if length > MAX_HEADER_BYTES:
        raise fail(f"has a header length of {length} bytes, above the {MAX_HEADER_BYTES}-byte limit of safetensors "
                   "readers")
    if 8 + length > size:
        raise fail(f"has a header length of {length} bytes, larger than the file ({size} bytes)")
    return int(length)


def parse_header(raw: bytes, fail: Fail) -> tuple[dict[str, str], dict[str, Any]]:
    """The header JSON ``raw``: (``__metadata__``, or {} without one; the tensor entries, in file order)."""
    try:
        outer = strict_json.loads(raw)
    except strict_json.InvalidJSON as exc:
        raise fail(f"has an unreadable JSON header: not valid JSON ({exc})") from None
    if not isinstance(outer, dict):
        raise fail("has a header that is not a JSON object")
    metadata = outer.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise fail("has a __metadata__ that is not an object of strings (safetensors requires one)")
    return metadata, outer
