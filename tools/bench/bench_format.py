"""Size and speed of the .smask encodings (issue #2), written to BENCHMARKS.md.

    .venv/bin/python -m tools.bench.bench_format [--bits 26] [--repeat 3]

Size: bits per parameter of each encoding and of the writer's choice ("auto") on iid random masks from 0.1%
to 99.9% density and on row-structured masks (rows of different densities, as real update masks have), each
as a ratio to its entropy bound (iid: n*H(p); rows: the sum of the rows' iid bounds).
Speed: one core, Gparam/s of encode and decode of every encoding, beside np.packbits / np.unpackbits on the
same masks in the same run (the ratio column is encoding speed / numpy speed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from functools import partial

import numpy as np

from submask.accel import numba_disabled, numba_state
from submask.codecs import binary_entropy_bits, encode_auto, get_codec
from submask.packed import pack, popcount

from .report import best_time, markdown_table, write_section

DENSITIES = [0.001, 0.005, 0.01, 0.05, 0.1, 0.15, 0.3, 0.5, 0.85, 0.99, 0.999]
SPEED_DENSITIES = [0.001, 0.01, 0.05, 0.15, 0.3, 0.5, 0.85]
ENCODINGS = ["raw", "zstd", "rice", "rice-rows"]  # rice-rows in its 1-D blocks of 4096: the rows below


def iid_mask(numel: int, density: float, seed: int = 0) -> np.ndarray:
    return pack(np.random.default_rng(seed).random(numel, dtype=np.float32) < density)


def row_structured_mask(rows: int, cols: int, density: float, seed: int = 0) -> tuple[np.ndarray, float]:
    """Rows whose densities vary log-uniformly around ``density``; returns packed bits and the entropy bound."""
    rng = np.random.default_rng(seed)
    row_density = np.clip(density * np.exp(rng.normal(0.0, 1.0, rows)), 0.0, 1.0)
    bools = rng.random((rows, cols), dtype=np.float32) < row_density[:, None].astype(np.float32)
    bound = sum(binary_entropy_bits(int(c), cols) for c in bools.sum(axis=1))
    return pack(bools), bound


def size_rows(numel: int) -> list[list[object]]:
    rows = []
    for structure in ("iid", "rows"):
        for density in DENSITIES:
            if structure == "iid":
                packed = iid_mask(numel, density)
                bound = binary_entropy_bits(popcount(packed), numel)
                shape: tuple[int, ...] = (numel,)
            else:
                packed, bound = row_structured_mask(numel >> 12, 4096, density)
                shape = (numel >> 12, 4096)
            ones = popcount(packed)
            sizes = {enc: len(get_codec(enc).encode(packed, numel)[0]) for enc in ENCODINGS}
            chosen, payload, _ = encode_auto(packed, numel, ones, shape)
            per_param = {enc: 8 * size / numel for enc, size in sizes.items()}
            rows.append([structure, f"{density:.1%}", f"{bound / numel:.4f}",
                         *(f"{per_param[enc]:.4f}" for enc in ENCODINGS),
                         chosen, f"{8 * len(payload) / numel:.4f}",
                         f"{8 * len(payload) / bound:.3f}x" if bound else "-"])
    return rows


def speed_rows(numel: int, repeat: int) -> list[list[object]]:
    rows = []
    for density in SPEED_DENSITIES:
        packed = iid_mask(numel, density, seed=1)
        bools = np.unpackbits(packed).view(np.bool_)
        numpy_pack = numel / best_time(partial(np.packbits, bools), repeat) / 1e9
        numpy_unpack = numel / best_time(partial(np.unpackbits, packed), repeat) / 1e9
        chosen = encode_auto(packed, numel, popcount(packed), (numel,))[0]
        for enc, compiled in [(enc, True) for enc in ENCODINGS] + [("rice", False)]:
            codec = get_codec(enc)
            with contextlib.nullcontext() if compiled else numba_disabled():
                payload, config = codec.encode(packed, numel)
                encode = numel / best_time(partial(codec.encode, packed, numel), repeat) / 1e9
                decode = numel / best_time(partial(codec.configured(config).decode, payload, numel), repeat) / 1e9
            label = enc + (" (auto)" if enc == chosen else "") + ("" if compiled else ", no numba")
            rows.append([f"{density:.1%}", label,
                         f"{encode:.2f}", f"{encode / numpy_pack:.2f}",
                         f"{decode:.2f}", f"{decode / numpy_unpack:.2f}",
                         f"{numpy_pack:.2f}", f"{numpy_unpack:.2f}"])
    return rows


def warm_up() -> float:
    """Seconds of a first rice encode + decode: compiles the kernels (or loads numba's disk cache)."""
    packed = iid_mask(1 << 12, 0.05)
    start = time.perf_counter()
    codec = get_codec("rice")
    payload, config = codec.encode(packed, 1 << 12)
    codec.configured(config).decode(payload, 1 << 12)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, default=26, help="log2 of the parameters per mask (default 26: 67M)")
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions; the best is kept")
    args = parser.parse_args()
    numel = 1 << args.bits
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    compile_s = warm_up()
    size = size_rows(numel)
    speed = speed_rows(numel, args.repeat)
    body = (
        f"Masks of 2^{args.bits} = {numel:,} parameters. **Size** in bits per parameter; the bound is the iid "
        "entropy (for row-structured masks, 4096-wide rows with log-normally varying densities, the sum of the "
        "rows' bounds); the last column is the writer's choice as a ratio to the bound.\n\n"
        + markdown_table(["mask", "density", "bound", *ENCODINGS, "auto picks", "auto", "auto / bound"], size)
        + "\n\n**Speed**, one core, Gparam/s (best of "
        f"{args.repeat}); ratios are against np.packbits (encode) and np.unpackbits (decode) of the same mask, "
        "timed in the same run. `(auto)` marks the encoding the writer picks at that density. Kernels: "
        f"{numba_state()} (first rice encode + decode, JIT compile or numba cache load, excluded: {compile_s:.1f} s); "
        "`no numba` rows run the numpy paths (`SUBMASK_NO_NUMBA=1`).\n\n"
        + markdown_table(["density", "encoding", "encode", "/ packbits", "decode", "/ unpackbits",
                          "packbits", "unpackbits"], speed)
    )
    print(body)
    write_section("format", "Format: encoding size and speed", body,
                  f".venv/bin/python -m tools.bench.bench_format --bits {args.bits} --repeat {args.repeat}")


if __name__ == "__main__":
    main()
