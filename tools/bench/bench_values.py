"""Size and speed of the values encoding of deltas (FORMAT.md §12, issue 16), written to BENCHMARKS.md.

    .venv/bin/python -m tools.bench.bench_values [--values 22] [--repeat 3]

Synthetic RL-like updates: base weights N(0, 0.02); 20% of them moved by a small relative step (as an
RL step moves a weight) and rounded to the checkpoint's dtype; the values a delta stores are the finetuned
values at the positions whose stored bytes changed. For each dtype, bytes per value of: the value bytes
stored as they are, one zstd frame over all of them (level 3), and the ``planes`` encoding at zstd levels
1, 3 and 9 and blocks of 2^16 and 2^20 values; then encode and decode speed in MB/s of value bytes, beside one
zstd frame and a copy of the same bytes (numpy) in the same run.
"""

from __future__ import annotations

import argparse
import functools
import os

import numpy as np
import zstandard

from submask.format import values as values_format
from submask.format.header import ValuesEntry
from submask.format.values import decode_values, encode_values, plane_methods

from .report import best_time, markdown_table, write_section

MOVED = 0.2  # fraction of weights the step moves (the values at changed positions do not depend on it)
DTYPES = {"BF16": 2, "F16": 2, "F32": 4}
LEVELS = (1, 3, 9)
BLOCKS = (1 << 16, 1 << 20)


def to_bf16_bits(weights: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even, as torch does."""
    bits = weights.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def changed_values(dtype: str, numel: int, moved: float, seed: int = 0) -> np.ndarray:
    """The value bytes (uint8) a delta stores for one synthetic RL-like update of ``numel`` weights."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 0.02, numel).astype(np.float32)
    step = 1e-3 if dtype == "F32" else 1e-2  # 16-bit spacing (2^-8, 2^-11 relative) hides most smaller steps
    factor = 1 + np.where(rng.random(numel) < moved, rng.normal(0.0, step, numel), 0.0)
    finetuned = (base * factor).astype(np.float32)
    stored = {"BF16": to_bf16_bits, "F16": lambda weights: weights.astype(np.float16).view(np.uint16),
              "F32": lambda weights: weights.view(np.uint32)}[dtype]
    old, new = stored(base), stored(finetuned)
    return np.ascontiguousarray(new[old != new]).view(np.uint8)


def size_rows(count: int) -> list[list[object]]:
    rows = []
    default = values_format.ZSTD_LEVEL
    for dtype, itemsize in DTYPES.items():
        data = changed_values(dtype, int(count / MOVED), MOVED)
        n = data.size // itemsize
        whole = len(zstandard.ZstdCompressor(level=3).compress(data.tobytes()))
        planes = {}
        for level in LEVELS:
            values_format.ZSTD_LEVEL = level
            for block in BLOCKS:
                planes[level, block] = len(encode_values(data, itemsize, block)[1])
        values_format.ZSTD_LEVEL = default
        rows.append([dtype, f"{n:,}", f"{itemsize}", f"{whole / n:.3f}",
                     *(f"{planes[level, block] / n:.3f}" for level in LEVELS for block in BLOCKS),
                     f"{planes[default, values_format.BLOCK_VALUES] / whole:.3f}", _methods(dtype, data)])
    return rows


def _methods(dtype: str, data: np.ndarray) -> str:
    """How the writer stores each byte plane of ``data``."""
    encoding, payload = encode_values(data, DTYPES[dtype])
    entry = ValuesEntry("v", dtype, encoding, data.size, "00000000")
    return ", ".join(plane_methods(entry, payload, data.size // DTYPES[dtype]))


def speed_rows(count: int, repeat: int) -> list[list[object]]:
    rows = []
    for dtype, itemsize in DTYPES.items():
        data = changed_values(dtype, int(count / MOVED), MOVED)
        n = data.size // itemsize
        mb = data.size / 1e6
        copy = mb / best_time(data.copy, repeat)
        zstd = zstandard.ZstdCompressor(level=values_format.ZSTD_LEVEL)
        frame = zstd.compress(data.tobytes())
        whole_enc = mb / best_time(lambda zstd=zstd, data=data: zstd.compress(data.tobytes()), repeat)
        whole_dec = mb / best_time(lambda frame=frame: zstandard.ZstdDecompressor().decompress(frame), repeat)
        encoding, payload = encode_values(data, itemsize)
        enc = mb / best_time(functools.partial(encode_values, data, itemsize), repeat)
        out = np.empty_like(data)
        dec = mb / best_time(functools.partial(decode_values, payload, encoding, n, itemsize, out=out), repeat)
        rows.append([dtype, f"{n:,}", f"{copy:,.0f}", f"{whole_enc:,.0f}", f"{whole_dec:,.0f}",
                     f"{enc:,.0f}", f"{enc / copy:.3f}", f"{dec:,.0f}", f"{dec / copy:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=22, help="log2 of the values per delta (default 22: 4M)")
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions; the best is kept")
    args = parser.parse_args()
    count = 1 << args.values
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    size = size_rows(count)
    speed = speed_rows(count, args.repeat)
    columns = [f"planes L{level} B2^{block.bit_length() - 1}" for level in LEVELS for block in BLOCKS]
    body = (
        f"About 2^{args.values} = {count:,} changed values per dtype: weights N(0, 0.02), {MOVED:.0%} of them moved "
        "by a small relative step (N(0, 1e-3) for F32; N(0, 1e-2) for 16-bit floats, whose spacing hides smaller "
        "steps), the values at the positions whose bytes changed (their distribution, so these sizes, do not "
        "depend on how many moved). **Size** in bytes per value: as stored (the itemsize), one zstd frame over "
        "the value bytes (level 3), and the `planes` encoding at zstd level L with blocks of B values; the writer "
        f"uses level {values_format.ZSTD_LEVEL} and 2^20. `planes / zstd` is the writer's size against one frame; "
        "`planes kept` is how the writer stored each byte plane (byte 0 first).\n\n"
        + markdown_table(["dtype", "values", "stored", "zstd", *columns, "planes / zstd", "planes kept"],
                         size)
        + f"\n\n**Speed**, one core, MB/s of value bytes (best of {args.repeat}); `zstd` is one frame at the "
        "writer's level; ratios against a numpy copy of the same bytes in the same run.\n\n"
        + markdown_table(["dtype", "values", "copy", "zstd encode", "zstd decode", "planes encode", "/ copy",
                          "planes decode", "/ copy"], speed)
    )
    print(body)
    write_section("values", "Values of deltas: encoding size and speed", body,
                  f".venv/bin/python -m tools.bench.bench_values --values {args.values} --repeat {args.repeat}")


if __name__ == "__main__":
    main()
