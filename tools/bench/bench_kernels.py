"""The CPU's fused compare kernel against its code at an earlier revision, per float dtype, on one core.

    python -m tools.bench.bench_kernels [--baseline 5a2a734] [--elements 4194304] [--repeats 7]

One chunk pair per dtype (float32, bf16, fp16): weights N(0, 0.02), 1%, 30% or 100% of them moved by a
relative step N(0, 1e-2) (or more, where that would not change the stored value), compared with the exact
criterion and with atol=1e-5, the tolerance ladder on (a build's default). The baseline is
``submask/builder/kernels.py`` as it was at ``--baseline`` (loaded from git), timed alternately with today's on
the same arrays; both must give the same bits and counts. Needs numba.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import numpy as np

from submask.builder import kernels
from submask.builder.criteria import Criterion
from submask.checkpoints.dtypes import DTYPES

from .baseline import module_at, time_alternately
from .report import markdown_table, write_section

GB = 10**9
DENSITIES = (0.01, 0.3, 1.0)
CRITERIA = {"exact": Criterion.make(), "atol 1e-5": Criterion.make(atol=1e-5)}


def chunk_pair(numel: int, changed: float, dtype_name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw elements of a weight chunk and a copy with ``changed`` of its stored values moved."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.02, numel)
    moved = rng.random(numel) < changed
    stepped = weights * (1 + rng.normal(0, 1e-2, numel) * moved)
    if dtype_name == "F32":
        return weights.astype(np.float32).view(np.uint32), stepped.astype(np.float32).view(np.uint32)
    if dtype_name == "F16":
        return weights.astype(np.float16).view(np.uint16), stepped.astype(np.float16).view(np.uint16)
    # bf16: the top half of float32, rounded to nearest even; a moved value steps at least one ulp
    as_bits = [np.asarray(side, np.float32).view(np.uint32) for side in (weights, stepped)]
    rounded = [((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16) for bits in as_bits]
    rounded[1] = np.where(moved & (rounded[1] == rounded[0]), rounded[0] + 1, rounded[1]).astype(np.uint16)
    return rounded[0], rounded[1]


def measure(old: object, elements: int, repeats: int) -> list[list[str]]:
    rows = []
    for dtype_name in ("F32", "BF16", "F16"):
        dtype = DTYPES[dtype_name]
        for density in DENSITIES:
            a, b = chunk_pair(elements, density, dtype_name)
            for label, criterion in CRITERIA.items():
                runs = {"baseline": partial(old.fused_compare, a, b, dtype, criterion, True),
                        "new": partial(kernels.fused_compare, a, b, dtype, criterion, True)}
                results = {name: run() for name, run in runs.items()}  # compiles both, checks they agree
                assert results["new"][1:] == results["baseline"][1:]
                assert np.array_equal(results["new"][0], results["baseline"][0])
                times = time_alternately(runs, repeats)
                total = a.nbytes + b.nbytes
                rows.append([dtype_name, f"{density:.0%}", label, f"{total / times['baseline'] / GB:.2f}",
                             f"{total / times['new'] / GB:.2f}", f"{times['baseline'] / times['new']:.2f}x"])
                print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="5a2a734", help="git revision of the baseline kernels")
    parser.add_argument("--elements", type=int, default=1 << 22, help="elements per chunk (per side)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    args = parser.parse_args()
    if kernels.diff_bits.compiled is None:
        sys.exit("bench_kernels needs numba (pip install 'submask[fast]'), and SUBMASK_NO_NUMBA unset")

    rows = measure(module_at(args.baseline, "submask/builder/kernels.py"), args.elements, args.repeats)
    body = "\n\n".join([
        (f"One chunk pair of {args.elements:,} elements per side per dtype, weights N(0, 0.02), the changed "
         "fraction moved by a relative step N(0, 1e-2); `kernels.fused_compare` with the ladder, on one core "
         f"(the build runs one chunk per worker thread), best of {args.repeats}. GB/s counts the bytes of both "
         f"sides. The baseline is the kernel at {args.baseline}, timed alternately with today's in the same "
         "process on the same arrays (same bits and counts checked)."),
        markdown_table(["dtype", "changed", "criterion", "baseline GB/s", "new GB/s", "new / baseline"], rows),
    ])
    print(body)
    if not args.no_write:
        write_section("kernels", "The fused compare kernel against an earlier revision", body,
                      "python -m tools.bench.bench_kernels " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
