"""Set bits of packed arrays and of the AND of two, in one compiled pass where numba already runs.

numpy's ``bitwise_count`` makes a byte per 64-bit word and sums them: two passes and a temporary. The kernel
here counts 64 bits at a time in one pass, 4-5x faster on a 512 KiB tensor. ``packed.popcount`` and
``algebra.packed_intersection_count`` take it only when numba is already running in the process (a job large
enough to start it, see ``accel.job``), so a small command never starts numba to count bits; the counts are
identical either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .accel import Kernel, numba_started, popcount


def compiled_and_ones() -> Any:
    """The compiled ``and_ones(a, b)`` when numba runs in this process, else None (use numpy)."""
    return and_ones.compiled if numba_started() else None


@Kernel
def and_ones(a, b):  # pragma: no cover - compiled by numba
    """Set bits of ``a & b`` (uint8 arrays of one length; ``a`` twice: its own set bits), 64 bits at a time."""
    words = a.size // 8
    total = 0
    if words:
        wa, wb = a[: 8 * words].view(np.uint64), b[: 8 * words].view(np.uint64)
        for index in range(words):
            total += popcount(wa[index] & wb[index])
    for index in range(8 * words, a.size):
        total += popcount(np.uint64(a[index] & b[index]))
    return total
