"""What both values encodings share (FORMAT.md §12.2, §12.4): the plane record's methods and header, and positional
reads of a payload held in a file or in memory."""

from __future__ import annotations

from .container import PayloadSpan, ReadAt

STORED, ZSTD = 0, 1  # a plane record's method: its bytes as they are, or one zstd frame
RECORD_HEADER = 5  # u8 method, u32 LE length
Payload = bytes | bytearray | memoryview | PayloadSpan


def payload_reader(payload: Payload) -> tuple[int, ReadAt]:
    """(size, positional reads) of a payload in a file or in memory."""
    if isinstance(payload, PayloadSpan):
        return payload.size, payload.read
    view = memoryview(payload).cast("B")
    return len(view), lambda offset, length: view[offset : offset + length]
