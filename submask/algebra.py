"""Set algebra and overlap metrics on masks, computed on packed bits (pure functions, no I/O).

Operators take two ``TensorMask`` or two ``Mask`` objects and return the same type; counts
(``intersection_count``, ``pair_stats``) never materialise the result.

>>> a = Mask.from_numpy({"w": np.array([1, 1, 0, 0], bool)})
>>> b = Mask.from_numpy({"w": np.array([1, 0, 1, 0], bool)})
>>> intersection(a, b)["w"].to_numpy()
array([ True, False, False, False])
>>> s = pair_stats(a, b)
>>> s.intersection, s.overlap_a, s.jaccard, s.chance_jaccard
(1, 0.5, 0.3333333333333333, 0.3333333333333333)

Undefined ratios (0/0: an overlap with an empty mask, the Jaccard index of two empty masks, a chance
value at density 0) are ``nan``, never 0, so that "no overlap" and "nothing to overlap" stay apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .accel import Kernel, popcount
from .align import aligned_names
from .mask import Mask, TensorMask, check_same_shape, combine
from .ones import compiled_and_ones
from .packed import BINARY_OPS as BINARY_OPS  # re-exported: part of the algebra's face
from .packed import CHUNK_BYTES
from .packed import apply_op as apply_op  # re-exported

M = TypeVar("M", TensorMask, Mask)




def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or nan when the denominator is 0."""
    return numerator / denominator if denominator else math.nan


def chance_jaccard(p: float, q: float) -> float:
    """Expected Jaccard index of independent random masks of densities ``p`` and ``q``: pq / (p + q - pq).

    Over one tensor this is the (stratified) chance value; given two whole-model densities, the model-wide one.

    >>> round(chance_jaccard(0.2, 0.2), 4)
    0.1111
    """
    return ratio(p * q, p + q - p * q)


@dataclass(frozen=True)
class Counts:
    """Set elements out of all elements, for one mask over some tensors."""

    numel: int
    count: int

    @property
    def density(self) -> float:
        """Fraction set; 0.0 over no elements."""
        return self.count / self.numel if self.numel else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.numel + other.numel, self.count + other.count)


@dataclass(frozen=True)
class PairStats:
    """How two masks A and B overlap over some tensors, with the values chance would give.

    Two chance baselines, both "random masks with the same number of set entries":

    - ``chance_*`` (the default, **stratified**): each mask keeps its own count *in each tensor*; the expected
      |A and B| is ``chance_intersection`` = sum over tensors of count_a * count_b / numel. A ratio of 1 means
      the masks overlap no more than their per-tensor densities alone make them.
    - ``global_chance_*`` (**model-wide**, the RL-subnetworks paper's App. E: "uniformly selecting the same
      number of parameters" anywhere in the model): expected |A and B| = count_a * count_b / numel over all the
      tensors, so the chance overlap A->B is B's density. It ignores that some tensors change far more than
      others, so its ratios come out larger.

    Stats over disjoint groups of tensors add up with ``+``.
    """

    numel: int
    count_a: int
    count_b: int
    intersection: int
    chance_intersection: float

    @classmethod
    def of_counts(cls, numel: int, count_a: int, count_b: int, intersection: int) -> PairStats:
        """Stats of one tensor (the stratified baseline of one tensor is its model-wide baseline)."""
        return cls(numel, count_a, count_b, intersection, count_a * count_b / numel if numel else 0.0)

    def __add__(self, other: PairStats) -> PairStats:
        return PairStats(self.numel + other.numel, self.count_a + other.count_a, self.count_b + other.count_b,
                         self.intersection + other.intersection,
                         self.chance_intersection + other.chance_intersection)

    @property
    def union(self) -> int:
        return self.count_a + self.count_b - self.intersection

    @property
    def density_a(self) -> float:
        return self.count_a / self.numel if self.numel else 0.0

    @property
    def density_b(self) -> float:
        return self.count_b / self.numel if self.numel else 0.0

    @property
    def overlap_a(self) -> float:
        """|A and B| / |A|: the share of A also in B (the paper's o1); nan when A is empty."""
        return ratio(self.intersection, self.count_a)

    @property
    def overlap_b(self) -> float:
        """|A and B| / |B| (the paper's o2); nan when B is empty."""
        return ratio(self.intersection, self.count_b)

    @property
    def jaccard(self) -> float:
        """|A and B| / |A or B|; nan when both are empty."""
        return ratio(self.intersection, self.union)

    @property
    def chance_overlap_a(self) -> float:
        """Stratified chance value of ``overlap_a`` (each tensor keeps its own counts); nan when A is empty."""
        return ratio(self.chance_intersection, self.count_a)

    @property
    def chance_overlap_b(self) -> float:
        """Stratified chance value of ``overlap_b``; nan when B is empty."""
        return ratio(self.chance_intersection, self.count_b)

    @property
    def chance_jaccard(self) -> float:
        """Stratified chance Jaccard (the ratio of the expected counts)."""
        return ratio(self.chance_intersection, self.count_a + self.count_b - self.chance_intersection)

    @property
    def jaccard_ratio(self) -> float:
        """``jaccard`` / stratified ``chance_jaccard``: 1 is what chance gives, above 1 more overlap."""
        return ratio(self.jaccard, self.chance_jaccard)

    @property
    def global_chance_intersection(self) -> float:
        """Model-wide chance |A and B|: count_a * count_b / numel over all the tensors (the paper's baseline)."""
        return self.count_a * self.count_b / self.numel if self.numel else 0.0

    @property
    def global_chance_overlap_a(self) -> float:
        """Model-wide chance value of ``overlap_a``: B's density (the paper's O1,random = 1 - s2)."""
        return self.density_b if self.count_a else math.nan

    @property
    def global_chance_overlap_b(self) -> float:
        """Model-wide chance value of ``overlap_b``: A's density (the paper's O2,random = 1 - s1)."""
        return self.density_a if self.count_b else math.nan

    @property
    def global_chance_jaccard(self) -> float:
        """Model-wide chance Jaccard, pq / (p + q - pq) from the total densities."""
        return chance_jaccard(self.density_a, self.density_b)

    @property
    def global_jaccard_ratio(self) -> float:
        """``jaccard`` / ``global_chance_jaccard``."""
        return ratio(self.jaccard, self.global_chance_jaccard)

    def as_dict(self) -> dict[str, float | int]:
        """The counts and every derived metric, for JSON/CSV output (``chance_*``: stratified)."""
        return {name: getattr(self, name) for name in PAIR_FIELDS}


