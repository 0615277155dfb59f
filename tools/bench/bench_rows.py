"""Size against the per-row entropy bound, and decode speed, on masks whose density varies by row (issue #15).

    .venv/bin/python -m tools.bench.bench_rows [--minilm DIR] [--repeat 3]

Masks: real update masks of all-MiniLM-L6-v2 in bf16 (8 AdamW steps from the packaged model: lr 1e-5, an
RL-like near-policy update, and lr 3e-4, an SFT-like one; built once into ``--minilm``, then reused), and
synthetic row-structured masks (rows of 384 and 1536, as MiniLM's; row densities log-normal around the target,
sigma 1.5, a quarter of the rows empty). The bound is the sum over rows of ``row_bits * H(row density)``;
every size is a ratio to it. Decode: one core (numba kernels where installed), Gparam/s of the whole mask,
every tensor in its own encoding; "auto" is the writer's choice per tensor, "auto 1.1" the choice before
rice-rows; the last column decodes only the tensors for which the writer picks rice-rows.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from submask.accel import numba_disabled, numba_state
from submask.codecs import CODECS, RiceRowsCodec, binary_entropy_bits, encode_auto, get_codec
from submask.packed import pack, popcount, unpack

from .report import best_time, markdown_table, write_section

ENCODINGS = ["zstd", "rice", "rice-rows"]
Tensors = list[tuple[str, tuple[int, ...], np.ndarray]]


def row_grid(packed: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(set bits, length) of each row: the last dimension, 4096-bit blocks for 1-D tensors (as rice-rows)."""
    numel = int(np.prod(shape))
    row_bits = RiceRowsCodec().for_shape(shape).row_bits
    bools = unpack(packed, numel)
    bools = np.concatenate([bools, np.zeros(-numel % row_bits, dtype=np.bool_)]).reshape(-1, row_bits)
    return bools.sum(axis=1), np.minimum(row_bits, numel - np.arange(bools.shape[0]) * row_bits)


def row_bound(counts: np.ndarray, nbits: np.ndarray) -> float:
    """Sum over rows of the rows' iid entropy bounds (``row_bits * H(row density)``)."""
    return sum(binary_entropy_bits(int(c), int(n)) for c, n in zip(counts, nbits))


def two_part_bound(counts: np.ndarray, nbits: np.ndarray) -> float:
    """Bits to name each row's set bits among the subsets of its count (log2 C(n, c)), plus the counts'
    zeroth-order entropy: what a code also spends to say how many bits each row holds."""
    subsets = sum(math.lgamma(n + 1) - math.lgamma(c + 1) - math.lgamma(n - c + 1) for c, n in zip(counts, nbits))
    frequency = np.unique(counts, return_counts=True)[1] / max(1, counts.size)
    return subsets / math.log(2) + counts.size * float(-(frequency * np.log2(frequency)).sum())


def synthetic(rows: int, cols: int, density: float, seed: int) -> Tensors:
    rng = np.random.default_rng(seed)
    row_density = np.clip(density * np.exp(rng.normal(0.0, 1.5, rows) - 1.125), 0.0, 1.0)  # mean ~ density
    row_density[rng.random(rows) < 0.25] = 0.0
    bools = rng.random((rows, cols), dtype=np.float32) < row_density[:, None].astype(np.float32)
    return [("w", (rows, cols), pack(bools))]


def minilm_masks(cache: Path) -> dict[str, Tensors]:
    """The RL-like and SFT-like MiniLM update masks, built into ``cache`` on first use."""
    import submask
    from submask.builder import build_mask
    from submask.examples import minilm

    masks = {}
    for name, lr in (("rl", 1e-5), ("sft", 3e-4)):
        path = cache / f"{name}.smask"
        if not path.exists():
            if not (cache / "base").exists():
                minilm.write_base(cache / "base", dtype="bfloat16")
            minilm.finetune(cache / name, steps=8, lr=lr, seed=1, corpus="a", dtype="bfloat16")
            build_mask(cache / "base", cache / name, path, overwrite=True)
        masks[f"MiniLM {name.upper()}"] = [(n, t.shape, t.packed) for n, t in submask.load(path).items() if t.numel]
    return masks


def encoded(tensors: Tensors, choose: Callable[[np.ndarray, tuple[int, ...]], tuple[str, bytes, dict]]) -> list:
    return [(shape, *choose(packed, shape)) for _, shape, packed in tensors]


def by_encoding(encoding: str) -> Callable[[np.ndarray, tuple[int, ...]], tuple[str, bytes, dict]]:
    def encode(packed: np.ndarray, shape: tuple[int, ...]) -> tuple[str, bytes, dict]:
        codec = get_codec(encoding).for_shape(shape)
        return (encoding, *codec.encode(packed, int(np.prod(shape))))
    return encode


def auto(rows: bool) -> Callable[[np.ndarray, tuple[int, ...]], tuple[str, bytes, dict]]:
    return lambda packed, shape: encode_auto(packed, int(np.prod(shape)), popcount(packed), shape if rows else None)


