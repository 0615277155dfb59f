"""The interface every encoding implements (FORMAT.md section 5)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import FormatError


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

    def configured(self, config: dict[str, Any]) -> "Codec":
        """This codec with the encoder settings of ``config`` (as stored in a header) instead of the defaults."""
        if config:
            raise FormatError(f"encoding {self.id!r} takes no settings, got {config!r}")
        return self
