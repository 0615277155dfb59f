"""The compiled kernels (numba) and the numpy fallbacks give identical results and identical errors."""

from __future__ import annotations

import contextlib
import os
import struct
from functools import partial

import numpy as np
import pytest

from submask.accel import Kernel, job, numba_disabled, numba_enabled, numba_started, numba_state
from submask.algebra import pair_intersection_counts
from submask.codecs import RiceCodec, rice_kernels_compiled
from submask.errors import FormatError
from submask.packed import pack, unpack

pytest.importorskip("numba")
pytestmark = pytest.mark.skipif(not numba_enabled(), reason="SUBMASK_NO_NUMBA is set: nothing to compare against")

CASES = [(numel, density, block_bits) for numel, block_bits in [(1, 8), (77, 8), (5003, 64), (70_001, 1 << 22)]
         for density in (0.0, 0.002, 0.05, 0.3, 0.7, 1.0)] + [(1 << 21, 4e-6, 1 << 22)]  # k > 16: a third lane


def bits(numel: int, density: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(numel) < density


def run_both(function):
    """``function()`` with the compiled kernels and with the numpy paths: (compiled result, numpy result)."""
    results = []
    for context in (contextlib.nullcontext(), numba_disabled()):
        with context:
            assert rice_kernels_compiled() == isinstance(context, contextlib.nullcontext)
            try:
                results.append(function())
            except FormatError as exc:
                results.append(f"FormatError: {exc}")
    return results


def test_kernel_compiles_and_switches_off() -> None:
    @Kernel
    def total(values):
        s = 0
        for v in values:
            s += v
        return s

    assert total.compiled(np.arange(10)) == 45 == total.function(np.arange(10))
    with numba_disabled():
        assert not numba_enabled() and total.compiled is None
        assert numba_state().startswith("numba off")
    assert total.compiled is not None and numba_state().startswith("numba ")
    assert os.environ.get("SUBMASK_NO_NUMBA") is None


def test_small_jobs_keep_using_kernels_once_numba_runs_even_after_numba_disabled() -> None:
    assert rice_kernels_compiled()  # outside a job: starts numba
    with numba_disabled():
        assert not rice_kernels_compiled()
    with job(1):  # a small job: numba already runs in this process, so its kernels are used
        assert numba_started() and rice_kernels_compiled()


@Kernel
def _square(value):
    return value * value


@Kernel
def _sum_of_squares(values):  # calls another kernel: compiled, it calls that kernel's compiled form
    s = 0
    for v in values:
        s += _square(v)
    return s


def test_kernels_call_kernels() -> None:
    assert _sum_of_squares.compiled(np.arange(4)) == 14
    assert _sum_of_squares.function.__globals__["_square"] is _square  # the module keeps the Kernel object


@pytest.mark.parametrize("numel,density,block_bits", CASES)
def test_rice_kernels_match_numpy(numel: int, density: float, block_bits: int) -> None:
    bools = bits(numel, density, seed=numel)
    other = pack(bits(numel, 0.5, seed=1))
    codec = RiceCodec(block_bits)

    def everything():
        payload, config = codec.encode(pack(bools), numel)
        decoded = unpack(codec.from_config(config).decode(payload, numel), numel)
        counted = RiceCodec().from_config(config).intersection_count(payload, numel, other)
        return payload, decoded.tolist(), RiceCodec().from_config(config).positions(payload, numel).tolist(), counted

    compiled, numpy = run_both(everything)
    assert compiled[:3] == numpy[:3]  # encoded bytes, decoded bits, positions
    assert compiled[1] == bools.tolist()
    assert numpy[3] is None  # no streaming count without the kernels
    assert compiled[3] == (int(np.sum(bools & unpack(other, numel))), int(bools.sum()))


def rice_block(gaps: np.ndarray, k: int) -> bytes:
    """A one-block "rice" payload (FORMAT.md section 5.3) listing the set bits after ``gaps``, with Rice parameter
    ``k`` whatever the encoder would choose."""
    quotients = gaps >> k
    unary = np.zeros(int(quotients.sum()) + gaps.size, np.bool_)
    unary[np.cumsum(quotients + 1) - 1] = True
    planes = [np.packbits((gaps >> bit) & 1 == 1).tobytes() for bit in range(k)]
    header = struct.pack("<BBHII", 1, k, 0, gaps.size, (unary.size + 7) // 8)
    return b"".join([header, np.packbits(unary).tobytes(), *planes])


@pytest.mark.parametrize("k", range(32))
def test_rice_blocks_of_every_parameter_decode_alike(k: int) -> None:
    """Every Rice parameter, with remainders of 0 (their complements, which the numpy path sums in 8-, 16- or
    32-bit lanes, at their largest), at their largest, and mixed with quotients; and a block coding a position
    past its bits."""
    rng = np.random.default_rng(k)
    zero = rng.integers(0, 2, 17) << k if k < 24 else np.zeros(17, np.int64)
    largest = np.full(min(17, (1 << 32) // (1 << k) - 1), (1 << k) - 1, np.int64)
    mixed = rng.integers(0, 1 << k, 21) + (rng.integers(0, 3, 21) << k)
    for gaps in [zero, largest, mixed] if k <= 24 else [zero, largest]:
        positions = np.cumsum(gaps + 1) - 1
        numel = int(positions[-1]) + 1
        payload, config = rice_block(gaps, k), {"block_bits": max(8, -(-numel // 8) * 8)}
        compiled, numpy = run_both(partial(positions_list, payload, numel, config))
        assert compiled == numpy == positions.tolist()
        if numel <= 1 << 22:
            compiled, numpy = run_both(partial(codec_decode, payload, numel, config))
            assert compiled == numpy == pack(np.isin(np.arange(numel), positions)).tolist()
        compiled, numpy = run_both(partial(positions_list, payload, numel - 1, config))
        past = f"a position past its {numel - 1} bits" if gaps.size < numel else "header is invalid"
        assert compiled == numpy and past in numpy


def corruptions(payload: bytes) -> list[bytes]:
    """Damaged versions of a one-block rice payload (its 12-byte header, then the unary part)."""
    damaged = [payload[:-1], payload + b"\0", payload[:5]]
    for at in range(12, len(payload)):
        for flip in (0x01, 0x80, 0xFF):
            data = bytearray(payload)
            data[at] ^= flip
            damaged.append(bytes(data))
    for field, value in [(1, 31), (1, 32), (0, 2), (2, 1)]:  # huge k, k > 31, value > 1, reserved
        data = bytearray(payload)
        data[field] = value
        damaged.append(bytes(data))
    return damaged


@pytest.mark.parametrize("density", [0.01, 0.2])
def test_corrupt_rice_payloads_fail_alike(density: float) -> None:
    numel = 600
    bools = bits(numel, density, seed=3)
    payload, config = RiceCodec().encode(pack(bools), numel)
    other = pack(bits(numel, 0.5, seed=4))
    rejected = 0
    for bad in corruptions(payload):
        compiled, numpy = run_both(partial(_decode_both_ways, bad, numel, config))
        if isinstance(numpy, str):  # the numpy path raised: so must the kernels, with the same message
            rejected += 1
            assert compiled == numpy
            with pytest.raises(FormatError) as raised:
                RiceCodec().from_config(config).intersection_count(bad, numel, other)
            assert f"FormatError: {raised.value}" == numpy
        else:
            assert compiled[0] == numpy[0] and compiled[1] == numpy[1]
    assert rejected >= 8  # every kind of damage above: truncation, trailing bytes, counts, bad header fields


def codec_decode(payload: bytes, numel: int, config: dict) -> list[int]:
    return RiceCodec().from_config(config).decode(payload, numel).tolist()


def positions_list(payload: bytes, numel: int, config: dict) -> list[int]:
    return RiceCodec().from_config(config).positions(payload, numel).tolist()


def _decode_both_ways(payload: bytes, numel: int, config: dict) -> tuple[list[int], list[int]]:
    """Decoded bits and listed positions of one payload."""
    return codec_decode(payload, numel, config), positions_list(payload, numel, config)


@pytest.mark.parametrize("numel", [1, 77, 70_001])
def test_all_pair_counts_match_numpy(numel: int) -> None:
    masks = [bits(numel, density, seed=seed) for seed, density in enumerate((0.0, 0.01, 0.5, 0.9, 1.0))]
    expected = [[int(np.sum(a & b)) for b in masks] for a in masks]
    compiled, numpy = run_both(lambda: pair_intersection_counts([pack(m) for m in masks]).tolist())
    assert compiled == numpy == expected


@pytest.mark.parametrize("numel", [0, 1, 63, 64, 65, 77, 70_001])
def test_bit_counts_match_numpy_with_and_without_the_kernel(numel: int) -> None:
    """``packed.popcount`` and ``packed_intersection_count`` take ``ones.and_ones`` once numba runs: the same
    counts as numpy's, whole 64-bit words and a tail of bytes alike."""
    from submask.algebra import packed_intersection_count
    from submask.ones import compiled_and_ones
    from submask.packed import popcount

    a, b = bits(numel, 0.3, seed=1), bits(numel, 0.6, seed=2)
    expected = [int(a.sum()), int(b.sum()), int((a & b).sum())]

    def counts() -> tuple[bool, list[int]]:
        packed_a, packed_b = pack(a), pack(b)
        return compiled_and_ones() is not None, [popcount(packed_a), popcount(packed_b),
                                                 packed_intersection_count(packed_a, packed_b)]

    compiled, numpy = run_both(counts)
    assert compiled == (True, expected) and numpy == (False, expected)
