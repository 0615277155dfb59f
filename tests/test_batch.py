"""Intersection counts of many tensor pairs in one compiled call (submask.codecs.batch), against numpy bools;
malformed payloads flagged, and ``compare`` routing two files' raw and rice tensors through it."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path

import numpy as np
import pytest

import submask
from submask.accel import numba_enabled
from submask.codecs import batch
from submask.codecs.batch import RAW, RICE
from submask.format.tensors import encode_tensor
from submask.packed import pack

pytest.importorskip("numba")
pytestmark = pytest.mark.skipif(not numba_enabled(), reason="SUBMASK_NO_NUMBA is set: no compiled kernels")

compare_module = importlib.import_module("submask.compare")
# (bits, density A, density B, rice block bits): pad bits, several blocks, blocks listing zeros, empty and full
CASES = [(77, 0.3, 0.6, 8), (5003, 0.002, 0.05, 64), (5003, 0.97, 0.5, 1000), (70_001, 0.01, 0.9, 1 << 22),
         (64, 0.0, 1.0, 64), (0, 0.0, 0.0, 8), (1 << 16, 0.5, 0.5, 1 << 12)]


def payload(bools: np.ndarray, kind: int, block_bits: int) -> tuple[bytes, int, int]:
    """(payload, kind, rice block bits or 0) of ``bools`` encoded as ``kind``."""
    encoding, config = ("rice", {"block_bits": block_bits}) if kind == RICE else ("raw", {})
    _, data = encode_tensor("w", bools.shape, pack(bools), int(bools.sum()), encoding, config)
    return data, kind, block_bits if kind == RICE else 0


def table_of(pairs: list[tuple[tuple[bytes, int, int], tuple[bytes, int, int]]],
             bits: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two payload buffers and the table of ``pair_counts`` for (payload, kind, block bits) pairs."""
    data, rows, offsets = [bytearray(), bytearray()], [], [0, 0]
    for numel, sides in zip(bits, pairs):
        row = [numel]
        for side, (blob, kind, block_bits) in enumerate(sides):
            row += [kind, offsets[side], offsets[side] + len(blob), block_bits]
            data[side] += blob
            offsets[side] += len(blob)
        rows.append(row)
    return np.frombuffer(data[0], np.uint8).copy(), np.frombuffer(data[1], np.uint8).copy(), np.array(rows)


@pytest.mark.parametrize("kinds", [(RICE, RICE), (RAW, RICE), (RICE, RAW), (RAW, RAW)])
def test_pair_counts_match_numpy(kinds: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(kinds))
    pairs, bits, expected, packed = [], [], [], ([], [])
    for numel, density_a, density_b, block_bits in CASES:
        a, b = rng.random(numel) < density_a, rng.random(numel) < density_b
        pairs.append((payload(a, kinds[0], block_bits), payload(b, kinds[1], block_bits)))
        bits.append(numel)
        expected.append([int(np.sum(a & b)), int(a.sum()), int(b.sum())])
        for side, (bools, kind) in enumerate(zip((a, b), kinds)):  # a raw payload's bits are not copied
            packed[side].append(pack(bools) if kind == RICE else np.full(pack(bools).size, 0xAA, np.uint8))
    assert batch.available()
    np.testing.assert_array_equal(batch.pair_counts(*table_of(pairs, bits)), expected)
    kept = tuple(np.full(sum(p.size for p in side), 0xAA, np.uint8) for side in packed)
    np.testing.assert_array_equal(batch.pair_counts(*table_of(pairs, bits), kept), expected)  # rice bits kept
    for side in (0, 1):
        np.testing.assert_array_equal(kept[side], np.concatenate(packed[side]))


def test_pair_counts_flag_malformed_payloads() -> None:
    bools = np.random.default_rng(1).random(5003) < 0.05
    good = payload(bools, RICE, 1024)
    rice, raw, full = good[0], payload(bools, RAW, 0)[0], payload(np.ones(77, bool), RAW, 0)
    bad = {  # problem: (bits, bad payload, a good one of the same bits)
        "rice cut short": (5003, (rice[:-3], RICE, 1024), good),
        "rice with a trailing byte": (5003, (rice + b"\0", RICE, 1024), good),
        "rice block value 2": (5003, (bytes([2]) + rice[1:], RICE, 1024), good),
        "rice unary code zeroed": (5003, (rice[:12] + bytes(8) + rice[20:], RICE, 1024), good),
        "raw one byte short": (5003, (raw[:-1], RAW, 0), good),
        "raw pad bit set": (77, (full[0][:-1] + b"\xff", RAW, 0), full),
    }
    for problem, (numel, broken, sound) in bad.items():
        size = (numel + 7) // 8 + (bools.size + 7) // 8
        for pair, kept in itertools.product(((broken, sound), (sound, broken)), (False, True)):
            bits = (np.empty(size, np.uint8), np.empty(size, np.uint8)) if kept else None
            counts = batch.pair_counts(*table_of([pair, (good, good)], [numel, bools.size]), bits)
            assert counts[0].tolist() == [-1, -1, -1], problem
            assert counts[1].tolist() == [int(bools.sum())] * 3  # the next row is counted as ever


