"""Comparing masks from files against pyroaring, side by side in one run, and .smask sizes against their bounds.

Speed (issue 26's goals): two independent iid masks per density and size (``--bits``, ``--tensors`` each), eight
masks all pairs, and a Llama-2-7B-shaped pair (291 tensors, 6.7B parameters; ``--llama``), each written as
``.smask`` (``submask.save``'s defaults), a serialized pyroaring ``BitMap`` (per tensor for 7B) and packed
``.npy``. Every contender returns |A|, |B| and |A and B| from its own files (warm page cache); the contenders take
turns within each round and the best of ``--repeat`` rounds is kept, so that other jobs slow them alike.
submask runs with every check on (``verify=True``, the default: a 1.3 payload's CRC-32 or the bits' CRC-32,
structure, pad bits and counts). The ``submask compare`` process is timed beside the API call.

Size: ``compare_sizes``' table (``.smask`` file bytes against their bounds and packbits + zstd -19, with
issue 26's goals), written here too; ``python -m tools.bench.compare_sizes`` runs it alone.

    python -m tools.bench.bench_compare --bits 28 --repeat 5
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from submask import MaskMetadata, MaskWriter, TensorMask
from submask.codecs import batch
from tools.bench.bench_algebra import run_cli, run_numpy, run_roaring, run_submask, warm_up, write_mask
from tools.bench.compare_sizes import SIZE_HEADERS, size_rows
from tools.bench.report import markdown_table, write_section

LLAMA_LAYER = [("self_attn.q_proj", (4096, 4096)), ("self_attn.k_proj", (4096, 4096)),
               ("self_attn.v_proj", (4096, 4096)), ("self_attn.o_proj", (4096, 4096)),
               ("mlp.gate_proj", (11008, 4096)), ("mlp.up_proj", (11008, 4096)), ("mlp.down_proj", (4096, 11008)),
               ("input_layernorm", (4096,)), ("post_attention_layernorm", (4096,))]


def llama_7b_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Llama-2-7B's parameters (291 tensors, 6,738,415,616 elements), in its checkpoint's order."""
    shapes = [("model.embed_tokens.weight", (32000, 4096))]
    for layer in range(32):
        shapes += [(f"model.layers.{layer}.{module}.weight", shape) for module, shape in LLAMA_LAYER]
    return shapes + [("model.norm.weight", (4096,)), ("lm_head.weight", (32000, 4096))]


def write_llama(root: Path, label: str, density: float, seed: int) -> dict[str, Path]:
    """An iid mask of Llama-2-7B's shapes as .smask and as pyroaring BitMaps, one per tensor (each under 2^32
    elements) in one file: per tensor its serialized size (8 bytes, little-endian), then the bitmap. Each shape
    draws two random tensors that its layers take in turn (drawing 6.7B numbers would dominate the run; counting
    does not care)."""
    import pyroaring

    paths = {"submask": root / f"{label}.smask", "roaring": root / f"{label}.roaring"}
    if all(path.exists() for path in paths.values()):  # written by an earlier run into the same --dir
        return paths
    rng = np.random.default_rng(seed)
    pool: dict[tuple[int, ...], list[np.ndarray]] = {}
    with MaskWriter(paths["submask"], MaskMetadata(kind="other"), overwrite=True) as writer, \
            open(paths["roaring"], "wb") as roaring:
        for index, (name, shape) in enumerate(llama_7b_shapes()):
            if shape not in pool:
                pool[shape] = [rng.random(shape, dtype=np.float32) < density for _ in range(2)]
            bools = pool[shape][index % 2]
            writer.add(name, TensorMask.from_numpy(bools))
            data = pyroaring.BitMap(np.flatnonzero(bools).astype(np.uint32)).serialize()
            roaring.write(len(data).to_bytes(8, "little") + data)
    return paths