#: The fields of ``PairStats.as_dict`` (every compare --json/--csv row), in order.
PAIR_FIELDS = ("numel", "count_a", "count_b", "intersection", "union", "density_a", "density_b", "overlap_a",
               "overlap_b", "jaccard", "chance_intersection", "chance_overlap_a", "chance_overlap_b",
               "chance_jaccard", "jaccard_ratio", "global_chance_intersection", "global_chance_overlap_a",
               "global_chance_overlap_b", "global_chance_jaccard", "global_jaccard_ratio")


def intersection_count(a: M, b: M, *, common: bool = False) -> int:
    """|A and B| without building A and B: chunked AND + popcount on the packed bits."""
    if isinstance(a, TensorMask) and isinstance(b, TensorMask):
        check_same_shape(a, b)
        return packed_intersection_count(a.packed, b.packed)
    return sum(intersection_count(a[name], b[name]) for name in aligned_names([a.shapes, b.shapes], common=common))


def packed_intersection_count(a: np.ndarray, b: np.ndarray) -> int:
    """Set bits of ``a & b`` for two packed arrays of the same length: one compiled pass where numba runs
    (``ones``), else numpy in cache-sized chunks."""
    kernel = compiled_and_ones()
    if kernel is not None:
        return int(kernel(a, b))
    total = 0
    words = a.size // 8 * 8
    buffer = np.empty(CHUNK_BYTES // 8, dtype=np.uint64)
    for start in range(0, words, CHUNK_BYTES):
        stop = min(start + CHUNK_BYTES, words)
        out = buffer[: (stop - start) // 8]
        np.bitwise_and(a[start:stop].view(np.uint64), b[start:stop].view(np.uint64), out=out)
        total += int(np.bitwise_count(out).sum(dtype=np.int64))
    if a.size > words:
        total += int(np.bitwise_count(a[words:] & b[words:]).sum(dtype=np.int64))
    return total


def pair_intersection_counts(packed: Sequence[np.ndarray]) -> np.ndarray:
    """N x N matrix of |Mi and Mj| for N packed arrays of one length (|Mi| on the diagonal): with the compiled
    kernel, every pair in one pass over the N arrays; else pair by pair."""
    n = len(packed)
    kernel = _pair_counts.compiled
    out = np.zeros((n, n), np.int64)
    if kernel is not None:
        nbytes = packed[0].size
        words = np.zeros((n, -(-nbytes // 8) * 8), np.uint8)  # whole 64-bit words, zero-padded
        for row, bits in zip(words, packed):
            row[:nbytes] = bits
        kernel(words.view(np.int64), out)
    else:
        for i in range(n):
            for j in range(i, n):
                out[i, j] = packed_intersection_count(packed[i], packed[j])
    return np.triu(out) + np.triu(out, 1).T


@Kernel
def _pair_counts(words, out):  # pragma: no cover - compiled by numba
    """out[i, j] (i <= j) = set bits of ``words[i] & words[j]``, the rows' words read in blocks that stay in
    the L1 cache while every pair is counted."""
    n, size = words.shape
    for start in range(0, size, 512):
        stop = min(start + 512, size)
        for i in range(n):
            for j in range(i, n):
                total = 0
                for w in range(start, stop):
                    total += popcount(words[i, w] & words[j, w])
                out[i, j] += total


def pair_stats(a: M, b: M, *, common: bool = False) -> PairStats:
    """Counts, overlaps, Jaccard and chance baselines of two masks (see ``PairStats``)."""
    if isinstance(a, TensorMask) and isinstance(b, TensorMask):
        return PairStats.of_counts(a.numel, a.count, b.count, intersection_count(a, b))
    names = aligned_names([a.shapes, b.shapes], common=common)
    return sum((pair_stats(a[name], b[name]) for name in names), PairStats(0, 0, 0, 0, 0.0))


def overlap(a: M, b: M, *, common: bool = False) -> float:
    """|A and B| / |A|, the share of A's elements also set in B; nan when A is empty."""
    return pair_stats(a, b, common=common).overlap_a


def jaccard(a: M, b: M, *, common: bool = False) -> float:
    """|A and B| / |A or B|; nan when both are empty."""
    return pair_stats(a, b, common=common).jaccard


def intersection(a: M, b: M, *, common: bool = False) -> M:
    """A and B."""
    return combine("and", [a, b], common=common)


def union(a: M, b: M, *, common: bool = False) -> M:
    """A or B."""
    return combine("or", [a, b], common=common)


def difference(a: M, b: M, *, common: bool = False) -> M:
    """A and not B."""
    return combine("diff", [a, b], common=common)


def symmetric_difference(a: M, b: M, *, common: bool = False) -> M:
    """A xor B."""
    return combine("xor", [a, b], common=common)


def complement(a: M) -> M:
    """Not A (pad bits stay clear)."""
    return combine("not", [a])
