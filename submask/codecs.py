"""Per-tensor encodings of packed bits, registered by id (see FORMAT.md, "Encodings").

Each codec turns the packed bits of one tensor into a payload and back. Its ``config`` (the JSON object
stored next to the id in the header) holds what a decoder needs beyond the payload, shape and counts.
Adding an encoding means adding a class here, registering it, and describing it in FORMAT.md.
"""

from __future__ import annotations

import math
import struct
from typing import Any, ClassVar

import numpy as np
import zstandard

from .errors import FormatError, UnknownEncodingError
from .packed import clear_padding, from_positions, packed_nbytes, popcount, set_positions


class Codec:
    """An encoding of packed bits: ``encode`` returns (payload, config); ``decode`` inverts it."""

    id: ClassVar[str]

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        raise NotImplementedError

    def decode(self, payload: bytes, numel: int, config: dict[str, Any]) -> np.ndarray:
        """Return the packed bits (a fresh, writable uint8 array). Raise FormatError on bad payloads."""
        raise NotImplementedError

    def configured(self, config: dict[str, Any]) -> "Codec":
        """This codec with the encoder settings of ``config`` (as stored in a header) instead of the defaults."""
        if config:
            raise FormatError(f"encoding {self.id!r} takes no settings, got {config!r}")
        return self


class RawCodec(Codec):
    """The packed bytes themselves."""

    id = "raw"

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        return packed.tobytes(), {}

    def decode(self, payload: bytes, numel: int, config: dict[str, Any]) -> np.ndarray:
        expected = packed_nbytes(numel)
        if len(payload) != expected:
            raise FormatError(f"raw payload has {len(payload)} bytes, {expected} expected for {numel} bits")
        return np.frombuffer(payload, dtype=np.uint8).copy()


class ZstdCodec(Codec):
    """One zstd frame (with its content size) over the packed bytes."""

    id = "zstd"
    level = 1  # as small as levels 3 and 9 on masks above 5% density, and several times faster

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        return compressor.compress(memoryview(packed)), {}

    def decode(self, payload: bytes, numel: int, config: dict[str, Any]) -> np.ndarray:
        expected = packed_nbytes(numel)
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise FormatError(f"zstd payload has no valid frame header ({exc})") from None
        if declared != expected:
            raise FormatError(f"zstd frame declares {declared} bytes of content, {expected} expected")
        try:
            data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise FormatError(f"zstd payload is corrupt ({exc})") from None
        if len(data) != expected:
            raise FormatError(f"zstd payload decoded to {len(data)} bytes, {expected} expected")
        return np.frombuffer(data, dtype=np.uint8).copy()


_BLOCK_HEADER = struct.Struct("<BBHII")  # coded value, k, reserved, position count, unary bytes


