"""Jaccard/overlap of large masks end to end from files: submask (API and CLI) vs numpy bools vs pyroaring.

For each density, two independent random masks of ``2^bits`` parameters (split into ``--tensors`` equal
Llama-named tensors) are written three ways, and each contender computes |A|, |B| and |A and B| (hence
overlaps and Jaccard) from its own files:

- submask: ``submask.save`` (default encodings) then ``submask.compare`` (threads: ``--workers``), and the
  same as a process, ``python -m submask compare --json`` (numba's start included);
- numpy bool: packed bits in one ``.npy`` per mask (np.save of np.packbits), memory-mapped; per tensor
  ``np.unpackbits`` to bools, then ``np.logical_and`` and ``np.count_nonzero``;
- pyroaring: one serialized ``BitMap`` per mask over global positions; read, ``BitMap.deserialize``,
  ``len`` and ``intersection_cardinality``.

Files are read warm (page cache), best of ``--repeat`` rounds in which the contenders take turns. Then
``--n-way`` masks, every pair, at one density,
each contender reading each mask once; and one core's decode speed of the rice tensors of each density.

    .venv/bin/python -m tools.bench.bench_algebra --bits 30 --repeat 3
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import submask
from submask import MaskMetadata, MaskWriter, TensorMask
from submask.accel import numba_disabled, numba_state
from submask.codecs import encode_auto, get_codec
from submask.packed import packed_nbytes
from tools.bench.report import markdown_table, process_env, write_section

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
    packed_all = np.lib.format.open_memmap(paths["numpy"], mode="w+", dtype=np.uint8,
                                           shape=(tensors * per_tensor // 8,))
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


def run_submask(files: list[dict[str, Path]], workers: int | None, verify: bool = True) -> list[tuple[int, int, int]]:
    """(|A|, |B|, |A and B|) of every pair of masks, in ``itertools.combinations`` order."""
    result = submask.compare([f["submask"] for f in files], workers=workers, verify=verify)
    return [(s.count_a, s.count_b, s.intersection) for s in (result.pair(i, j) for i, j in result.pairs())]


def run_cli(files: list[dict[str, Path]]) -> list[tuple[int, int, int]]:
    """``run_submask`` as a whole process: ``python -m submask compare --json -q`` (bytecode caches used, as an
    installed package's)."""
    command = [sys.executable, "-m", "submask", "compare", "--json", "-q", *(str(f["submask"]) for f in files)]
    pairs = json.loads(subprocess.run(command, capture_output=True, text=True, check=True,
                                      env=process_env()).stdout)["pairs"]
    return [(p["count_a"], p["count_b"], p["intersection"]) for p in pairs]


def run_numpy(files: list[dict[str, Path]], tensors: int) -> list[tuple[int, int, int]]:
    packed = [np.load(f["numpy"], mmap_mode="r") for f in files]
    step = packed[0].size // tensors
    n = len(files)
    counts, both = [0] * n, np.zeros((n, n), np.int64)
    for start in range(0, packed[0].size, step):
        bools = [np.unpackbits(p[start : start + step]).view(np.bool_) for p in packed]
        for i in range(n):
            counts[i] += int(np.count_nonzero(bools[i]))
        for i, j in itertools.combinations(range(n), 2):
            both[i, j] += int(np.count_nonzero(np.logical_and(bools[i], bools[j])))
    return [(counts[i], counts[j], int(both[i, j])) for i, j in itertools.combinations(range(n), 2)]


def run_roaring(files: list[dict[str, Path]]) -> list[tuple[int, int, int]]:
    import pyroaring

    maps = [pyroaring.BitMap.deserialize(f["roaring"].read_bytes()) for f in files]
    return [(len(a), len(b), a.intersection_cardinality(b)) for a, b in itertools.combinations(maps, 2)]


def decode_rows(numel: int, densities: list[float], repeat: int) -> list[list[str]]:
    """One core's decode speed, Gparam/s to packed bits, of an iid mask per density: the writer's choice,
    rice (compiled and numpy paths) and np.unpackbits of the same mask beside them."""
    rows = []
    out = np.empty(packed_nbytes(numel), np.uint8)
    for density in densities:
        packed = np.packbits(np.random.default_rng(3).random(numel, dtype=np.float32) < density)
        chosen = encode_auto(packed, numel, int(np.bitwise_count(packed).sum()))[0]
        codec = get_codec("rice")
        payload, config = codec.encode(packed, numel)
        def decode(codec=codec, config=config, payload=payload) -> object:  # binds this density's payload
            return codec.configured(config).decode(payload, numel, out)

        compiled = numel / best_time(decode, repeat)[0] / 1e9
        with numba_disabled():
            numpy = numel / best_time(decode, repeat)[0] / 1e9
        unpack = numel / best_time(functools.partial(np.unpackbits, packed), repeat)[0] / 1e9
        rows.append([f"{density:.1%}", chosen, f"{compiled:.2f}", f"{numpy:.2f}", f"{unpack:.2f}"])
    return rows


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


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms"


def contenders(files: list[dict[str, Path]], tensors: int, workers: int | None,
               repeat: int) -> dict[str, float]:
    """Best seconds of every contender on these files; asserts that all of them agree. The contenders take
    turns, one call each per round, so that other jobs on the machine slow them alike."""

    def without_numba() -> object:
        with numba_disabled():
            return run_submask(files, workers)

    runs: dict[str, Callable[[], object]] = {
        "api": lambda: run_submask(files, workers), "no crc": lambda: run_submask(files, workers, verify=False),
        "1 thread": lambda: run_submask(files, 1, verify=False),
        "cli": lambda: run_cli(files), "numpy": lambda: run_numpy(files, tensors),
        "roaring": lambda: run_roaring(files), "no numba": without_numba}
    times: dict[str, float] = {}
    results = {}
    for _ in range(repeat):
        for name, run in runs.items():
            seconds, results[name] = best_time(run, 1)
            times[name] = min(times.get(name, seconds), seconds)
    assert len({repr(r) for r in results.values()}) == 1, results
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, default=30, help="log2 of the parameters per mask (default 30)")
    parser.add_argument("--tensors", type=int, default=256, help="tensors per mask")
    parser.add_argument("--densities", default="0.001,0.01,0.05,0.3,0.5")
    parser.add_argument("--n-way", type=int, default=8, help="masks of the all-pairs run")
    parser.add_argument("--n-way-bits", type=int, default=None, help="log2 of their parameters (default: bits - 2)")
    parser.add_argument("--n-way-density", type=float, default=0.05)
    parser.add_argument("--decode-bits", type=int, default=24, help="log2 of the parameters of the decode masks")
    parser.add_argument("--workers", type=int, default=None, help="submask.compare threads (default: per core)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir, removed after)")
    args = parser.parse_args()
    densities = [float(d) for d in args.densities.split(",")]
    n_way_bits = args.n_way_bits or args.bits - 2
    load_before = os.getloadavg()[0]
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_algebra."))
    scratch.mkdir(parents=True, exist_ok=True)
    numel = (1 << args.bits) // args.tensors * args.tensors
    rows, sizes, n_way_row = [], [], []
    try:
        compile_s = warm_up(scratch)
        runs = [(density, 2, args.bits) for density in densities] + [(args.n_way_density, args.n_way, n_way_bits)]
        for index, (density, count, bits) in enumerate(runs):
            root = scratch / f"run{index}"
            root.mkdir(exist_ok=True)
            files = [write_mask(root, f"m{i}", density, bits, args.tensors, seed=100 * index + i) for i in range(count)]
            t = contenders(files, args.tensors, args.workers, args.repeat)
            with submask.open(files[0]["submask"]) as mask_file:
                encodings = "/".join(sorted({e.encoding for e in mask_file.entries.values()}))
            cells = [ms(t["api"]), ms(t["no crc"]), ms(t["1 thread"]), ms(t["no numba"]), ms(t["cli"]),
                     ms(t["numpy"]), ms(t["roaring"]), f"{t['numpy'] / t['api']:.1f}x",
                     f"{t['numpy'] / t['no crc']:.1f}x", f"{t['roaring'] / t['api']:.2f}x",
                     f"{t['roaring'] / t['no crc']:.2f}x", f"{t['roaring'] / t['1 thread']:.2f}x",
                     f"{t['cli'] - t['api']:+.2f} s"]
            if count == 2:
                rows.append([f"{density:.1%}", encodings, *cells])
                sizes.append([f"{density:.1%}"] + [f"{files[0][kind].stat().st_size / 2**20:.1f} MiB"
                                                    for kind in ("submask", "numpy", "roaring")])
            else:
                n_way_row = [[f"{count} x 2^{bits} at {density:.0%}, {count * (count - 1) // 2} pairs", encodings,
                              *cells]]
            print((rows + n_way_row)[-1], flush=True)
            shutil.rmtree(root)
        decode = decode_rows(1 << args.decode_bits, [0.001, 0.01, 0.05, 0.1, 0.12, 0.15], args.repeat)
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    headers = ["submask", "submask no CRC", "no CRC 1 thread", "submask no numba", "submask CLI", "numpy bool",
               "pyroaring", "vs numpy bool", "no CRC vs numpy bool", "vs pyroaring", "no CRC vs pyroaring",
               "no CRC 1 thread vs pyroaring", "CLI - API"]
    body = "\n\n".join([
        f"Two independent random masks of 2^{args.bits} = {numel:,} parameters each ({args.tensors} tensors of "
        f"{numel // args.tensors:,}), end to end from warm files (page cache), best of {args.repeat} rounds in "
        "which the contenders take turns (so that other jobs on the machine slow them alike). Each "
        "contender returns |A|, |B| and |A and B| (so both overlaps and Jaccard); all agree exactly. "
        "submask: `submask.compare` on `submask.save` files (default encodings), with its default threads and "
        "every tensor's CRC-32 checked; *no CRC*: `verify=False` (`--no-verify`: the CRC-32 skipped, as FORMAT.md "
        "§4.3 allows counting tools; structure, pad bits and counts still checked), with the default threads and "
        "with one; and with its compiled kernels switched off (`SUBMASK_NO_NUMBA=1`, numpy paths; default "
        "threads, CRC checked); "
        "submask CLI: `python -m submask compare --json -q` as a whole process (interpreter, imports and numba's "
        f"start included). Kernels: {numba_state()}, first comparison (JIT compile or numba cache load, excluded "
        f"from the API timings) {compile_s:.1f} s. numpy bool: packed `.npy` memory-mapped, `np.unpackbits` per "
        "tensor, `logical_and` + `count_nonzero`; pyroaring: serialized `BitMap` files, `deserialize` + `len` + "
        "`intersection_cardinality` (single-threaded). Ratios above 1 mean submask is faster. Load average "
        f"{load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end of the run (other jobs on the "
        f"machine's {os.cpu_count()} cores): above the core count, every column is slowed and noisy.",
        markdown_table(["density", "encoding", *headers], rows),
        "File sizes per mask:",
        markdown_table(["density", ".smask", "packed .npy", "roaring"], sizes),
        f"All pairs of {args.n_way} masks (each contender reads and decodes each mask once; numpy bool unpacks each "
        "tensor of each mask once, then ANDs every pair):",
        markdown_table(["masks", "encoding", *headers], n_way_row),
        f"Decode speed, one core, Gparam/s to packed bits, of an iid mask of 2^{args.decode_bits} parameters "
        "(one rice block per 2^22), best of "
        f"{args.repeat}: the rice kernels, the numpy path (`SUBMASK_NO_NUMBA=1`), and `np.unpackbits` of the same "
        "mask as a yardstick; *auto* is the writer's choice at that density.",
        markdown_table(["density", "auto", "rice", "rice, no numba", "np.unpackbits"], decode),
    ])
    print(body)
    write_section("algebra", "Set algebra: Jaccard/overlap of masks from files", body)

if __name__ == "__main__":
    main()
