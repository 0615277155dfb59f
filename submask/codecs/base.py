"""The interface every encoding implements (FORMAT.md section 5)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import FormatError, LimitError
from ..packed import packed_nbytes

CHUNK_BYTES = 1 << 18  # packed bytes per piece of ``decode_chunks``: what validating costs in memory


@dataclass(frozen=True)
class Run:
    """``nbytes`` packed bytes all equal to ``byte``: a stretch ``decode_chunks`` need not spell out."""

    byte: int
    nbytes: int


class Codec:
    """An encoding of packed bits: ``encode`` returns (payload, config); ``decode`` inverts it."""

    id: ClassVar[str]

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        raise NotImplementedError

    def decode(self, payload: bytes, numel: int, config: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
        """Return the packed bits: a fresh, writable uint8 array, or ``out`` (``packed_nbytes(numel)`` uint8
        bytes, overwritten) when given, which saves the page faults of fresh memory in loops. Raise
        FormatError on bad payloads."""
        raise NotImplementedError

    def decode_chunks(self, payload: bytes, numel: int, config: dict[str, Any]) -> Iterator[np.ndarray | Run]:
        """The packed bits of ``decode``, in consecutive pieces: arrays of at most CHUNK_BYTES, each valid until
        the next is asked for, or Runs of one byte value (of any length). Memory stays bounded, and time follows
        the payload rather than ``numel``, whatever a header claims. Raise FormatError as ``decode``."""
        raise NotImplementedError

    def configured(self, config: dict[str, Any]) -> "Codec":
        """This codec with the encoder settings of ``config`` (as stored in a header) instead of the defaults."""
        if config:
            raise FormatError(f"encoding {self.id!r} takes no settings, got {config!r}")
        return self


def allocate_packed(numel: int) -> np.ndarray:
    """Room (uninitialised) for the packed bits of ``numel`` elements; LimitError rather than an allocation
    larger than this machine's physical memory, which a hostile header could otherwise ask for."""
    nbytes = packed_nbytes(numel)
    if nbytes > physical_memory():
        raise LimitError(f"{numel:,} bits take {nbytes:,} bytes, more than this machine's memory; if the file "
                         "is not hostile, read it on a larger machine (`submask validate` checks it in any memory)")
    return np.empty(nbytes, dtype=np.uint8)


@functools.cache
def physical_memory() -> int:
    """Bytes of physical memory of this machine (unbounded where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 1 << 62