def run_roaring_tensors(files: list[dict[str, Path]]) -> list[tuple[int, int, int]]:
    """pyroaring on ``write_llama``'s files: each tensor's bitmaps deserialized, counted and intersected."""
    import pyroaring

    blobs = [memoryview(f["roaring"].read_bytes()) for f in files]
    counts = [0] * len(files)
    both = dict.fromkeys(itertools.combinations(range(len(files)), 2), 0)
    cursors = [0] * len(files)  # each file's next bitmap
    while cursors[0] < len(blobs[0]):
        maps = []
        for index, blob in enumerate(blobs):
            at = cursors[index]
            size = int.from_bytes(blob[at : at + 8], "little")
            maps.append(pyroaring.BitMap.deserialize(blob[at + 8 : at + 8 + size]))
            counts[index] += len(maps[-1])
            cursors[index] = at + 8 + size
        for i, j in both:
            both[i, j] += maps[i].intersection_cardinality(maps[j])
    return [(counts[i], counts[j], both[i, j]) for i, j in both]


def side_by_side(runs: dict[str, Callable[[], object]], repeat: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall seconds and best CPU seconds (this process's threads and its finished children) of each run
    over ``repeat`` rounds in which they take turns; asserts they all agree. CPU time is what a run costs
    whatever else the machine runs; wall time is what it takes under that load."""
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    results: dict[str, object] = {}
    for _ in range(repeat):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            results[name] = run()
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
            cpu[name] = min(cpu.get(name, float("inf")), cpu_seconds() - start_cpu)
    assert len({repr(r) for r in results.values()}) == 1, results
    return times, cpu


def cpu_seconds() -> float:
    """User + system seconds of this process (all threads) and of its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:,.0f} ms"


def speed_row(label: str, files: list[dict[str, Path]], repeat: int, tensors: int | None, cli: bool,
              roaring: Callable[[list[dict[str, Path]]], object] = run_roaring) -> list[str]:
    runs: dict[str, Callable[[], object]] = {"api": lambda: run_submask(files, None),
                                             "1 thread": lambda: run_submask(files, 1),
                                             "roaring": lambda: roaring(files)}
    if tensors is not None:
        runs["numpy"] = lambda: run_numpy(files, tensors)
    if cli:
        runs["cli"] = lambda: run_cli(files)
    t, c = side_by_side(runs, repeat)
    row = [label, ms(t["api"]), ms(t["1 thread"]), ms(t["roaring"]), f"**{t['roaring'] / t['api']:.2f}x**",
           f"{t['roaring'] / t['1 thread']:.2f}x", f"{c['roaring'] / c['1 thread']:.2f}x",
           f"{t['numpy'] / t['api']:.1f}x" if "numpy" in t else "-",
           f"{t['cli'] - t['api']:+.2f} s / {c['cli'] - c['api']:+.2f} s" if "cli" in t else "-",
           f"{os.getloadavg()[0]:.1f}"]
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", default="28", help="log2 parameters of the iid pairs, comma-separated (28,30)")
    parser.add_argument("--tensors-per-2-28", type=int, default=64, help="tensors per 2^28 parameters")
    parser.add_argument("--densities", default="0.001,0.01,0.05,0.3")
    parser.add_argument("--n-way", type=int, default=8)
    parser.add_argument("--n-way-bits", type=int, default=26)
    parser.add_argument("--n-way-density", type=float, default=0.05)
    parser.add_argument("--llama", default="0.05,0.2", help="densities of the 7B-shaped pairs ('' to skip)")
    parser.add_argument("--size-bits", type=int, default=24, help="log2 parameters of the size masks (0: no sizes)")
    parser.add_argument("--small-bits", type=int, default=22, help="log2 parameters of the small size masks")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir, removed after); "
                        "the 7B-shaped masks written there are kept and reused by a later run")
    parser.add_argument("--section", default="compare", help="the BENCHMARKS.md section to write")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_compare."))
    scratch.mkdir(parents=True, exist_ok=True)
    pairs, others = [], []
    try:
        warm_up(scratch)
        batch.available()  # starts numba's kernels, as any compare of 2^30 elements or more does in a process
        for bits in (int(b) for b in args.bits.split(",") if b):
            tensors = args.tensors_per_2_28 << max(0, bits - 28)
            for index, density in enumerate(float(d) for d in args.densities.split(",")):
                root = scratch / f"pair{bits}-{index}"
                root.mkdir(exist_ok=True)
                files = [write_mask(root, f"m{i}", density, bits, tensors, seed=100 * index + i) for i in range(2)]
                pairs.append(speed_row(f"2^{bits} ({tensors} tensors), {density:.1%}", files, args.repeat, tensors,
                                       cli=bits == 28 and density == 0.05))
                shutil.rmtree(root)
        if args.n_way > 2:
            root = scratch / "n-way"
            root.mkdir(exist_ok=True)
            files = [write_mask(root, f"m{i}", args.n_way_density, args.n_way_bits, 64, seed=900 + i)
                     for i in range(args.n_way)]
            others.append(speed_row(f"{args.n_way} x 2^{args.n_way_bits} at {args.n_way_density:.0%}, "
                                    f"{args.n_way * (args.n_way - 1) // 2} pairs", files, args.repeat, 64, cli=True))
            shutil.rmtree(root)
        for index, density in enumerate(float(d) for d in args.llama.split(",") if d):
            root = scratch / f"llama-{density:g}"
            root.mkdir(exist_ok=True)
            files = [write_llama(root, f"m{i}", density, seed=700 + 10 * index + i) for i in range(2)]
            others.append(speed_row(f"Llama-2-7B shapes (291 tensors, 6.7B), {density:.0%}", files,
                                    max(2, args.repeat // 2), None, cli=True, roaring=run_roaring_tensors))
            if args.dir is None:
                shutil.rmtree(root)
        sizes = size_rows(scratch, args.size_bits, args.small_bits) if args.size_bits else []
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    headers = ["masks", "submask", "submask 1 thread", "pyroaring", "pyroaring / submask",
               "pyroaring / submask 1 thread", "same, CPU time", "numpy bool / submask", "CLI - API (wall / CPU)",
               "load after"]
    body = "\n\n".join([
        "End to end from warm files: each contender reads its own files and returns |A|, |B| and |A and B| of "
        "every pair (all agree exactly). submask: `submask.compare` with every check on (the default: a format "
        "1.3 payload's own CRC-32, structure, pad bits and counts), default threads (one per core) and one; "
        "pyroaring: `BitMap.deserialize` of each file, `len`, `intersection_cardinality` "
        "(7B: one 32-bit BitMap per tensor, in one file); "
        "numpy bool: memory-mapped packed `.npy`, `unpackbits`, `logical_and`, `count_nonzero`. *CLI - API*: "
        "a `python -m submask compare --json -q` process (bytecode caches used, as an installed package's) less the "
        "API call, in wall time and in CPU time (the "
        "process's user + system seconds less the API call's). *CPU time*: best user + system seconds of one "
        "thread each, which the machine's load does not inflate as it does wall time. Best of "
        f"{args.repeat} rounds in which the contenders take turns (7B: {max(2, args.repeat // 2)}); ratios above "
        f"1 mean submask is faster. Load average {load_before:.1f} at the start (the machine's "
        f"{os.cpu_count()} cores are shared with other jobs: above the core count every column is slowed and "
        "noisy, threads most).",
        markdown_table(headers, pairs + others),
        *([] if not sizes else [
            f"**Size** of the `.smask` file (header included) of masks of 2^{args.size_bits} parameters, the "
            f"sparsest again at 2^{args.small_bits} (`submask.save`'s default encodings) against its bound and "
            "against packbits + zstd -19 of the same bits, with issue 26's goals (`compare_sizes` says how):",
            markdown_table(SIZE_HEADERS, sizes)]),
    ])
    print(body)
    write_section(args.section, "Comparing masks from files against pyroaring, and sizes against their bounds", body)


if __name__ == "__main__":
    main()
