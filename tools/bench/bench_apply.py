"""``apply_mask`` throughput against reading its three inputs (base, finetuned, mask), side by side.

Writes a synthetic bf16 checkpoint pair to a temp dir (``--tensors`` tensors of ``--width`` x ``--width``;
the finetuned model differs from the base at ``--density`` of the positions), builds the exact update mask
and times, best of ``--repeats`` (warm page cache for all):

- *read inputs*: read both .safetensors files end to end and ``submask.load`` the mask (the baseline);
- *apply*: ``submask.apply_mask`` with that mask, writing (and fsyncing) the output model dir.

    .venv/bin/python -m tools.bench.bench_apply [--tensors 16 --width 4096 --density 0.05]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

import submask
from submask import Mask, TensorMask

from .report import best_time, markdown_table, write_section

READ_BLOCK = 16 * 2**20


def write_pair(root: Path, tensors: int, width: int, density: float) -> Mask:
    """Write base.safetensors and finetuned.safetensors (bf16) under ``root``; return the update mask."""
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    base, finetuned, masks = {}, {}, {}
    for i in range(tensors):
        bits = rng.integers(0, 2**16, size=(width, width), dtype=np.uint16)
        changed = rng.random((width, width)) < density
        base[f"layers.{i}.weight"] = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
        finetuned[f"layers.{i}.weight"] = torch.from_numpy((bits ^ changed.astype(np.uint16)).view(np.int16)
                                                          ).view(torch.bfloat16)
        masks[f"layers.{i}.weight"] = TensorMask.from_numpy(changed)
    save_file(base, root / "base.safetensors")
    save_file(finetuned, root / "finetuned.safetensors")
    return Mask(masks)


def read_inputs(root: Path) -> None:
    for name in ("base.safetensors", "finetuned.safetensors"):
        with open(root / name, "rb", buffering=0) as handle:
            while handle.read(READ_BLOCK):
                pass
    submask.load(root / "mask.smask")


def read_and_copy(root: Path) -> None:
    """What any apply must at least do: read the three inputs and write a model-sized file, fsynced."""
    read_inputs(root)
    with open(root / "finetuned.safetensors", "rb") as source, open(root / "copy.safetensors", "wb") as target:
        shutil.copyfileobj(source, target, READ_BLOCK)
        target.flush()
        os.fsync(target.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, default=16)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        root = Path(tmp)
        mask = write_pair(root, args.tensors, args.width, args.density)
        submask.save(mask, root / "mask.smask", overwrite=True)
        size = (root / "finetuned.safetensors").stat().st_size
        read_s = best_time(lambda: read_inputs(root), args.repeats)
        copy_s = best_time(lambda: read_and_copy(root), args.repeats)
        apply_s = best_time(lambda: submask.apply_mask(
            root / "base.safetensors", root / "finetuned.safetensors", root / "mask.smask", root / "out",
            overwrite=True), args.repeats)
        out = (root / "out" / "finetuned.safetensors").stat().st_size
        mask_mib = (root / "mask.smask").stat().st_size / 2**20
    rows = [["read inputs (baseline)", f"{read_s:.2f}", f"{size / 2**20 / read_s:,.0f}", "1.00", "-"],
            ["read inputs + write a copy, fsync", f"{copy_s:.2f}", f"{size / 2**20 / copy_s:,.0f}",
             f"{copy_s / read_s:.2f}", "1.00"],
            ["apply_mask", f"{apply_s:.2f}", f"{out / 2**20 / apply_s:,.0f}", f"{apply_s / read_s:.2f}",
             f"{apply_s / copy_s:.2f}"]]
    for row in rows:
        print(" | ".join(row))
    body = (f"Synthetic bf16 pair: {args.tensors} tensors of {args.width} x {args.width} "
            f"({size / 2**20:,.0f} MiB per checkpoint), {mask.density:.1%} of the values changed, exact update "
            f"mask ({mask_mib:.1f} MiB). Best of {args.repeats}, warm page cache. *MiB/s* is per checkpoint size "
            "(the output has the same size); *ratio* is seconds against reading the three inputs in the same run, "
            "*vs copy* against reading them and writing a model-sized copy with fsync (the least any apply must "
            "do: it shows the disk's write speed). Other jobs may share the CPU cores.\n\n"
            + markdown_table(["step", "seconds", "MiB/s", "ratio", "vs copy"], rows))
    if not args.no_write:
        write_section("apply", "apply_mask throughput", body,
                      f"python -m tools.bench.bench_apply --tensors {args.tensors} --width {args.width} "
                      f"--density {args.density} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
