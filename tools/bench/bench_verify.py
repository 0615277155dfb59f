"""What verification costs: ``compare`` with and without CRC-32s, ``load`` against decoding alone.

For each density, two independent random masks of ``2^bits`` parameters (``--tensors`` equal tensors,
default encodings) are written once; then, from warm files, best of ``--repeat``:

- compare: ``submask.compare`` of the two (default threads) with ``verify=True`` (the default: pad bits,
  popcount and CRC-32 of every tensor) against ``verify=False`` (no CRC-32; sparse rice stays encoded);
- load: ``submask.load`` of one mask (decode, then pad bits, popcount and CRC-32 per tensor) against the
  same payloads decoded by their codecs with no check at all.

    .venv/bin/python -m tools.bench.bench_verify --bits 28 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

import submask
from submask import MaskMetadata, MaskWriter, TensorMask
from submask.codecs import codec_for
from tools.bench.report import best_time, markdown_table, write_section


def write_mask(path: Path, density: float, bits: int, tensors: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    per_tensor = (1 << bits) // tensors
    with MaskWriter(path, MaskMetadata(kind="other")) as writer:
        for index in range(tensors):
            bools = rng.random(per_tensor, dtype=np.float32) < density
            writer.add(f"model.layers.{index}.mlp.up_proj.weight", TensorMask.from_numpy(bools.reshape(-1, 2048)))


def decode_only(path: Path) -> int:
    """Decode every payload with its codec and no check: the baseline that verification adds to."""
    total = 0
    with submask.open(path) as mask_file:
        for name, entry in mask_file.entries.items():
            codec = codec_for(entry.encoding, entry.config)
            total += codec.decode(mask_file.payload(name), entry.bits).size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, default=28, help="log2 of the parameters per mask (default 28)")
    parser.add_argument("--tensors", type=int, default=64, help="tensors per mask")
    parser.add_argument("--densities", default="0.01,0.05,0.3")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="bench_verify."))
    rows = []
    try:
        for index, density in enumerate(float(d) for d in args.densities.split(",")):
            a, b = scratch / f"a{index}.smask", scratch / f"b{index}.smask"
            write_mask(a, density, args.bits, args.tensors, seed=2 * index)
            write_mask(b, density, args.bits, args.tensors, seed=2 * index + 1)
            submask.compare([a, b])  # warm: page cache, kernels
            verified = best_time(partial(submask.compare, [a, b]), args.repeat)
            unverified = best_time(partial(submask.compare, [a, b], verify=False), args.repeat)
            loaded = best_time(partial(submask.load, a), args.repeat)
            decoded = best_time(partial(decode_only, a), args.repeat)
            with submask.open(a) as mask_file:
                encodings = "/".join(sorted({e.encoding for e in mask_file.entries.values()}))
            rows.append([f"{density:.0%}", encodings, f"{verified * 1e3:.0f} ms", f"{unverified * 1e3:.0f} ms",
                         f"{verified / unverified:.2f}x", f"{loaded * 1e3:.0f} ms", f"{decoded * 1e3:.0f} ms",
                         f"{loaded / decoded:.2f}x"])
            print(rows[-1], flush=True)
            a.unlink()
            b.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    body = "\n\n".join([
        f"Two random masks of 2^{args.bits} parameters each ({args.tensors} tensors), default encodings, warm "
        f"files, best of {args.repeat}. compare: `submask.compare` of the pair verifying every CRC-32 (the "
        "default) against `verify=False`. load: `submask.load` of one mask (decode + pad bits, popcount and "
        "CRC-32 checks) against decoding the same payloads with no check. A ratio is the cost of verifying: "
        f"1.00x means free. Load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end "
        f"(other jobs on the machine's {os.cpu_count()} cores): above the core count, timings are noisy.",
        markdown_table(["density", "encoding", "compare (verified)", "compare --no-verify", "ratio",
                        "load (verified)", "decode only", "ratio"], rows),
    ])
    print(body)
    write_section("verify", "Verification: compare and load with and without checks", body)


if __name__ == "__main__":
    main()
