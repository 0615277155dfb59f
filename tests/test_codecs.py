"""Per-tensor encodings: round trips on random shapes and densities, sizes, and rejection of bad payloads."""

from __future__ import annotations

import math
import sys
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from masks import random_bools

from submask import packed as packed_module
from submask.codecs import RAW_MARGIN, RiceCodec, binary_entropy_bits, encode_auto, get_codec
from submask.errors import FormatError, UnknownEncodingError
from submask.packed import crc32, crc32_update, pack, popcount, unpack

ENCODINGS = ["raw", "zstd", "rice", "rice-rows"]


def random_bits(numel: int, density: float, seed: int = 0) -> np.ndarray:
    return random_bools({"bits": (numel,)}, density, seed)["bits"]


@settings(max_examples=60, deadline=None)
@given(numel=st.integers(0, 5000), density=st.sampled_from([0.0, 0.001, 0.05, 0.3, 0.5, 0.9, 0.999, 1.0]),
       seed=st.integers(0, 2**16), encoding=st.sampled_from(ENCODINGS))
def test_every_encoding_round_trips(numel: int, density: float, seed: int, encoding: str) -> None:
    bools = random_bits(numel, density, seed)
    packed = pack(bools)
    payload, config = get_codec(encoding).encode(packed, numel)
    decoded = get_codec(encoding).from_config(config).decode(payload, numel)
    np.testing.assert_array_equal(unpack(decoded, numel), bools)


def test_rice_round_trips_across_block_boundaries() -> None:
    codec = RiceCodec(block_bits=64)
    bools = random_bits(3 * 64 + 5, 0.02, seed=7)
    bools[63:66] = True  # a run of set bits straddling a block boundary
    bools[64 * 2 : 64 * 3] = True  # a block where clear bits are the rarer value
    payload, config = codec.encode(pack(bools), bools.size)
    assert config == {"block_bits": 64}
    decoded = get_codec("rice").from_config(config).decode(payload, bools.size)
    np.testing.assert_array_equal(unpack(decoded, bools.size), bools)
    assert get_codec("rice").configured(config).encode(pack(bools), bools.size)[0] == payload


def test_settings_are_validated() -> None:
    with pytest.raises(FormatError, match="block_bits"):
        get_codec("rice").configured({"block_bits": 12})
    with pytest.raises(FormatError, match="no settings"):
        get_codec("zstd").configured({"level": 3})


@pytest.mark.parametrize("density", [0.001, 0.01, 0.05, 0.15, 0.3, 0.5, 0.85, 0.999])
def test_auto_encoding_stays_close_to_the_entropy_bound(density: float) -> None:
    numel = 1 << 20
    bools = random_bits(numel, density, seed=1)
    packed = pack(bools)
    ones = popcount(packed)
    encoding, payload, _ = encode_auto(packed, numel, ones)
    bound_bytes = binary_entropy_bits(ones, numel) / 8
    assert len(payload) <= packed.size + 64, "never much more than raw packed bits"
    assert len(payload) <= 1.05 * bound_bytes + 64, f"{encoding} took {len(payload)} bytes, bound {bound_bytes:.0f}"


@pytest.mark.parametrize("density,expected", [(0.2, "zstd"), (0.3, "zstd"), (0.4, "zstd"), (0.44, "raw"),
                                              (0.5, "raw"), (0.56, "raw"), (0.7, "zstd")])
def test_auto_encoding_keeps_raw_only_where_zstd_saves_less_than_the_margin(density: float, expected: str) -> None:
    numel = 1 << 20
    packed = pack(random_bits(numel, density, seed=2))
    zstd_size = len(get_codec("zstd").encode(packed, numel)[0])
    assert (zstd_size > (1 - RAW_MARGIN) * packed.size) == (expected == "raw")
    encoding, payload, _ = encode_auto(packed, numel, popcount(packed))
    assert encoding == expected
    assert len(payload) <= len(zstandard.ZstdCompressor(level=19).compress(packed.tobytes())) * 1.015, \
        "within zstd -19's size (which also codes a block that saves under 1/64, as level 1 does not)"


