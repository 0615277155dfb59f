"""Jaccard/overlap of two large masks end to end from files: submask vs numpy bools vs pyroaring.

For each density, two independent random masks of ``2^bits`` parameters (split into ``--tensors`` equal
Llama-named tensors) are written three ways, and each contender computes |A|, |B| and |A and B| (hence
overlaps and Jaccard) from its own files:

- submask: ``submask.save`` (default encodings) then ``submask.compare`` (threads: ``--workers``);
- numpy bool: packed bits in one ``.npy`` per mask (np.save of np.packbits), memory-mapped; per tensor
  ``np.unpackbits`` to bools, then ``np.logical_and`` and ``np.count_nonzero``;
- pyroaring: one serialized ``BitMap`` per mask over global positions; read, ``BitMap.deserialize``,
  ``len`` and ``intersection_cardinality``.

Files are read warm (page cache), best of ``--repeat``. Then the 4-mask matrix (6 pairs) at one density is
timed against one pairwise pass.

    .venv/bin/python -m tools.bench.bench_algebra --bits 30 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

import submask
from submask import MaskMetadata, MaskWriter, TensorMask
from submask.accel import numba_disabled, numba_state
from tools.bench.report import markdown_table, write_section

MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp.extra_proj")


def tensor_names(count: int) -> list[str]:
    return [f"model.layers.{i // len(MODULES)}.{MODULES[i % len(MODULES)]}.weight" for i in range(count)]


def write_mask(root: Path, label: str, density: float, bits: int, tensors: int, seed: int) -> dict[str, Path]:
    """Generate one random mask tensor by tensor and write it in the three formats; returns their paths."""
    import pyroaring

    rng = np.random.default_rng(seed)
    per_tensor = (1 << bits) // tensors
    shape = (per_tensor // 2048, 2048)
    paths = {"submask": root / f"{label}.smask", "numpy": root / f"{label}.npy", "roaring": root / f"{label}.roaring"}
    packed_all = np.lib.format.open_memmap(paths["numpy"], mode="w+", dtype=np.uint8, shape=(tensors * per_tensor // 8,))
    roaring = pyroaring.BitMap()
    with MaskWriter(paths["submask"], MaskMetadata(kind="other"), overwrite=True) as writer:
        for index, name in enumerate(tensor_names(tensors)):
            bools = rng.random(per_tensor, dtype=np.float32) < density
            mask = TensorMask.from_numpy(bools.reshape(shape))
            writer.add(name, mask)
            packed_all[index * per_tensor // 8 : (index + 1) * per_tensor // 8] = mask.packed
            roaring.update(np.flatnonzero(bools).astype(np.uint32) + np.uint32(index * per_tensor))
    packed_all.flush()
    del packed_all
    paths["roaring"].write_bytes(roaring.serialize())
    return paths


def run_submask(a: dict[str, Path], b: dict[str, Path], workers: int | None) -> tuple[int, int, int]:
    stats = submask.compare([a["submask"], b["submask"]], workers=workers).pair(0, 1)
    return stats.count_a, stats.count_b, stats.intersection


def run_numpy(a: dict[str, Path], b: dict[str, Path], tensors: int) -> tuple[int, int, int]:
    packed_a, packed_b = np.load(a["numpy"], mmap_mode="r"), np.load(b["numpy"], mmap_mode="r")
    step = packed_a.size // tensors
    count_a = count_b = both = 0
    for start in range(0, packed_a.size, step):
        bools_a = np.unpackbits(packed_a[start : start + step]).view(np.bool_)
        bools_b = np.unpackbits(packed_b[start : start + step]).view(np.bool_)
        count_a += int(np.count_nonzero(bools_a))
        count_b += int(np.count_nonzero(bools_b))
        both += int(np.count_nonzero(np.logical_and(bools_a, bools_b)))
    return count_a, count_b, both


def run_roaring(a: dict[str, Path], b: dict[str, Path]) -> tuple[int, int, int]:
    import pyroaring

    map_a = pyroaring.BitMap.deserialize(a["roaring"].read_bytes())
    map_b = pyroaring.BitMap.deserialize(b["roaring"].read_bytes())
    return len(map_a), len(map_b), map_a.intersection_cardinality(map_b)


def warm_up(root: Path) -> float:
    """Seconds of a first comparison of two small masks: compiles the kernels (or loads numba's disk cache)."""
    rng = np.random.default_rng(0)
    paths = []
    for label in ("warm_a", "warm_b"):
        paths.append(root / f"{label}.smask")
        arrays = {name: rng.random((64, 2048)) < 0.01 for name in tensor_names(2)}
        submask.save(submask.Mask.from_numpy(arrays), paths[-1], overwrite=True)
    start = time.perf_counter()
    submask.compare(paths)
    return time.perf_counter() - start


def best_time(function: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, default=30, help="log2 of the parameters per mask (default 30)")
    parser.add_argument("--tensors", type=int, default=256, help="tensors per mask")
    parser.add_argument("--densities", default="0.01,0.05,0.3")
    parser.add_argument("--matrix-density", type=float, default=0.05, help="density of the 4-mask matrix run")
    parser.add_argument("--workers", type=int, default=None, help="submask.compare threads (default: per core)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir, removed after)")
    args = parser.parse_args()
    densities = [float(d) for d in args.densities.split(",")]
    load_before = os.getloadavg()[0]
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_algebra."))
    scratch.mkdir(parents=True, exist_ok=True)
    numel = (1 << args.bits) // args.tensors * args.tensors
    rows, sizes = [], []
    matrix_row = None
    try:
        compile_s = warm_up(scratch)
        for index, density in enumerate(densities):
            root = scratch / f"d{index}"
            root.mkdir(exist_ok=True)
            labels = ["A", "B", "C", "D"] if density == args.matrix_density else ["A", "B"]
            files = [write_mask(root, label, density, args.bits, args.tensors, seed=10 * index + i)
                     for i, label in enumerate(labels)]
            a, b = files[0], files[1]
            t_submask, r_submask = best_time(lambda: run_submask(a, b, args.workers), args.repeat)
            t_single, r_single = best_time(lambda: run_submask(a, b, 1), args.repeat)
            with numba_disabled():
                t_numpy_path, r_numpy_path = best_time(lambda: run_submask(a, b, args.workers), args.repeat)
            t_numpy, r_numpy = best_time(lambda: run_numpy(a, b, args.tensors), args.repeat)
            t_roaring, r_roaring = best_time(lambda: run_roaring(a, b), args.repeat)
            assert r_submask == r_single == r_numpy_path == r_numpy == r_roaring, (r_submask, r_numpy_path, r_roaring)
            count_a, count_b, both = r_submask
            with submask.open(a["submask"]) as mask_file:
                encodings = sorted({e.encoding for e in mask_file.entries.values()})
            rows.append([f"{density:.0%}", "/".join(encodings), f"{both / (count_a + count_b - both):.4f}",
                         f"{t_submask * 1e3:.0f} ms", f"{t_single * 1e3:.0f} ms", f"{t_numpy_path * 1e3:.0f} ms",
                         f"{t_numpy_path / t_submask:.1f}x", f"{t_numpy * 1e3:.0f} ms",
                         f"{t_roaring * 1e3:.0f} ms", f"{t_numpy / t_submask:.1f}x", f"{t_roaring / t_submask:.2f}x",
                         f"{t_roaring / t_single:.2f}x"])
            sizes.append([f"{density:.0%}"] + [f"{a[kind].stat().st_size / 2**20:.1f} MiB"
                                               for kind in ("submask", "numpy", "roaring")])
            if len(files) == 4:
                t_matrix, result = best_time(lambda: submask.compare([f["submask"] for f in files],
                                                                     workers=args.workers), args.repeat)
                assert result.pair(0, 1).intersection == both
                matrix_row = [f"{density:.0%}", f"{t_submask * 1e3:.0f} ms", f"{t_matrix * 1e3:.0f} ms",
                              f"{t_matrix / t_submask:.2f}x"]
            print(rows[-1], flush=True)
            shutil.rmtree(root)
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    body = "\n\n".join([
        f"Two independent random masks of 2^{args.bits} = {numel:,} parameters each ({args.tensors} tensors of "
        f"{numel // args.tensors:,}), end to end from warm files (page cache), best of {args.repeat}. Each "
        "contender returns |A|, |B| and |A and B| (so both overlaps and Jaccard); all three agree exactly. "
        "submask: `submask.compare` on `submask.save` files (default encodings), with its default threads, with "
        f"one, and with its compiled kernels switched off (`SUBMASK_NO_NUMBA=1`, numpy paths; default threads); "
        f"kernels: {numba_state()}, first comparison (JIT compile or numba cache load, excluded from the timings) "
        f"{compile_s:.1f} s. numpy bool: packed `.npy` memory-mapped, `np.unpackbits` per tensor, `logical_and` + "
        "`count_nonzero`; pyroaring: serialized `BitMap` files, `deserialize` + `len` + "
        "`intersection_cardinality` (single-threaded). Ratios above 1 mean submask is faster. Load average "
        f"{load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end of the run (other jobs on the "
        f"machine's {os.cpu_count()} cores): above the core count, every column is slowed and noisy.",
        markdown_table(["density", "encoding", "Jaccard", "submask", "submask 1 thread", "submask no numba",
                        "numba gain", "numpy bool", "pyroaring",
                        "vs numpy bool", "vs pyroaring", "vs pyroaring (1 thread)"], rows),
        "File sizes per mask:",
        markdown_table(["density", ".smask", "packed .npy", "roaring"], sizes),
        "Comparison matrix of 4 masks (6 pairs, each tensor decoded once) against one pairwise pass:",
        markdown_table(["density", "1 pair (2 masks)", "4-mask matrix", "ratio"], [matrix_row] if matrix_row else []),
    ])
    print(body)
    write_section("algebra", "Set algebra: Jaccard/overlap of two masks from files", body)


if __name__ == "__main__":
    main()
