"""Set operators and metrics: against plain numpy bool arithmetic, algebra identities, chance baselines
against Monte Carlo, edge cases (empty, full, zero-size) and mismatch errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from masks import random_bools

import submask
from submask import Mask, MaskMetadata, MismatchError, TensorMask
from submask.algebra import (
    PairStats,
    chance_jaccard,
    combine,
    complement,
    difference,
    intersection,
    intersection_count,
    jaccard,
    overlap,
    pair_stats,
    symmetric_difference,
    union,
)
from submask.packed import padding_is_clear

SHAPES = {"a.weight": (37, 41), "b.weight": (1000,), "c.bias": (3, 5, 7), "empty": (0, 4)}


def random_mask(density: float, seed: int, shapes: dict = SHAPES) -> dict[str, np.ndarray]:
    return random_bools(shapes, density, seed)


@pytest.mark.parametrize("p,q", [(0.01, 0.02), (0.2, 0.7), (0.5, 0.5), (0.99, 0.05)])
def test_metrics_match_numpy_bools(p: float, q: float) -> None:
    arrays_a, arrays_b = random_mask(p, 1), random_mask(q, 2)
    a, b = Mask.from_numpy(arrays_a), Mask.from_numpy(arrays_b)
    flat_a = np.concatenate([x.ravel() for x in arrays_a.values()])
    flat_b = np.concatenate([x.ravel() for x in arrays_b.values()])
    both = int(np.sum(flat_a & flat_b))
    stats = pair_stats(a, b)
    assert (stats.numel, stats.count_a, stats.count_b) == (flat_a.size, flat_a.sum(), flat_b.sum())
    assert stats.intersection == both == intersection_count(a, b)
    assert stats.union == int(np.sum(flat_a | flat_b))
    assert stats.overlap_a == pytest.approx(both / flat_a.sum()) == overlap(a, b)
    assert stats.overlap_b == pytest.approx(both / flat_b.sum()) == overlap(b, a)
    assert stats.jaccard == pytest.approx(both / np.sum(flat_a | flat_b)) == jaccard(a, b)
    pa, pb = flat_a.mean(), flat_b.mean()
    assert stats.global_chance_overlap_a == pytest.approx(pb)
    assert stats.global_chance_jaccard == pytest.approx(pa * pb / (pa + pb - pa * pb))
    assert stats.global_jaccard_ratio == pytest.approx(stats.jaccard / stats.global_chance_jaccard)
    assert stats.global_chance_intersection == pytest.approx(flat_a.sum() * flat_b.sum() / flat_a.size)
    expected = sum(arrays_a[n].sum() * arrays_b[n].sum() / arrays_a[n].size for n in SHAPES if arrays_a[n].size)
    assert stats.chance_intersection == pytest.approx(expected)
    # chance_* is the stratified baseline, built from the expected intersection
    assert stats.chance_overlap_a == pytest.approx(expected / flat_a.sum())
    assert stats.chance_overlap_b == pytest.approx(expected / flat_b.sum())
    assert stats.chance_jaccard == pytest.approx(expected / (flat_a.sum() + flat_b.sum() - expected))
    assert stats.jaccard_ratio == pytest.approx(stats.jaccard / stats.chance_jaccard)
    for op, reference in [(intersection, np.logical_and), (union, np.logical_or),
                          (symmetric_difference, np.logical_xor), (difference, lambda x, y: x & ~y)]:
        result = op(a, b)
        for name in SHAPES:
            np.testing.assert_array_equal(result[name].to_numpy(), reference(arrays_a[name], arrays_b[name]))
    for name in SHAPES:
        np.testing.assert_array_equal(complement(a)[name].to_numpy(), ~arrays_a[name])


def test_python_operators_delegate_to_algebra() -> None:
    a, b = Mask.from_numpy(random_mask(0.3, 3)), Mask.from_numpy(random_mask(0.6, 4))
    assert (a & b)["a.weight"] == intersection(a, b)["a.weight"]
    assert (a | b).count == union(a, b).count
    assert (a ^ b).count == symmetric_difference(a, b).count
    assert (a - b).count == difference(a, b).count
    assert (~a).count == a.numel - a.count
    assert (a["b.weight"] & b["b.weight"]).count == intersection_count(a["b.weight"], b["b.weight"])


bool_arrays = st.integers(0, 300).flatmap(lambda n: st.tuples(
    st.lists(st.booleans(), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n)))


@settings(max_examples=80, deadline=None)
@given(bool_arrays)
def test_identities(pair: tuple[list[bool], list[bool]]) -> None:
    a, b = TensorMask.from_numpy(np.array(pair[0], bool)), TensorMask.from_numpy(np.array(pair[1], bool))
    assert (a | b).count == a.count + b.count - intersection_count(a, b)
    assert ~(a & b) == (~a | ~b)
    assert ~(a | b) == (~a & ~b)
    assert (a ^ b) == (a | b) - (a & b)
    assert ~~a == a
    assert padding_is_clear((~a).packed, a.numel)
    stats = pair_stats(a, b)
    assert stats.union == (a | b).count
    if stats.union:
        assert 0.0 <= stats.jaccard <= min(stats.overlap_a if a.count else 1, stats.overlap_b if b.count else 1)


def test_model_wide_chance_matches_monte_carlo() -> None:
    """Random masks with the same total counts, placed anywhere in the model (the paper's baseline)."""
    rng = np.random.default_rng(5)
    numel, count_a, count_b = 20_000, 1_500, 6_000
    draws = [np.zeros(numel, bool) for _ in range(2)]
    jaccards, overlaps = [], []
    for _ in range(300):
        for draw, count in zip(draws, (count_a, count_b)):
            draw[:] = False
            draw[rng.choice(numel, count, replace=False)] = True
        both = np.sum(draws[0] & draws[1])
        jaccards.append(both / np.sum(draws[0] | draws[1]))
        overlaps.append(both / count_a)
    stats = PairStats.of_counts(numel, count_a, count_b, 0)
    # the standard error of the means is about 3e-4 here; the closed form is exact to O(1/numel)
    assert np.mean(overlaps) == pytest.approx(stats.global_chance_overlap_a, abs=2e-3)
    assert np.mean(jaccards) == pytest.approx(stats.global_chance_jaccard, abs=2e-3)


def test_stratified_chance_matches_monte_carlo() -> None:
    """Random masks keeping each tensor's own count: expected intersection is the sum of c_a c_b / n."""
    rng = np.random.default_rng(6)
    tensors = [(4000, 40, 2000), (8000, 3000, 100), (500, 250, 250)]  # (numel, count_a, count_b)
    stats = sum((PairStats.of_counts(n, ca, cb, 0) for n, ca, cb in tensors), PairStats(0, 0, 0, 0, 0.0))
    intersections, jaccards = [], []
    for _ in range(300):
        both = 0
        for n, ca, cb in tensors:
            both += np.intersect1d(rng.choice(n, ca, replace=False), rng.choice(n, cb, replace=False)).size
        intersections.append(both)
        jaccards.append(both / (stats.count_a + stats.count_b - both))
    assert np.mean(intersections) == pytest.approx(stats.chance_intersection, rel=0.02)
    assert np.mean(jaccards) == pytest.approx(stats.chance_jaccard, rel=0.02)
    # A is dense where B is sparse and vice versa, so the model-wide baseline overstates chance here
    assert stats.chance_jaccard < 0.5 * stats.global_chance_jaccard


def test_chance_jaccard_formula() -> None:
    assert chance_jaccard(0.5, 0.5) == pytest.approx(1 / 3)
    assert chance_jaccard(1.0, 0.3) == pytest.approx(0.3)
    assert math.isnan(chance_jaccard(0.0, 0.0))
    assert chance_jaccard(0.0, 0.4) == 0.0


def test_empty_full_and_zero_size_masks() -> None:
    shape = (6, 7)
    empty, full = TensorMask.full(shape, False), TensorMask.full(shape, True)
    half = TensorMask.from_numpy(np.arange(42).reshape(shape) % 2 == 0)
    stats = pair_stats(empty, half)
    assert stats.intersection == 0 and math.isnan(stats.overlap_a) and stats.overlap_b == 0.0
    assert stats.jaccard == 0.0 and stats.chance_jaccard == 0.0 == stats.global_chance_jaccard
    assert math.isnan(pair_stats(empty, empty).jaccard)
    stats = pair_stats(full, half)
    assert stats.intersection == 21 and stats.overlap_a == 0.5 and stats.overlap_b == 1.0
    assert stats.jaccard == 0.5 == stats.chance_jaccard and stats.jaccard_ratio == 1.0 == stats.global_jaccard_ratio
    assert ~full == empty and ~empty == full
    zero = TensorMask.from_numpy(np.zeros((0, 3), bool))
    stats = pair_stats(zero, zero)
    assert (stats.numel, stats.intersection, stats.chance_intersection) == (0, 0, 0.0)
    assert math.isnan(stats.jaccard) and (~zero).count == 0


def test_missing_tensors_and_other_shapes_raise_unless_common() -> None:
    a = Mask.from_numpy(random_mask(0.3, 7))
    fewer = Mask.from_numpy({k: v for k, v in random_mask(0.3, 8).items() if k != "c.bias"})
    with pytest.raises(MismatchError, match=r"c\.bias.*--common"):
        pair_stats(a, fewer)
    with pytest.raises(MismatchError, match="have different tensors"):
        intersection(fewer, a)
    common = pair_stats(a, fewer, common=True)
    assert common.numel == a.numel - a["c.bias"].numel
    assert intersection(a, fewer, common=True).shapes == fewer.shapes
    reshaped = Mask.from_numpy({**random_mask(0.3, 9), "b.weight": np.zeros((10, 100), bool)})
    with pytest.raises(MismatchError, match=r"other shapes or dtypes, e\.g\. \['b\.weight \(1000,\)"):
        pair_stats(a, reshaped, common=True)
    with pytest.raises(MismatchError, match="shapes differ"):
        a["a.weight"] & a["b.weight"]


def test_combine_folds_many_inputs_and_records_provenance() -> None:
    arrays = [random_mask(0.4, seed) for seed in (10, 11, 12)]
    masks = [Mask.from_numpy(x, kind="update", provenance={"run": i}) for i, x in enumerate(arrays)]
    result = combine("diff", masks)
    np.testing.assert_array_equal(result["a.weight"].to_numpy(),
                                  arrays[0]["a.weight"] & ~arrays[1]["a.weight"] & ~arrays[2]["a.weight"])
    assert result.metadata.kind == "update"
    assert result.metadata.provenance == {"combined": {"op": "diff", "inputs": [{"provenance": {"run": i}}
                                                                                for i in range(3)]}}
    mixed = Mask(masks[1].tensors, MaskMetadata(kind="pruning"))
    assert combine("or", [masks[0], mixed]).metadata.kind == "other"
    with pytest.raises(submask.UsageError, match="exactly one"):
        combine("not", masks[:2])
    with pytest.raises(submask.UsageError, match="unknown operation"):
        combine("nand", masks[:2])