class RiceCodec(Codec):
    """Rice-coded gaps between the positions of the rarer value, block by block.

    The bits are cut into blocks of ``block_bits``; each block codes the positions of its own rarer
    value with its own Rice parameter, so rows and regions of different density each get a good code.
    """

    id = "rice"

    def __init__(self, block_bits: int = 1 << 22):
        self.block_bits = _check_block_bits(block_bits)

    def configured(self, config: dict[str, Any]) -> "RiceCodec":
        unknown = set(config) - {"block_bits"}
        if unknown:
            raise FormatError(f"unknown rice settings {sorted(unknown)}")
        return RiceCodec(config.get("block_bits", self.block_bits))

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        block_bytes = self.block_bits // 8
        parts = []
        for start in range(0, numel, self.block_bits):
            nbits = min(self.block_bits, numel - start)
            block = packed[start // 8 : start // 8 + block_bytes]
            parts.append(_encode_block(block, nbits))
        return b"".join(parts), {"block_bits": self.block_bits}

    def decode(self, payload: bytes, numel: int, config: dict[str, Any]) -> np.ndarray:
        block_bits = _check_block_bits(config.get("block_bits"))
        nblocks = -(-numel // block_bits)
        if len(payload) < nblocks * _BLOCK_HEADER.size:
            raise FormatError(f"rice payload of {len(payload)} bytes is too short for {nblocks} blocks")
        out = np.empty(packed_nbytes(numel), dtype=np.uint8)
        offset = 0
        for index in range(nblocks):
            start = index * block_bits
            nbits = min(block_bits, numel - start)
            block, offset = _decode_block(payload, offset, nbits)
            out[start // 8 : start // 8 + block.size] = block
        if offset != len(payload):
            raise FormatError(f"rice payload has {len(payload) - offset} bytes after its last block")
        return out


def _check_block_bits(block_bits: Any) -> int:
    if type(block_bits) is not int or block_bits <= 0 or block_bits % 8 or block_bits > 1 << 32:
        raise FormatError(f"rice block_bits must be a positive multiple of 8 up to 2^32, got {block_bits!r}")
    return block_bits


def _encode_block(block: np.ndarray, nbits: int) -> bytes:
    value = 1 if 2 * popcount(block) <= nbits else 0
    positions = set_positions(block if value else clear_padding(~block, nbits), nbits)
    count = positions.size
    if count == 0:
        return _BLOCK_HEADER.pack(value, 0, 0, 0, 0)
    gaps = np.diff(positions, prepend=-1) - 1
    k = _best_rice_parameter(gaps)
    quotients = gaps >> k
    unary = from_positions(np.cumsum(quotients + 1) - 1, int(quotients.sum()) + count)
    planes = [np.packbits(((gaps >> bit) & 1).astype(np.bool_)).tobytes() for bit in range(k)]
    return b"".join([_BLOCK_HEADER.pack(value, k, 0, count, unary.size), unary.tobytes(), *planes])


def _decode_block(payload: bytes, offset: int, nbits: int) -> tuple[np.ndarray, int]:
    """Packed bits of one block and the offset after it."""
    value, listed, end = _read_block(payload, offset, nbits)
    bools = np.full(nbits, not value, dtype=np.bool_)
    bools[listed] = bool(value)
    return np.packbits(bools), end


def decode_positions(payload: bytes, numel: int, config: dict[str, Any]) -> np.ndarray:
    """Flat indices (int64, ascending) of the set bits of a "rice" payload, without building packed bits.

    Several times faster than ``decode`` + ``set_positions`` on sparse masks (used by ``submask.compare``).
    Checks the same block structure as ``decode``; the CRC-32 of the bits is not checked.
    """
    block_bits = _check_block_bits(config.get("block_bits"))
    blocks = []
    offset = 0
    for start in range(0, numel, block_bits):
        positions, offset = _block_positions(payload, offset, min(block_bits, numel - start))
        blocks.append((start, positions))
    if offset != len(payload):
        raise FormatError(f"rice payload has {len(payload) - offset} bytes after its last block")
    out = np.empty(sum(positions.size for _, positions in blocks), dtype=np.int64)
    cursor = 0
    for start, positions in blocks:
        np.add(positions, start, out=out[cursor : cursor + positions.size])
        cursor += positions.size
    return out


def _block_positions(payload: bytes, offset: int, nbits: int) -> tuple[np.ndarray, int]:
    """Positions of the set bits of one block, relative to its start, and the offset after the block."""
    value, listed, end = _read_block(payload, offset, nbits)
    if value:
        return listed, end
    ones = np.ones(nbits, dtype=np.bool_)  # the block lists its zeros: the set bits are the other positions
    ones[listed] = False
    return np.flatnonzero(ones), end


def _read_block(payload: bytes, offset: int, nbits: int) -> tuple[int, np.ndarray, int]:
    """One block's coded value, its listed positions (ascending, relative to the block; int32 where they
    fit) and the offset after the block, with every structural check of FORMAT.md section 5.3."""
    if offset + _BLOCK_HEADER.size > len(payload):
        raise FormatError("rice payload ends inside a block header")
    value, k, reserved, count, unary_nbytes = _BLOCK_HEADER.unpack_from(payload, offset)
    offset += _BLOCK_HEADER.size
    if value > 1 or reserved or k > 31 or count > nbits:
        raise FormatError(f"rice block header is invalid (value={value}, k={k}, count={count} of {nbits} bits)")
    plane_nbytes = (count + 7) // 8
    end = offset + unary_nbytes + k * plane_nbytes
    if end > len(payload):
        raise FormatError("rice payload ends inside a block")
    unary = np.frombuffer(payload, dtype=np.uint8, count=unary_nbytes, offset=offset)
    terminators = np.flatnonzero(np.unpackbits(unary).view(np.bool_))
    if terminators.size != count:
        raise FormatError(f"rice block codes {terminators.size} positions, its header says {count}")
    if not count:
        return value, np.zeros(0, dtype=np.int32), end
    # position i = (quotients summed to i) << k + (low bits summed to i) + i, where the quotients summed to
    # i are the zeros before the i-th unary terminator, t_i - i: a few whole-array passes, no gap array
    bound = ((int(terminators[-1]) - count + 1) << k) + count * (1 << k)  # exceeds every intermediate value
    dtype = np.int32 if bound < 1 << 31 else np.int64
    index = np.arange(count, dtype=dtype)
    positions = terminators.astype(dtype)
    positions -= index
    positions <<= k
    positions += index
    if k:
        planes = np.frombuffer(payload, dtype=np.uint8, count=k * plane_nbytes, offset=offset + unary_nbytes)
        bits = np.unpackbits(planes.reshape(k, plane_nbytes), axis=1, count=count)
        low_dtype = np.uint8 if k <= 8 else np.uint16 if k <= 16 else np.uint32
        low = bits[0].astype(low_dtype)
        for bit in range(1, k):
            low |= bits[bit].astype(low_dtype, copy=False) << low_dtype(bit)
        positions += np.cumsum(low, dtype=dtype)
    if positions[-1] >= nbits:
        raise FormatError(f"rice block codes a position past its {nbits} bits")
    return value, positions, end


def _best_rice_parameter(gaps: np.ndarray) -> int:
    """The Rice parameter k minimising the coded size, searched around the geometric optimum."""
    mean = float(gaps.mean())
    guess = max(0, int(math.log2(mean * math.log(2) + 1))) if mean > 0 else 0
    candidates = range(max(0, guess - 1), min(32, guess + 2))
    sizes = [int((gaps >> k).sum()) + gaps.size * k for k in candidates]
    return candidates[int(np.argmin(sizes))]


CODECS: dict[str, Codec] = {codec.id: codec for codec in (RawCodec(), ZstdCodec(), RiceCodec())}


def get_codec(encoding_id: str) -> Codec:
    """The registered codec for an id; UnknownEncodingError if there is none."""
    try:
        return CODECS[encoding_id]
    except KeyError:
        known = ", ".join(sorted(CODECS))
        raise UnknownEncodingError(
            f"unknown encoding {encoding_id!r} (this submask knows {known}); upgrade submask to read this file"
        ) from None


def binary_entropy_bits(ones: int, numel: int) -> float:
    """The iid entropy bound, in bits, of a mask with ``ones`` set bits out of ``numel``."""
    if numel == 0 or ones in (0, numel):
        return 0.0
    p = ones / numel
    return numel * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def encode_auto(packed: np.ndarray, numel: int, ones: int) -> tuple[str, bytes, dict[str, Any]]:
    """Encode with the best default encoding; returns (id, payload, config).

    Rice is tried where the rarer value is below 20% density and zstd where it is above 0.3% (outside
    those ranges each is always larger than the other). The smallest wins, except that zstd, several times
    faster to decode, is kept when Rice saves less than 3% of its size. Raw wins ties.
    """
    candidates = [("raw", packed.tobytes(), {})]
    minority = min(ones, numel - ones) / numel if numel else 0.0
    if minority < 0.2:
        candidates.append(("rice", *CODECS["rice"].encode(packed, numel)))
    if minority >= 0.003:
        candidates.append(("zstd", *CODECS["zstd"].encode(packed, numel)))

    best = min(candidates, key=lambda candidate: len(candidate[1]))  # raw first: wins ties
    zstd = next((c for c in candidates if c[0] == "zstd"), None)
    if best[0] == "rice" and zstd is not None and len(zstd[1]) * ZSTD_PREFERENCE <= len(best[1]):
        return zstd
    return best


ZSTD_PREFERENCE = 1 / 1.03
