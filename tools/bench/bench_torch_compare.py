"""The torch backend's ``compare`` against its code at an earlier revision, in one process (issue 13).

    python -m tools.bench.bench_torch_compare [--baseline fbe5e1d] [--elements 16777216] [--repeats 3]

One bf16 chunk pair (torch tensors, as a device-resident build hands them over), 1%, 25% and 100% of the
values moved by one ulp; the exact criterion with and without the tolerance ladder, and atol with it. The
baseline is ``TorchBackend`` as ``submask/builder/backends.py`` was at ``--baseline`` (loaded from git), timed
alternately with today's on the same tensors; both must give the same bits and counts. The numpy path
(``device="cpu"``) and a copy of both chunks are measured beside them. Runs on CUDA when there is one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from submask.builder.backends import NumpyBackend, TorchBackend
from submask.builder.criteria import Criterion
from submask.checkpoints.dtypes import DTYPES

from .baseline import module_at, time_alternately
from .bench_gpu import best_of, resident_pair
from .report import markdown_table, write_section

GB = 10**9
BF16 = DTYPES["BF16"]
DENSITIES = (0.01, 0.25, 1.0)
SETTINGS = {"exact, no ladder": (Criterion.make(), False), "exact + ladder (default)": (Criterion.make(), True),
            "atol 1e-5 + ladder": (Criterion.make(atol=1e-5), True)}


def chunk_pair(numel: int, changed: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw bf16 elements (int16 views) of bench_gpu's resident pair: ``changed`` of them moved by one ulp."""
    base, finetuned = resident_pair(2 * numel, device, changed)
    assert len(base) == 1, "one tensor per side: at most bench_gpu.TENSOR_ELEMENTS elements"
    return next(iter(base.values())).view(torch.int16), next(iter(finetuned.values())).view(torch.int16)


def measure(a: torch.Tensor, b: torch.Tensor, old: object, new: TorchBackend, repeats: int,
            sync: Callable[[], None]) -> list[list[str]]:
    """One row per criterion setting for the chunk pair ``a``, ``b``."""
    total, numpy_path = 2 * a.nbytes, NumpyBackend()
    host = [side.cpu().numpy().view(np.uint16) for side in (a, b)]
    copy = torch.empty_like(a)
    copy_time = best_of(lambda: (copy.copy_(a), copy.copy_(b)), repeats, sync)
    rows = []
    for setting, (criterion, ladder) in SETTINGS.items():
        runs = {"baseline": partial(old.compare, a, b, BF16, criterion, ladder),
                "new": partial(new.compare, a, b, BF16, criterion, ladder)}
        results = {name: run() for name, run in runs.items()}
        assert results["new"].packed.tolist() == results["baseline"].packed.tolist()
        assert (results["new"].ones, results["new"].ladder) == (results["baseline"].ones, results["baseline"].ladder)
        times = time_alternately(runs, repeats, sync)  # each ran once above: warmed up
        numpy_time = best_of(partial(numpy_path.compare, *host, BF16, criterion, ladder), repeats, sync)
        rows.append([setting, f"{total / times['baseline'] / GB:.3f}", f"{total / times['new'] / GB:.3f}",
                     f"{times['baseline'] / times['new']:.1f}x", f"{copy_time / times['new']:.3f}",
                     f"{total / numpy_time / GB:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="fbe5e1d", help="git revision of the baseline backend")
    parser.add_argument("--elements", type=int, default=1 << 24, help="elements per chunk (per side)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    old, new = module_at(args.baseline, "submask/builder/backends.py").TorchBackend(device), TorchBackend(device)
    rows = []
    for density in DENSITIES:
        for row in measure(*chunk_pair(args.elements, density, device), old, new, args.repeats, sync):
            rows.append([f"{density:.0%}", *row])
            print(" | ".join(rows[-1]), flush=True)

    body = "\n\n".join([
        (f"One bf16 chunk pair of {args.elements:,} elements per side as torch tensors on the {device}, best of "
         f"{args.repeats}; GB/s counts the bytes of both sides. `baseline` is the torch backend at "
         f"{args.baseline}, timed alternately with today's in the same process (same bits and counts checked); "
         "`new / copy` is today's time against a copy of both chunks on the same device; the numpy path's "
         "figure is on host arrays."),
        markdown_table(["changed", "criterion", "baseline GB/s", "new GB/s", "new / baseline", "new / copy",
                        "numpy path GB/s"], rows),
    ])
    print(body)
    if not args.no_write:
        write_section("torch-compare", "The torch backend's compare against an earlier revision", body,
                      "python -m tools.bench.bench_torch_compare " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