def test_auto_encoding_keeps_a_2_4_pruning_mask_near_its_bound() -> None:
    """2 of every 4 entries set: log2(6)/4 = 0.646 bits per entry; zstd catches the byte patterns (0.6535)."""
    scores = np.random.default_rng(4).random(((1 << 20) // 4, 4))
    bools = (scores >= np.sort(scores, axis=1)[:, 2:3]).ravel()
    packed = pack(bools)
    encoding, payload, _ = encode_auto(packed, bools.size, popcount(packed))
    assert 8 * len(payload) / bools.size <= 0.654, f"{encoding}: {8 * len(payload) / bools.size:.4f} bits per entry"
    assert len(payload) <= len(zstandard.ZstdCompressor(level=19).compress(packed.tobytes()))


def test_auto_encoding_picks_sparse_coding_for_sparse_masks_and_raw_for_half() -> None:
    numel = 1 << 18
    sparse = pack(random_bits(numel, 0.001))
    half = pack(random_bits(numel, 0.5))
    assert encode_auto(sparse, numel, popcount(sparse))[0] == "rice"
    assert encode_auto(half, numel, popcount(half))[0] == "raw"


def test_unknown_encoding_is_a_clear_error() -> None:
    with pytest.raises(UnknownEncodingError, match="lz77"):
        get_codec("lz77")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_truncated_payloads_are_rejected(encoding: str) -> None:
    numel = 4096
    packed = pack(random_bits(numel, 0.02, seed=3))
    payload, config = get_codec(encoding).encode(packed, numel)
    for cut in range(0, len(payload), max(1, len(payload) // 17)):
        with pytest.raises(FormatError):
            get_codec(encoding).from_config(config).decode(payload[:cut], numel)


@pytest.mark.parametrize("encoding", ["zstd", "rice"])
def test_a_payload_claiming_huge_sizes_allocates_nothing(encoding: str) -> None:
    numel = 10**12  # 125 GB of packed bits if anyone believed it
    small = pack(random_bits(1024, 0.01))
    payload, config = get_codec(encoding).encode(small, 1024)
    with pytest.raises(FormatError):
        get_codec(encoding).from_config(config).decode(payload, numel)


def test_binary_entropy_bound() -> None:
    assert binary_entropy_bits(0, 100) == 0
    assert binary_entropy_bits(50, 100) == pytest.approx(100)
    assert binary_entropy_bits(1, 1000) == pytest.approx(1000 * -(0.001 * math.log2(0.001) + 0.999 * math.log2(0.999)))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("density", [0.01, 0.3, 0.9])
def test_decode_into_a_reused_buffer(encoding: str, density: float) -> None:
    numel = 3 * 4096 + 5
    packed = pack(random_bits(numel, density, seed=5))
    payload, config = get_codec(encoding).encode(packed, numel)
    out = np.full(packed.size, 0xA5, dtype=np.uint8)  # stale content from an earlier tensor
    decoded = get_codec(encoding).from_config(config).decode(payload, numel, out)
    assert decoded is out
    np.testing.assert_array_equal(out, packed)


def test_zstd_frame_without_its_content_size_is_rejected() -> None:
    import zstandard

    numel = 4096
    payload = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(numel // 8))
    with pytest.raises(FormatError, match="declares"):
        get_codec("zstd").from_config({}).decode(payload, numel)


@settings(max_examples=30, deadline=None)
@given(density=st.sampled_from([0.0005, 0.01, 0.05, 0.2, 0.45, 0.9]), seed=st.integers(0, 2**16))
def test_rice_chooses_k_as_format_md_states(density: float, seed: int) -> None:
    numel = 20_000
    bools = random_bits(numel, density, seed)
    payload, _ = RiceCodec(block_bits=20_000).encode(pack(bools), numel)
    value = 1 if 2 * bools.sum() <= numel else 0
    gaps = np.diff(np.flatnonzero(bools == bool(value)), prepend=-1) - 1
    mean = gaps.sum() / gaps.size
    guess = math.floor(math.log2(mean * math.log(2) + 1)) if mean > 0 else 0
    tried = range(max(0, guess - 1), min(31, guess + 1) + 1)
    expected = min(tried, key=lambda k: (int((gaps >> k).sum()) + gaps.size * (k + 1), k))  # FORMAT.md 5.3
    assert (payload[0], payload[1]) == (value, expected)


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=5000), crc=st.integers(0, 2**32 - 1))
def test_crc32_is_zlibs(data: bytes, crc: int) -> None:
    array = np.frombuffer(data, np.uint8)
    assert crc32_update(array, crc) == zlib.crc32(data, crc) and crc32(array) == f"{zlib.crc32(data):08x}"


def test_crc32_uses_isal_where_installed_and_zlib_without(monkeypatch: pytest.MonkeyPatch) -> None:
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert packed_module._crc32_function() is isal_zlib.crc32
    for name in ("isal", "isal.isal_zlib"):  # as if isal were not installed
        monkeypatch.setitem(sys.modules, name, None)
    packed_module._crc32_function.cache_clear()
    try:
        assert packed_module._crc32_function() is zlib.crc32
        assert crc32_update(np.arange(300, dtype=np.uint16).view(np.uint8), 7) == zlib.crc32(
            np.arange(300, dtype=np.uint16).tobytes(), 7)
    finally:
        packed_module._crc32_function.cache_clear()
