"""The interface every encoding implements (FORMAT.md section 5), and the optional capabilities a codec may add.

A codec instance carries its own settings: ``from_config`` builds one from the settings a header stores beside
the encoding id (``{"id": "rice", "block_bits": 4194304}``), ``encode`` returns the payload and those settings,
and ``decode`` / ``decode_chunks`` need nothing but the payload and the bit count. Callers ask a codec what else
it can do by its type, as zarr asks its codecs (``isinstance(codec, PositionsDecoder)``), never by its id:

- ``PositionsDecoder``: the flat indices of the set bits, straight from the payload;
- ``IntersectionCounter``: how many set bits of the payload are also set in given packed bits, streaming.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import FormatError
from ..limits import check_allocation
from ..packed import packed_nbytes

CHUNK_BYTES = 1 << 18  # packed bytes per piece of ``decode_chunks``: what validating costs in memory


def check_settings(codec_id: str, config: dict[str, Any], *names: str) -> None:
    """Raise FormatError if ``config`` holds a setting other than ``names``."""
    unknown = set(config) - set(names)
    if unknown:
        raise FormatError(f"unknown {codec_id} settings {sorted(unknown)}")


@dataclass(frozen=True)
class Run:
    """``nbytes`` packed bytes all equal to ``byte``: a stretch ``decode_chunks`` need not spell out."""

    byte: int
    nbytes: int


class Codec:
    """An encoding of packed bits: ``encode`` returns (payload, config); ``decode`` inverts it."""

    id: ClassVar[str]
    minor_version: ClassVar[int] = 0  # the format version 1.x that added this encoding: a file using it is 1.x

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        raise NotImplementedError

    def decode(self, payload: bytes, numel: int, out: np.ndarray | None = None) -> np.ndarray:
        """Return the packed bits: a fresh, writable uint8 array, or ``out`` (``packed_nbytes(numel)`` uint8
        bytes, overwritten) when given, which saves the page faults of fresh memory in loops. Raise
        FormatError on bad payloads."""
        raise NotImplementedError

    def decode_chunks(self, payload: bytes, numel: int) -> Iterator[np.ndarray | Run]:
        """The packed bits of ``decode``, in consecutive pieces: arrays of at most CHUNK_BYTES, each valid until
        the next is asked for, or Runs of one byte value (of any length). Memory stays bounded, and time follows
        the payload rather than ``numel``, whatever a header claims. Raise FormatError as ``decode``."""
        raise NotImplementedError

    def configured(self, config: dict[str, Any]) -> Codec:
        """This codec with the settings of ``config`` (as stored in a header) instead of the defaults; a
        reader's config must hold every setting (``from_config``), a writer's may leave some to the defaults."""
        if config:
            raise FormatError(f"encoding {self.id!r} takes no settings, got {config!r}")
        return self

    def for_shape(self, shape: tuple[int, ...]) -> Codec:
        """This codec with the settings a writer uses for a tensor of this shape (most codecs ignore it)."""
        return self

    def from_config(self, config: dict[str, Any]) -> Codec:
        """The codec that decodes a payload whose header stores ``config``: every setting present, none unknown."""
        return self.configured(config)


class PositionsDecoder:
    """Capability: a codec that lists the set bits of a payload without building the packed bits."""

    def positions(self, payload: bytes, numel: int) -> np.ndarray:
        """Flat indices (int64, ascending) of the set bits; the structure is checked, the CRC-32 is not."""
        raise NotImplementedError


class IntersectionCounter:
    """Capability: a codec that counts a payload's set bits against packed bits while streaming it."""

    def streams(self) -> bool:
        """Whether ``intersection_count`` runs here (compiled kernels), faster than decoding first."""
        raise NotImplementedError

    def intersection_count(self, payload: bytes, numel: int, packed: np.ndarray) -> tuple[int, int] | None:
        """(set bits of the payload also set in ``packed``, set bits of the payload), or None where this
        machine cannot do it faster than decoding (no compiled kernels). The CRC-32 is not checked."""
        raise NotImplementedError


def allocate_packed(numel: int) -> np.ndarray:
    """Room (uninitialised) for the packed bits of ``numel`` elements; LimitError rather than an allocation
    larger than the memory limit (``limits``), which a hostile header could otherwise ask for."""
    nbytes = packed_nbytes(numel)
    check_allocation(nbytes, f"{numel:,} bits")
    return np.empty(nbytes, dtype=np.uint8)