def test_pair_counts_clear_the_first_masks_bits_after_every_row() -> None:
    """Without kept bits, A's bits are set in one scratch and cleared after each row: one by one by the
    positions a sparse payload noted, or by filling (a block listing zeros, more positions than the room for
    them, a dense payload), also after a row whose B fails its checks. An empty A counted against an all-ones
    B right after each shows any bit left behind."""
    numel, block_bits = 1 << 20, 1 << 22
    rng = np.random.default_rng(7)
    run = np.zeros(numel, bool)
    run[1000:31000] = True  # a short payload (k = 0) listing more positions than the room holds
    listing_zeros = np.ones(numel, bool)
    listing_zeros[::3000] = False
    firsts = {"sparse": rng.random(numel) < 0.001, "run": run, "listing zeros": listing_zeros,
              "dense": rng.random(numel) < 0.3}
    ones, empty = payload(np.ones(numel, bool), RAW, 0), payload(np.zeros(numel, bool), RICE, block_bits)
    short = (ones[0][:-1], RAW, 0)
    pairs, expected = [], []
    for bools in firsts.values():
        a = payload(bools, RICE, block_bits)
        pairs += [(a, ones), (empty, ones), (a, short), (empty, ones)]
        expected += [[int(bools.sum()), int(bools.sum()), numel], [0, 0, numel], [-1, -1, -1], [0, 0, numel]]
    for first in (0, 4, 8):  # sparse, run and listing zeros take the path that notes positions
        assert len(pairs[first][0][0]) * batch.SPARSE_RATIO < numel // 8
    counts = batch.pair_counts(*table_of(pairs, [numel] * len(pairs)))
    np.testing.assert_array_equal(counts, expected)


def test_compare_counts_two_files_raw_and_rice_in_one_call(tmp_path: Path) -> None:
    shapes = {"a": (3001, 7), "b": (64, 64), "c": (1000, 10), "d": (3, 3)}
    densities = [{"a": 0.01, "b": 0.5, "c": 0.22, "d": 0.9}, {"a": 0.2, "b": 0.02, "c": 0.25, "d": 0.1}]
    rng = np.random.default_rng(5)
    arrays = [{n: rng.random(s) < d[n] for n, s in shapes.items()} for d in densities]
    paths = [tmp_path / "one.smask", tmp_path / "two.smask"]
    for path, bools in zip(paths, arrays):
        submask.save(submask.Mask.from_numpy(bools), path)
    with submask.open(paths[0]) as one, submask.open(paths[1]) as two:
        encodings = [(one.entries[n].encoding, two.entries[n].encoding) for n in shapes]
        sources = [compare_module._Source(str(p), f) for p, f in zip(paths, (one, two))]
        chunk = compare_module._read_chunk(sources, list(shapes), lambda nbytes: np.empty(nbytes, np.uint8))
    assert encodings == [("rice", "zstd"), ("raw", "rice"), ("zstd", "zstd"), ("raw", "raw")]
    batched = [reads is None for reads in chunk.reads]
    assert batched == ["zstd" not in pair for pair in encodings] and len(chunk.table) == sum(batched)
    result = submask.compare(paths, by="tensor", verify=False)
    for name in shapes:
        stats = result.pair(0, 1, name)
        expected = (arrays[0][name].sum(), arrays[1][name].sum(), np.sum(arrays[0][name] & arrays[1][name]))
        assert (stats.count_a, stats.count_b, stats.intersection) == expected


@pytest.mark.parametrize("verify", [True, False])
def test_group_counts_of_several_files_match_numpy(tmp_path: Path, verify: bool) -> None:
    rng = np.random.default_rng(11)
    shapes = {"w": (97, 31), "v": (64, 64), "u": (5,)}
    arrays = [{name: rng.random(shape) < density for name, shape in shapes.items()}
              for density in (0.01, 0.3, 0.6, 0.05)]
    paths = [tmp_path / f"m{i}.smask" for i in range(len(arrays))]
    for path, bools in zip(paths, arrays):
        submask.save(submask.Mask.from_numpy(bools), path)
    result = submask.compare(paths, by="tensor", verify=verify)
    for i, j in itertools.combinations(range(len(paths)), 2):
        for name in shapes:
            assert result.pair(i, j, name).intersection == np.sum(arrays[i][name] & arrays[j][name])
