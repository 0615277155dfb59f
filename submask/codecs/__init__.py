"""Per-tensor encodings of packed bits, registered by id (see FORMAT.md, "Encodings").

Each codec turns the packed bits of one tensor into a payload and back. Its ``config`` (the JSON object
stored next to the id in the header) holds what a decoder needs beyond the payload, shape and counts.
Adding an encoding means adding a module here, registering it in ``CODECS``, and describing it in FORMAT.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UnknownEncodingError
from .base import Codec, IntersectionCounter, PositionsDecoder
from .plain import RawCodec, ZstdCodec
from .rice import RiceCodec, rice_kernels_compiled
from .rows import RiceRowsCodec
from .rows_format import HEADER as ROWS_HEADER

CODECS: dict[str, Codec] = {codec.id: codec for codec in (RawCodec(), ZstdCodec(), RiceCodec(), RiceRowsCodec())}


def get_codec(encoding_id: str) -> Codec:
    """The registered codec for an id; UnknownEncodingError if there is none."""
    try:
        return CODECS[encoding_id]
    except KeyError:
        known = ", ".join(sorted(CODECS))
        raise UnknownEncodingError(
            f"unknown encoding {encoding_id!r} (this submask knows {known}); upgrade submask to read this file"
        ) from None


def codec_for(encoding_id: str, config: dict[str, Any]) -> Codec:
    """The codec that decodes a payload stored with this encoding id and settings (as a header records them)."""
    return get_codec(encoding_id).from_config(config)


def binary_entropy_bits(ones: int, numel: int) -> float:
    """The iid entropy bound, in bits, of a mask with ``ones`` set bits out of ``numel``."""
    if numel == 0 or ones in (0, numel):
        return 0.0
    p = ones / numel
    return numel * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def encode_auto(packed: np.ndarray, numel: int, ones: int,
                shape: tuple[int, ...] | None = None) -> tuple[str, bytes, dict[str, Any]]:
    """Encode with the best default encoding; returns (id, payload, config).

    Rice is tried where the rarer value is below 20% density; with ``shape``, Rice by rows (its last
    dimension, FORMAT.md 5.5) where there is more than one row and the rows' rarer values are below 20%; zstd
    where the rarer value is above 0.3% (outside those ranges each is always larger than another). The
    smallest wins, except that zstd, several times faster to decode, is kept when a Rice code saves less than
    3% of its size, and raw, counted about 8x faster than zstd inflates and read in place, is kept when zstd
    saves less than RAW_MARGIN of it: only where zstd finds next to nothing to save, so that no mask is stored
    much above its bound or above zstd's size (FORMAT.md §5.4). Raw wins ties, then rice (``choose_encoding``).
    Raw's size is known without copying the bits: they are copied only where raw wins.
    """
    coded: dict[str, tuple[bytes, dict[str, Any]]] = {}
    minority = min(ones, numel - ones) / numel if numel else 0.0
    if minority < 0.2:
        coded["rice"] = CODECS["rice"].encode(packed, numel)
    by_rows = RiceRowsCodec().for_shape(shape) if shape else None
    # a payload no longer than rows' header leaves rows nothing to win (a frozen or wholly changed tensor, for rice)
    shortest = min([packed.nbytes, *(len(payload) for payload, _ in coded.values())])
    rows = by_rows.encode_listing(packed, numel, 0.2) if by_rows and numel > by_rows.row_bits \
        and shortest > ROWS_HEADER.size else None
    if rows is not None:
        coded["rice-rows"] = rows
    if minority >= 0.003:
        coded["zstd"] = CODECS["zstd"].encode(packed, numel)
    chosen = choose_encoding(packed.nbytes, {name: len(payload) for name, (payload, _) in coded.items()})
    return ("raw", packed.tobytes(), {}) if chosen == "raw" else (chosen, *coded[chosen])


def choose_encoding(raw_size: int, sizes: dict[str, int]) -> str:
    """``encode_auto``'s choice among raw (``raw_size`` bytes) and the payload ``sizes`` of the candidates tried
    ("rice", "rice-rows", "zstd"): the smallest, raw first among equals, then in that order; zstd kept against
    a Rice code that saves less than 3% of it, and raw against zstd where zstd saves less than RAW_MARGIN."""
    order = [("raw", raw_size)] + [(name, sizes[name]) for name in ("rice", "rice-rows", "zstd") if name in sizes]
    best, best_size = min(order, key=lambda candidate: candidate[1])  # the first of equals
    zstd = sizes.get("zstd")
    if best != "raw" and zstd is not None and zstd * ZSTD_PREFERENCE <= best_size:
        best, best_size = "zstd", zstd
    if best == "zstd" and best_size > (1 - RAW_MARGIN) * raw_size:
        return "raw"
    return best


ZSTD_PREFERENCE = 1 / 1.03
#: zstd must save at least this share of raw's size to be kept. zstd level 1 stores a block as it is when coding
#: it would save less than 1/64 of it, so with 1/128 zstd is kept wherever it compresses at all (iid masks: below
#: about 42% and above 58% density) and raw where it does not (at most 1.9% above the iid bound, at 42%)
RAW_MARGIN = 1 / 128


__all__ = ["CODECS", "Codec", "IntersectionCounter", "PositionsDecoder", "RawCodec", "RiceCodec", "RiceRowsCodec",
           "ZstdCodec", "binary_entropy_bits", "choose_encoding", "codec_for", "encode_auto", "get_codec",
           "rice_kernels_compiled"]
