"""``encode_auto`` chooses, and writes, what encoding every candidate and applying FORMAT.md §5.4's rule would:
over densities on both sides of each threshold, 1-D and 2-D shapes, row and column patterns, 2:4 sparsity,
empty and full tensors, with and without the compiled kernels."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import pytest

from submask.accel import numba_disabled
from submask.codecs import RAW_MARGIN, ZSTD_PREFERENCE, RiceRowsCodec, encode_auto, get_codec
from submask.codecs.rows_encode import row_counts
from submask.packed import pack

DENSITIES = [0.0, 1e-5, 0.001, 0.0029, 0.0031, 0.01, 0.05, 0.15, 0.199, 0.201, 0.3, 0.42, 0.5, 0.58, 0.8, 0.97,
             0.999, 1.0]
SHAPES = [(1,), (7,), (9,), (4095,), (4097,), (20_000,), (64, 64), (3, 100), (100, 3), (96, 768), (200, 4096),
          (7, 65_537), (2, 3, 128)]


def brute_force(bools: np.ndarray) -> tuple[str, bytes, dict[str, Any]]:
    """Every candidate encoded by its codec, then the rule of §5.4 applied to their sizes."""
    numel, ones = bools.size, int(bools.sum())
    packed = pack(bools.ravel())
    minority = min(ones, numel - ones) / numel if numel else 0.0
    candidates = [("raw", *get_codec("raw").encode(packed, numel))]
    if minority < 0.2:
        candidates.append(("rice", *get_codec("rice").encode(packed, numel)))
    rows = RiceRowsCodec().for_shape(bools.shape)
    if numel > rows.row_bits:
        cut = np.zeros(-(-numel // rows.row_bits) * rows.row_bits, dtype=np.int64)
        cut[:numel] = bools.ravel()
        counts = cut.reshape(-1, rows.row_bits).sum(axis=1)
        lengths = np.minimum(rows.row_bits, numel - np.arange(counts.size) * rows.row_bits)
        if np.minimum(counts, lengths - counts).sum() < 0.2 * numel:
            candidates.append(("rice-rows", *rows.encode(packed, numel)))
    if minority >= 0.003:
        candidates.append(("zstd", *get_codec("zstd").encode(packed, numel)))
    sizes = [len(payload) for _, payload, _ in candidates]
    best = candidates[sizes.index(min(sizes))]
    zstd = candidates[-1] if candidates[-1][0] == "zstd" else None
    if best[0] != "raw" and zstd is not None and len(zstd[1]) * ZSTD_PREFERENCE <= len(best[1]):
        best = zstd
    if best[0] == "zstd" and len(best[1]) > (1 - RAW_MARGIN) * len(candidates[0][1]):
        best = candidates[0]
    return best


def masks(shape: tuple[int, ...], density: float, seed: int) -> dict[str, np.ndarray]:
    """iid bits, whole rows, whole columns and 2:4 patterns (two of every four kept, then thinned or filled)."""
    rng = np.random.default_rng(seed)
    numel = int(np.prod(shape))
    last = shape[-1]
    iid = rng.random(shape) < density
    rows = np.broadcast_to(rng.random((*shape[:-1], 1)) < density, shape)
    columns = np.broadcast_to(rng.random(last) < density, shape)
    two_of_four = np.zeros(-(-numel // 4) * 4, dtype=bool).reshape(-1, 4)
    picks = np.argsort(rng.random(two_of_four.shape), axis=1)[:, :2]
    np.put_along_axis(two_of_four, picks, True, axis=1)
    two_of_four = two_of_four.ravel()[:numel].reshape(shape)
    thinned = two_of_four & (rng.random(shape) < 2 * density) if density <= 0.5 else \
        two_of_four | (rng.random(shape) < 2 * density - 1)
    return {"iid": iid, "rows": np.ascontiguousarray(rows), "columns": np.ascontiguousarray(columns),
            "2:4": thinned}


def cases() -> list[tuple[tuple[int, ...], float, str, np.ndarray]]:
    found = []
    for index, shape in enumerate(SHAPES):
        for density in DENSITIES:
            for pattern, bools in masks(shape, density, index).items():
                found.append((shape, density, pattern, bools))
    return found


CASES = cases()


@pytest.mark.parametrize("compiled", [True, False])
def test_the_choice_and_payload_are_those_of_encoding_every_candidate(compiled: bool) -> None:
    chosen = set()
    for shape, density, pattern, bools in CASES:
        packed = pack(bools.ravel())
        with nullcontext() if compiled else numba_disabled():
            got = encode_auto(packed, bools.size, int(bools.sum()), shape)
            expected = brute_force(bools)
        assert (got[0], got[2]) == (expected[0], expected[2]), (shape, density, pattern)
        assert got[1] == expected[1], (shape, density, pattern)
        chosen.add(got[0])
    assert chosen == {"raw", "rice", "rice-rows", "zstd"}  # every outcome is checked


def test_row_counts_by_words_equal_the_counts_of_the_bits() -> None:
    """Rows of whole 64-bit words are counted by words, from any alignment of the packed bytes, a short last
    row included; other row lengths by bytes."""
    rng = np.random.default_rng(5)
    for numel, row_bits in [(64, 64), (65, 64), (4096 * 3 + 17, 4096), (768 * 40, 768), (1000, 100), (999, 96)]:
        bools = rng.random(numel) < 0.3
        cut = np.zeros(-(-numel // row_bits) * row_bits, dtype=np.int64)
        cut[:numel] = bools
        expected = cut.reshape(-1, row_bits).sum(axis=1).tolist()
        packed = pack(bools)
        shifted = np.empty(packed.size + 1, dtype=np.uint8)[1:]  # not 8-byte aligned
        shifted[:] = packed
        for bits in (packed, shifted):
            assert row_counts(bits, numel, row_bits).tolist() == expected, (numel, row_bits)

