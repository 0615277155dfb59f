"""Encoding and decoding one tensor's payload, with the checks a reader must make (FORMAT.md §4.3, §5)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..codecs import Codec, PositionsDecoder, codec_for, encode_auto, get_codec
from ..codecs.base import Run
from ..errors import ChecksumError, FormatError, LimitError, where
from ..packed import (
    CHUNK_BYTES,
    crc32,
    crc32_of_run,
    crc32_update,
    from_positions,
    packed_nbytes,
    padding_is_clear,
    popcount,
)
from .header import TensorEntry

WHOLE_TENSOR_BYTES = 64 << 20  # larger tensors are verified in pieces by ``verify_tensor``


def encode_tensor(name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int,
                  encoding: str = "auto", config: dict[str, Any] | None = None) -> tuple[TensorEntry, bytes]:
    """Encode packed bits with the given encoding id and settings (or the best default one for "auto")."""
    numel = math.prod(shape)
    if encoding == "auto":
        encoding, payload, config = encode_auto(packed, numel, ones, tuple(shape))
    else:
        payload, config = get_codec(encoding).for_shape(tuple(shape)).configured(config or {}).encode(packed, numel)
    return TensorEntry(name, tuple(shape), ones, encoding, config, crc32(packed)), payload


def decode_tensor(entry: TensorEntry, payload: bytes, path: object = None, *, out: np.ndarray | None = None,
                  verify_crc: bool = True) -> np.ndarray:
    """Decode and verify one payload: returns packed bits whose pad bits, popcount and CRC-32 all check out
    (the one decode path of every reader; ``verify_crc=False`` skips only the CRC-32, for counting tools).

    ``out`` (``packed_nbytes(entry.bits)`` uint8 bytes) receives the bits instead of fresh memory. LimitError
    when the payload is consistent with bits too many for the memory limit (``limits``).
    """
    at = where(path, entry.name)
    codec = entry_codec(entry, path)
    packed = _decoded(at, lambda: codec.decode(payload, entry.bits, out))
    check_decoded(entry, packed, at, verify_crc=verify_crc)
    if verify_crc:
        check_payload(entry, payload, at)
    return packed


def payload_verified(entry: TensorEntry, payload: bytes | np.ndarray) -> bool:
    """Whether the entry has a payload CRC-32 (FORMAT.md §4.5, 1.3) and the payload matches it: then a tool that
    only counts may skip the CRC-32 of the decoded bits (§4.3), at a cost that follows the payload's size."""
    return entry.payload_crc32 is not None and f"{crc32_update(payload):08x}" == entry.payload_crc32


def check_payload(entry: TensorEntry, payload: bytes | np.ndarray, at: str) -> None:
    """Raise ChecksumError when the payload does not match the entry's payload CRC-32 (if it has one)."""
    if entry.payload_crc32 is not None and not payload_verified(entry, payload):
        raise ChecksumError(f"{at}CRC-32 of the payload is {crc32_update(payload):08x}, header says "
                            f"{entry.payload_crc32}; the file is corrupt: download or rebuild it")


def decode_positions(entry: TensorEntry, payload: bytes, path: object = None) -> np.ndarray | None:
    """Decode one payload to the flat indices (int64, ascending) of its set bits, with every check of
    ``decode_tensor`` (the CRC-32 over the bits packed again, a window at a time); None when its codec does
    not list positions (``PositionsDecoder``). On sparse bits, cheaper than packed bits and far cheaper to
    scatter by."""
    at = where(path, entry.name)
    codec = entry_codec(entry, path)
    if not isinstance(codec, PositionsDecoder):
        return None
    positions = _decoded(at, lambda: codec.positions(payload, entry.bits))
    crc, window = 0, 8 * CHUNK_BYTES
    for start in range(0, entry.bits, window):
        within = positions[np.searchsorted(positions, start) : np.searchsorted(positions, start + window)]
        crc = crc32_update(from_positions(within - start, min(window, entry.bits - start)), crc)
    pad_clear = not positions.size or positions[-1] < entry.bits
    _check_bits(entry, pad_clear, f"{crc:08x}", positions.size, at)
    check_payload(entry, payload, at)
    return positions


def _decoded(at: str, decode: Callable[[], np.ndarray]) -> np.ndarray:
    """``decode()``, its FormatError and LimitError naming the file and tensor."""
    try:
        return decode()
    except FormatError as exc:
        raise FormatError(f"{at}{exc}; the file is corrupt (run `submask validate` on it)") from None
    except LimitError as exc:
        raise LimitError(f"{at}{exc}") from None


def check_decoded(entry: TensorEntry, packed: np.ndarray, at: str, *, verify_crc: bool = True) -> None:
    """Check decoded bits against their header entry: pad bits clear, CRC-32 (unless not ``verify_crc``), popcount.

    ``at`` is the error-message prefix naming the file and tensor (``errors.where``).
    """
    _check_bits(entry, padding_is_clear(packed, entry.bits), crc32(packed) if verify_crc else entry.crc32,
                popcount(packed), at)


def verify_tensor(entry: TensorEntry, payload: bytes, path: object = None) -> None:
    """The checks of ``decode_tensor`` in bounded memory, whatever the header claims (what ``submask validate``
    runs): a tensor of more than WHOLE_TENSOR_BYTES packed bytes is decoded piece by piece."""
    if packed_nbytes(entry.bits) <= WHOLE_TENSOR_BYTES:
        decode_tensor(entry, payload, path)  # the compiled decoders: 2.5x faster than the pieces on Rice
        return
    at = where(path, entry.name)
    codec = entry_codec(entry, path)
    crc, ones, last = 0, 0, np.zeros(0, dtype=np.uint8)
    try:
        for piece in codec.decode_chunks(payload, entry.bits):
            if isinstance(piece, Run):
                crc = crc32_of_run(piece.byte, piece.nbytes, crc)
                ones += piece.byte.bit_count() * piece.nbytes
                last = np.array([piece.byte], dtype=np.uint8)
            else:
                crc = crc32_update(piece, crc)
                ones += popcount(piece)
                last = piece
    except FormatError as exc:
        raise FormatError(f"{at}{exc}; the file is corrupt") from None
    _check_bits(entry, padding_is_clear(last, entry.bits), f"{crc:08x}", ones, at)
    check_payload(entry, payload, at)


def entry_codec(entry: TensorEntry, path: object = None) -> Codec:
    """The codec, with the entry's settings, that decodes this tensor's payload; an unknown encoding or bad
    settings raise for this tensor only, naming the file and tensor."""
    try:
        return codec_for(entry.encoding, entry.config)
    except FormatError as exc:
        raise type(exc)(f"{where(path, entry.name)}{exc}") from None


def _check_bits(entry: TensorEntry, pad_clear: bool, crc: str, ones: int, at: str) -> None:
    if not pad_clear:
        raise ChecksumError(f"{at}pad bits after the last element are set; the file is corrupt")
    if crc != entry.crc32:
        raise ChecksumError(f"{at}CRC-32 of the decoded bits is {crc}, header says {entry.crc32}; "
                            "the file is corrupt: download or rebuild it")
    if ones != entry.ones:
        raise ChecksumError(f"{at}decoded {ones} set bits, header says {entry.ones}; the file is corrupt")
