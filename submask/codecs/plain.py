"""The two encodings that store packed bytes as they are or zstd-compressed (FORMAT.md sections 5.1, 5.2)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import FormatError
from ..packed import packed_nbytes
from .base import CHUNK_BYTES, Codec, allocate_packed


class RawCodec(Codec):
    """The packed bytes themselves."""

    id = "raw"

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        return packed.tobytes(), {}

    def decode(self, payload: bytes, numel: int, out: np.ndarray | None = None) -> np.ndarray:
        data = _raw_bits(payload, numel)
        if out is None:
            return data.copy()
        out[:] = data
        return out

    def decode_chunks(self, payload: bytes, numel: int) -> Iterator[np.ndarray]:
        data = _raw_bits(payload, numel)
        for start in range(0, data.size, CHUNK_BYTES):
            yield data[start : start + CHUNK_BYTES]


def _raw_bits(payload: bytes, numel: int) -> np.ndarray:
    expected = packed_nbytes(numel)
    if len(payload) != expected:
        raise FormatError(f"raw payload has {len(payload)} bytes, {expected} expected for {numel} bits")
    return np.frombuffer(payload, dtype=np.uint8)


SKIPPABLE_MAGIC = 0x184D2A50  # the 16 magic numbers of skippable zstd frames: 0x184D2A50 to 0x184D2A5F (RFC 8878)


class ZstdCodec(Codec):
    """One zstd frame (with its content size) over the packed bytes."""

    id = "zstd"
    level = 1  # as small as levels 3 and 9 on masks above 5% density, and several times faster

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        import zstandard  # in each function: commands that never touch a zstd payload skip its import

        compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        return compressor.compress(packed.data), {}

    def decode(self, payload: bytes, numel: int, out: np.ndarray | None = None) -> np.ndarray:
        import zstandard
        expected = packed_nbytes(numel)
        check_frame(payload, expected)
        out = allocate_packed(numel) if out is None else out
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

    def decode_chunks(self, payload: bytes, numel: int) -> Iterator[np.ndarray]:
        import zstandard
        expected = packed_nbytes(numel)
        check_frame(payload, expected)
        buffer = np.empty(min(expected, CHUNK_BYTES), dtype=np.uint8)
        size = 0
        try:
            with zstandard.ZstdDecompressor().stream_reader(payload) as reader:
                while size < expected and (got := reader.readinto(buffer[: expected - size])):
                    size += got
                    yield buffer[:got]
                extra = reader.read(1)
        except zstandard.ZstdError as exc:
            raise FormatError(f"zstd payload is corrupt ({exc})") from None
        if size != expected or extra:
            raise FormatError(f"zstd payload decoded to {size}{' or more' if extra else ''} bytes, {expected} expected")


def check_frame(payload: bytes | memoryview, expected: int) -> None:
    """Check, without decompressing, that ``payload`` is exactly one zstd frame declaring ``expected`` bytes of
    content (§5.2; the value planes of §12 too); FormatError otherwise."""
    import zstandard

    magic = int.from_bytes(bytes(payload[:4]), "little")
    if magic & 0xFFFFFFF0 == SKIPPABLE_MAGIC:
        raise FormatError(f"zstd payload starts with a skippable frame (magic {magic:#010x}), not with its data "
                          "frame; exactly one frame, the data, is allowed")
    try:
        declared = zstandard.frame_content_size(payload)
        end = _frame_end(payload)
    except zstandard.ZstdError as exc:
        raise FormatError(f"zstd payload has no valid frame header ({exc})") from None
    if declared != expected:
        raise FormatError(f"zstd frame declares {declared} bytes of content, {expected} expected")
    if end != len(payload):
        raise FormatError(f"zstd payload holds {len(payload) - end} bytes after its frame; exactly one frame "
                          "is allowed" if end < len(payload) else "zstd payload ends inside its frame")


def _frame_end(payload: bytes | memoryview) -> int:
    """Where the zstd frame at the start of ``payload`` ends, from its block headers (RFC 8878 §3.1.1.2):
    without decompressing, so trailing bytes or a second frame are found before any work."""
    import zstandard

    offset = zstandard.frame_header_size(payload)
    while offset + 3 <= len(payload):
        header = int.from_bytes(payload[offset : offset + 3], "little")
        last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
        offset += 3 + (1 if block_type == 1 else size)  # an RLE block stores its one byte
        if last:
            return offset + 4 * zstandard.get_frame_parameters(payload).has_checksum
    return len(payload) + 1  # no last block: the frame is cut short