def decode_speed(payloads: list, repeat: int) -> float:
    numel = sum(int(np.prod(shape)) for shape, *_ in payloads)
    codecs = [(CODECS[enc].from_config(config), payload, int(np.prod(shape)))
              for shape, enc, payload, config in payloads]
    outs = [np.empty(-(-n // 8), dtype=np.uint8) for _, _, n in codecs]
    return numel / best_time(lambda: [c.decode(p, n, o) for (c, p, n), o in zip(codecs, outs)], repeat) / 1e9


def rows_for(label: str, tensors: Tensors, repeat: int) -> tuple[list, list]:
    numel = sum(int(np.prod(shape)) for _, shape, _ in tensors)
    ones = sum(popcount(packed) for _, _, packed in tensors)
    grids = [row_grid(packed, shape) for _, shape, packed in tensors]
    bound = sum(row_bound(*grid) for grid in grids)
    two_part = sum(two_part_bound(*grid) for grid in grids)
    iid = sum(binary_entropy_bits(popcount(p), int(np.prod(s))) for _, s, p in tensors)
    choices = {enc: by_encoding(enc) for enc in ENCODINGS} | {"auto 1.1": auto(False), "auto": auto(True)}
    size_row = [label, f"{ones / numel:.2%}", f"{bound / numel:.4f}", f"{iid / bound:.3f}x", f"{two_part / bound:.3f}x"]
    speed_row = [label]
    for name, choose in choices.items():
        payloads = encoded(tensors, choose)
        size_row.append(f"{8 * sum(len(p) for _, _, p, _ in payloads) / bound:.3f}x")
        speed_row.append(f"{decode_speed(payloads, repeat):.2f}")
        if name == "auto":
            picked = sorted({enc for _, enc, _, _ in payloads})
            size_row.append(", ".join(picked))
            by_rows = [payload for payload in payloads if payload[1] == "rice-rows"]
            speed_row.append(f"{decode_speed(by_rows, repeat):.2f}" if by_rows else "-")
        if name == "rice-rows":
            size_row.append(f"{8 * sum(len(p) for _, _, p, _ in payloads) / two_part:.3f}x")
            with numba_disabled():
                speed_row.append(f"{decode_speed(payloads, 1):.2f}")
    return size_row, speed_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", type=Path, default=Path(".bench-minilm"),
                        help="folder for the MiniLM checkpoints and masks (built once, about 2 minutes)")
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions; the best is kept")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.minilm.mkdir(parents=True, exist_ok=True)
    masks = minilm_masks(args.minilm)
    for cols in (384, 1536):
        for density in (0.001, 0.01, 0.05, 0.2):
            masks[f"rows of {cols}, {density:.1%}"] = synthetic(4 * (1 << 22) // cols // 4, cols, density, seed=cols)
    sizes, speeds = zip(*(rows_for(label, tensors, args.repeat) for label, tensors in masks.items()))
    body = (
        "**Size** as a ratio to the per-row bound (the sum over rows of `row_bits * H(row density)`), beside the "
        "per-tensor iid bound's ratio to it (how much the rows' structure is worth) and the two-part bound's "
        "(`sum log2 C(row_bits, count)` plus the counts' zeroth-order entropy: the per-row bound plus what saying "
        "each row's count costs, less what knowing it saves). Synthetic masks: 2^22 "
        "parameters, row densities log-normal (sigma 1.5) around the target, a quarter of the rows empty.\n\n"
        + markdown_table(["mask", "density", "bound bits/param", "iid bound", "two-part", *ENCODINGS,
                          "rice-rows / two-part", "auto 1.1", "auto", "auto picks"], sizes)
        + "\n\nThe per-row bound leaves out what naming each row's count costs, which no code avoids; the "
        "two-part bound adds it (less the bits that knowing the count saves): it is itself above 1.05x the "
        "per-row bound on sparse rows and on short ones (rows of 384 below 5%), where the goal cannot be met. "
        "rice-rows stays within 2-6% of the two-part bound: Rice codes take about `n * H(p)` per row, a few "
        "bits above `log2 C(n, c)`, and the counts about 1.3x their zeroth-order entropy."
        + f"\n\n**Decode**, one core, Gparam/s of the whole mask (best of {args.repeat}); kernels: {numba_state()}; "
        "`rice-rows numpy` runs without numba (`SUBMASK_NO_NUMBA=1`, one run).\n\n"
        + markdown_table(["mask", *ENCODINGS[:3], "rice-rows numpy", "auto 1.1", "auto", "auto's rice-rows tensors"],
                         speeds)
    )
    print(body)
    write_section("rows", "Row-structured and real masks: size against the per-row bound", body,
                  f".venv/bin/python -m tools.bench.bench_rows --repeat {args.repeat}")


if __name__ == "__main__":
    main()
