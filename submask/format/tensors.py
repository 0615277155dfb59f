"""Encoding and decoding one tensor's payload, with the checks a reader must make (FORMAT.md §5)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..codecs import encode_auto, get_codec
from ..errors import ChecksumError, FormatError, where
from ..packed import crc32, padding_is_clear, popcount
from .header import TensorEntry


def encode_tensor(name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int,
                  encoding: str = "auto", config: dict[str, Any] | None = None) -> tuple[TensorEntry, bytes]:
    """Encode packed bits with the given encoding id and settings (or the best default one for "auto")."""
    numel = math.prod(shape)
    if encoding == "auto":
        encoding, payload, config = encode_auto(packed, numel, ones)
    else:
        payload, config = get_codec(encoding).configured(config or {}).encode(packed, numel)
    return TensorEntry(name, tuple(shape), ones, encoding, config, crc32(packed)), payload


def decode_tensor(entry: TensorEntry, payload: bytes, path: object = None) -> np.ndarray:
    """Decode and verify one payload: returns packed bits whose pad bits, popcount and CRC-32 all check out."""
    at = where(path, entry.name)
    try:
        codec = get_codec(entry.encoding)
    except FormatError as exc:
        raise type(exc)(f"{at}{exc}") from None
    try:
        packed = codec.configured(entry.config).decode(payload, entry.bits, entry.config)
    except FormatError as exc:
        raise FormatError(f"{at}{exc}; the file is corrupt (run `submask validate` on it)") from None
    check_decoded(entry, packed, at)
    return packed


def check_decoded(entry: TensorEntry, packed: np.ndarray, at: str, *, verify_crc: bool = True) -> None:
    """Check decoded bits against their header entry: pad bits clear, CRC-32 (unless not ``verify_crc``), popcount.

    ``at`` is the error-message prefix naming the file and tensor (``errors.where``).
    """
    if not padding_is_clear(packed, entry.bits):
        raise ChecksumError(f"{at}pad bits after the last element are set; the file is corrupt")
    if verify_crc and crc32(packed) != entry.crc32:
        raise ChecksumError(f"{at}CRC-32 of the decoded bits is {crc32(packed)}, header says {entry.crc32}; "
                            "the file is corrupt: download or rebuild it")
    ones = popcount(packed)
    if ones != entry.ones:
        raise ChecksumError(f"{at}decoded {ones} set bits, header says {entry.ones}; the file is corrupt")
