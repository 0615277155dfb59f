"""The two encodings that store packed bytes as they are or zstd-compressed (FORMAT.md sections 5.1, 5.2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FormatError
from ..packed import packed_nbytes
from .base import Codec


class RawCodec(Codec):
    """The packed bytes themselves."""

    id = "raw"

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        return packed.tobytes(), {}

    def decode(self, payload: bytes, numel: int, config: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
        expected = packed_nbytes(numel)
        if len(payload) != expected:
            raise FormatError(f"raw payload has {len(payload)} bytes, {expected} expected for {numel} bits")
        if out is None:
            return np.frombuffer(payload, dtype=np.uint8).copy()
        out[:] = np.frombuffer(payload, dtype=np.uint8)
        return out


class ZstdCodec(Codec):
    """One zstd frame (with its content size) over the packed bytes."""

    id = "zstd"
    level = 1  # as small as levels 3 and 9 on masks above 5% density, and several times faster

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        import zstandard  # here and in decode: commands that never touch a zstd payload skip its import

        compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        return compressor.compress(memoryview(packed)), {}

    def decode(self, payload: bytes, numel: int, config: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
        import zstandard

        expected = packed_nbytes(numel)
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise FormatError(f"zstd payload has no valid frame header ({exc})") from None
        if declared != expected:
            raise FormatError(f"zstd frame declares {declared} bytes of content, {expected} expected")
        out = np.empty(expected, dtype=np.uint8) if out is None else out
        try:  # straight into ``out``: no intermediate bytes object
            with zstandard.ZstdDecompressor().stream_reader(payload) as reader:
                size = reader.readinto(out)
                while size < expected and (more := reader.readinto(out[size:])):
                    size += more
                extra = reader.read(1)
        except zstandard.ZstdError as exc:
            raise FormatError(f"zstd payload is corrupt ({exc})") from None
        if size != expected or extra:
            raise FormatError(f"zstd payload decoded to {size}{' or more' if extra else ''} bytes, {expected} expected")
        return out
