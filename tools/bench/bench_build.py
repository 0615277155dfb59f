"""Throughput and peak memory of ``submask build`` on a synthetic bf16 checkpoint pair.

Writes a base and a finetuned .safetensors file (default ~2 GB each: one 1 GB tensor among 64 MB ones; a
fraction ``--changed`` of the values moved by one bf16 ulp, as in RL finetunes), then measures side by
side, from the page cache (hot) and after ``posix_fadvise(DONTNEED)`` on both files (cold):

- read: every byte of both files through the build's raw reader, on the build's thread count (the baseline)
- safetensors: ``safe_open(framework="pt").get_tensor(...).clone()`` of every tensor of both files
- build exact / build atol=1e-5: ``submask.build_mask`` to a .smask file (read, compare, ladder, encode, write);
  build exact, no ladder: the same without the tolerance ladder (which decodes every changed value); each
  also with ``SUBMASK_NO_NUMBA=1`` (the numpy path, what a build does without numba)
- naive: ``safetensors.torch.load_file`` both, compare as int16, ``np.packbits`` (no file written)

and the peak RSS of a build and of the naive approach, each in a fresh process.

    python -m tools.bench.bench_build [--size-gb 2] [--big-gb 1] [--changed 0.25] [--dir /tmp/submask-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from submask.accel import numba_disabled, numba_state
from submask.builder import build_mask
from submask.builder.run import MAX_CHUNK_BYTES, READ_BUDGET_BYTES
from submask.checkpoints.safetensors_file import SafetensorsFile
from tools.bench.report import markdown_table, write_section

MIB = 1 << 20
PIECE = 64 * MIB  # bytes generated and written at a time


def tensor_sizes(total_bytes: int, big_bytes: int, small_bytes: int = 64 * MIB) -> dict[str, int]:
    """Element counts of the synthetic checkpoint's bf16 tensors: one big tensor, the rest in small ones."""
    sizes = {"model.embed_tokens.weight": big_bytes // 2}
    rest, k = total_bytes - big_bytes, 0
    while rest > 0:
        sizes[f"model.layers.{k}.mlp.weight"] = min(rest, small_bytes) // 2
        rest -= small_bytes
        k += 1
    return sizes


def write_pair(root: Path, sizes: dict[str, int], changed: float, seed: int = 0) -> tuple[Path, Path]:
    """Write base and finetuned bf16 files; returns their paths (fsynced, so DONTNEED can drop them)."""
    root.mkdir(parents=True, exist_ok=True)
    header, offset = {}, 0
    for name, numel in sizes.items():
        header[name] = {"dtype": "BF16", "shape": [numel], "data_offsets": [offset, offset + 2 * numel]}
        offset += 2 * numel
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(seed)
    paths = root / "base.safetensors", root / "finetuned.safetensors"
    with open(paths[0], "wb") as base, open(paths[1], "wb") as finetuned:
        for handle in (base, finetuned):
            handle.write(struct.pack("<Q", len(encoded)) + encoded)
        remaining = offset // 2
        while remaining:
            n = min(remaining, PIECE // 2)
            # bf16 bit patterns of values around +-0.004 ... 0.06, like trained weights
            values = rng.integers(0x3B80, 0x3D80, n, dtype=np.uint16) | (rng.integers(0, 2, n, dtype=np.uint16) << 15)
            moved = values + (rng.random(n, dtype=np.float32) < changed).astype(np.uint16)
            base.write(values.tobytes())
            finetuned.write(moved.tobytes())
            remaining -= n
        for handle in (base, finetuned):
            handle.flush()
            os.fsync(handle.fileno())
    return paths


def drop_cache(paths: tuple[Path, ...]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_raw(paths: tuple[Path, ...], workers: int, chunk_bytes: int) -> None:
    """Read every tensor byte of every file with the build's reader, in chunks, on ``workers`` threads."""
    files = [SafetensorsFile(path) for path in paths]
    local_buffers: dict[int, np.ndarray] = {}

    def read(job: tuple[SafetensorsFile, str, int, int]) -> None:
        import threading

        buffer = local_buffers.setdefault(threading.get_ident(), np.empty(chunk_bytes, dtype=np.uint8))
        job[0].read(job[1], job[2], job[3], buffer)

    jobs = [(f, name, start, min(start + chunk_bytes // 2, info.numel))
            for name, info in files[0].tensors.items() for f in files
            for start in range(0, info.numel, chunk_bytes // 2)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(read, jobs))
    for f in files:
        f.close()


def read_safetensors(paths: tuple[Path, ...]) -> None:
    from safetensors import safe_open

    for path in paths:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118
                f.get_tensor(name).clone()  # get_tensor may only map the file: copy so every byte is read


def naive(paths: tuple[Path, ...]) -> None:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(paths[0]), load_file(paths[1])
    for name in a:
        np.packbits((a[name].view(torch.int16) != b[name].view(torch.int16)).numpy())


def without_numba(run: Callable[[], object]) -> Callable[[], None]:
    """``run`` on the numpy path (``SUBMASK_NO_NUMBA=1`` while it runs)."""
    def wrapped() -> None:
        with numba_disabled():
            run()

    return wrapped


def peak_rss_mb(code: str) -> float:
    """Peak RSS in MB of a fresh Python process running ``code`` (read back through a wrapper process)."""
    wrapper = ("import resource, subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, code], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    return int(out.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of each checkpoint (GB)")
    parser.add_argument("--big-gb", type=float, default=1.0, help="size of its largest tensor (GB)")
    parser.add_argument("--changed", type=float, default=0.25, help="fraction of values changed")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=2, help="hot runs per method (best is reported)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/submask-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    args = parser.parse_args()

    gb = 10**9
    sizes = tensor_sizes(int(args.size_gb * gb) // 2 * 2, int(args.big_gb * gb) // 2 * 2)
    paths = write_pair(args.dir, sizes, args.changed)
    out = args.dir / "mask.smask"
    nbytes = sum(p.stat().st_size for p in paths)
    chunk_bytes = min(MAX_CHUNK_BYTES, READ_BUDGET_BYTES // (2 * (args.workers + 1)))
    builds: dict[str, Callable[[], object]] = {
        "build exact": lambda: build_mask(*paths, out, workers=args.workers, device="cpu", overwrite=True),
        "build exact, no ladder": lambda: build_mask(*paths, out, workers=args.workers, device="cpu", ladder=False,
                                                     overwrite=True),
        "build atol=1e-5": lambda: build_mask(*paths, out, atol=1e-5, workers=args.workers, device="cpu",
                                              overwrite=True),
    }
    methods = {
        "read (raw reader, baseline)": lambda: read_raw(paths, args.workers, chunk_bytes),
        "safetensors safe_open get_tensor": lambda: read_safetensors(paths),
        **builds,
        **{f"{name} (numpy path, no numba)": without_numba(run) for name, run in builds.items()},
        "naive (load_file both, compare, packbits)": lambda: naive(paths),
    }
    timings: dict[str, dict[str, float]] = {}
    for cache in ("hot", "cold"):
        read_raw(paths, args.workers, chunk_bytes)  # warm the page cache (and the code paths)
        for name, run in methods.items():
            best = float("inf")
            for _ in range(args.repeats if cache == "hot" else 1):
                if cache == "cold":
                    drop_cache(paths)
                started = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - started)
            timings.setdefault(name, {})[cache] = best
            print(f"{cache:4s} {name:45s} {nbytes / best / gb:6.2f} GB/s", flush=True)
    mask = build_mask(*paths, workers=args.workers, device="cpu").mask
    density = mask.density
    del mask

    rss = {
        "build exact": peak_rss_mb(f"from submask.builder import build_mask; "
                                   f"build_mask({str(paths[0])!r}, {str(paths[1])!r}, {str(out)!r}, device='cpu', "
                                   f"overwrite=True)"),
        "build atol=1e-5": peak_rss_mb(f"from submask.builder import build_mask; build_mask({str(paths[0])!r}, "
                                       f"{str(paths[1])!r}, {str(out)!r}, atol=1e-5, device='cpu', overwrite=True)"),
        "naive": peak_rss_mb(f"from tools.bench.bench_build import naive; from pathlib import Path; "
                             f"naive((Path({str(paths[0])!r}), Path({str(paths[1])!r})))"),
        "python + import submask.build": peak_rss_mb("import submask.build"),
    }
    for name, mb in rss.items():
        print(f"peak RSS {name:30s} {mb:8.0f} MB")

    base = timings["read (raw reader, baseline)"]
    rows = [[name, f"{nbytes / t['hot'] / gb:.2f}", f"{base['hot'] / t['hot']:.2f}",
             f"{nbytes / t['cold'] / gb:.2f}", f"{base['cold'] / t['cold']:.2f}"] for name, t in timings.items()]
    body = "\n\n".join([
        f"Two bf16 checkpoints of {args.size_gb:g} GB each ({len(sizes)} tensors, the largest {args.big_gb:g} GB), "
        f"{args.changed:.0%} of values changed by one ulp (mask density {density:.4f}); throughput counts the bytes "
        f"of both files ({nbytes / gb:.2f} GB). {args.workers} worker threads, chunks of {chunk_bytes // MIB} MiB. "
        "Ratios are against the raw read of both files in the same run (higher is better). Hot: best of "
        f"{args.repeats}; cold: one run after posix_fadvise(DONTNEED) on both files. Builds write the .smask file "
        f"and use the fused compiled kernel ({numba_state()}) unless marked \"numpy path\" (SUBMASK_NO_NUMBA=1, "
        "the fallback without numba); the naive approach writes nothing. Load average when done: "
        f"{os.getloadavg()[0]:.1f} (other jobs shared the cores, which lowers the CPU-bound rows).",
        markdown_table(["method", "hot GB/s", "hot ratio", "cold GB/s", "cold ratio"], rows),
        markdown_table(["process", "peak RSS (MB)"], [[name, f"{mb:.0f}"] for name, mb in rss.items()]),
        f"Peak RSS of a build whose largest tensor is {args.big_gb:g} GB, measured with "
        "getrusage(RUSAGE_CHILDREN).ru_maxrss of a fresh process (goal: under 600 MB).",
    ])
    if not args.no_write:
        write_section("build", "Build throughput and memory (CPU)", body,
                      "python -m tools.bench.bench_build " + " ".join(sys.argv[1:]))
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
