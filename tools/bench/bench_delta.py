"""Deltas (``build --values``) against compressing the finetuned checkpoint, and rebuild speed against a copy.

Checkpoint pairs:

- synthetic RL-like bf16 pairs: ``--tensors`` tensors of ``--width`` x ``--width`` drawn from N(0, 0.02); at
  each ``--densities`` a random share of the values moves by 1 or 2 bf16 ulps up or down (what accumulated
  AdamW steps of lr 1e-6..1e-5 do to weights of magnitude ~0.02 once rounded to bf16: one ulp there is
  about 1.2e-4), the rest keeps its bits;
- the MiniLM finetunes of ``submask.examples.minilm`` in bf16 and fp32 (a few AdamW steps, real files).

Sizes, each as a fraction of the finetuned .safetensors file: the delta; (a) the file compressed with zstd
(level 3); (b) with zipnn; (c) zipnn's delta mode (XOR with the base file, then its compression). zipnn is
optional (``pip install zipnn``): without it those columns read n/a.

Times, best of ``--repeats``, warm page cache: *build* (``build_mask(values=True)`` to a file) against
reading both checkpoints, beside the same build without values; *rebuild* (``apply_mask(base, delta, out)``: write, hash and verify, fsync) against
a plain copy (read the base and the delta, write the finetuned file's bytes, fsync). ``vs copy`` above 1 is
faster than the copy; the goal is at least 0.8.

    .venv/bin/python -m tools.bench.bench_delta [--tensors 12 --width 2048 --densities 0.05 0.2 0.3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

import submask

from .report import best_time, markdown_table, write_section

READ_BLOCK = 16 * 2**20
ZSTD_LEVEL = 3


def write_rl_pair(root: Path, tensors: int, width: int, density: float, seed: int = 0) -> tuple[Path, Path]:
    """base.safetensors and finetuned.safetensors (bf16) under ``root``: ``density`` of the values moved by
    1-2 ulps."""
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(seed)
    base, finetuned = {}, {}
    for i in range(tensors):
        weights = torch.from_numpy(rng.normal(0.0, 0.02, size=(width, width)).astype(np.float32))
        bits = weights.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        moved = rng.random(bits.shape) < density
        step = rng.integers(1, 3, size=bits.shape, dtype=np.uint16)
        # moving the bits of a sign-magnitude float by +k / -k moves its magnitude by k ulps; tiny magnitudes only grow
        down = (rng.random(bits.shape) < 0.5) & ((bits & 0x7FFF) > 2)
        new = np.where(moved, np.where(down, bits - step, bits + step), bits).astype(np.uint16)
        base[f"layers.{i}.weight"] = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
        finetuned[f"layers.{i}.weight"] = torch.from_numpy(new.view(np.int16)).view(torch.bfloat16)
    save_file(base, root / "base.safetensors", metadata={"format": "pt"})
    save_file(finetuned, root / "finetuned.safetensors", metadata={"format": "pt"})
    return root / "base.safetensors", root / "finetuned.safetensors"


def write_minilm_pair(root: Path, dtype: str) -> tuple[Path, Path]:
    """The MiniLM pair of the tests (``tests/minilm_fixtures.py``: 3 AdamW steps) as model.safetensors files."""
    from submask.examples import minilm

    lr = 2e-5 if dtype == "bfloat16" else 1e-5
    base = Path(minilm.write_base(root / "base", dtype=dtype)) / "model.safetensors"
    finetuned = Path(minilm.finetune(root / "finetuned", steps=3, lr=lr, seed=0, dtype=dtype)) / "model.safetensors"
    return base, finetuned


def zstd_size(data: bytes) -> int:
    import zstandard

    return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data))


def zipnn_sizes(finetuned: bytes, base: bytes, dtype: str) -> tuple[int | None, int | None]:
    """zipnn of the finetuned file, and zipnn's delta mode against the base (None without zipnn, or for the
    delta when the files differ in length)."""
    try:
        from zipnn import ZipNN
    except ImportError:
        return None, None
    plain = len(ZipNN(input_format="byte", bytearray_dtype=dtype).compress(finetuned))
    if len(base) != len(finetuned):
        return plain, None
    delta = ZipNN(input_format="byte", bytearray_dtype=dtype, delta_compressed_type="byte")
    return plain, len(delta.compress(finetuned, delta_second_data=base))


def read_files(*paths: Path) -> None:
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.read(READ_BLOCK):
                pass


def fresh_best_time(run: Callable[[], object], out: Path, repeats: int) -> float:
    """``best_time`` of ``run`` writing into ``out``, removed before each call (not timed): no run pays for
    deleting the previous one's files."""
    times = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        times.append(best_time(run, 1))
    return min(times)


def plain_copy(base: Path, delta: Path, finetuned: Path, out: Path) -> None:
    """The least a rebuild must do: read its inputs and write the output's bytes, fsynced."""
    read_files(base, delta)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(finetuned, "rb") as source, open(out, "wb") as target:
        shutil.copyfileobj(source, target, READ_BLOCK)
        target.flush()
        os.fsync(target.fileno())


def measure(label: str, base: Path, finetuned: Path, dtype: str, repeats: int) -> list[str]:
    """One table row for a pair: sizes as fractions of the finetuned file, and times against their baselines."""
    work = finetuned.parent / f"work-{label.replace(' ', '-')}"
    work.mkdir()
    delta = work / "delta.smask"
    build_s = best_time(lambda: submask.build_mask(base, finetuned, delta, values=True, overwrite=True), repeats)
    mask_s = best_time(lambda: submask.build_mask(base, finetuned, work / "mask.smask", overwrite=True), repeats)
    read_s = best_time(lambda: read_files(base, finetuned), repeats)
    rebuild_s = fresh_best_time(lambda: submask.apply_mask(base, delta, work / "out"), work / "out", repeats)
    copy_s = fresh_best_time(lambda: plain_copy(base, delta, finetuned, work / "copy" / finetuned.name),
                             work / "copy", repeats)
    assert (work / "out" / finetuned.name).read_bytes() == finetuned.read_bytes()
    raw = finetuned.read_bytes()
    zipped, zipped_delta = zipnn_sizes(raw, base.read_bytes(), dtype)
    with submask.open(delta) as opened:
        density = opened.metadata.stats["changed"] / opened.metadata.stats["numel"]
    sizes = [delta.stat().st_size, zstd_size(raw), zipped, zipped_delta]
    shutil.rmtree(work)
    shares = ["n/a" if nbytes is None else f"{nbytes / len(raw):.3f}" for nbytes in sizes]
    return [label, f"{density:.1%}", f"{len(raw) / 2**20:,.1f}", *shares, f"{build_s:.2f} ({build_s / read_s:.1f})",
            f"{mask_s:.2f}", f"{rebuild_s:.2f} ({copy_s / rebuild_s:.2f})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, default=12)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.05, 0.2, 0.3])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-minilm", action="store_true", help="synthetic pairs only")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    rows, load_start = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        root = Path(tmp)
        for density in args.densities:
            pair_dir = root / f"rl-{density}"
            pair_dir.mkdir()
            base, finetuned = write_rl_pair(pair_dir, args.tensors, args.width, density)
            rows.append(measure(f"synthetic RL bf16 {density:.0%}", base, finetuned, "bfloat16", args.repeats))
            print(" | ".join(rows[-1]), flush=True)
            shutil.rmtree(pair_dir)
        if not args.no_minilm:
            for dtype, zipnn_dtype in (("bfloat16", "bfloat16"), ("float32", "float32")):
                base, finetuned = write_minilm_pair(root / dtype, dtype)
                rows.append(measure(f"MiniLM {dtype}", base, finetuned, zipnn_dtype, args.repeats))
                print(" | ".join(rows[-1]), flush=True)
    body = (f"Synthetic RL-like bf16 pairs: {args.tensors} tensors of {args.width} x {args.width} "
            f"({args.tensors * args.width ** 2 * 2 / 2**20:,.0f} MiB per checkpoint), weights N(0, 0.02), the "
            "changed share of values moved by 1-2 bf16 ulps (accumulated small AdamW steps); and the MiniLM "
            "finetunes of the tests (3 AdamW steps). Sizes are fractions of the finetuned .safetensors file: "
            f"the delta (`build --values`), (a) zstd level {ZSTD_LEVEL} of the file, (b) zipnn of the file, (c) "
            "zipnn's delta mode (XOR with the base file, then compressed). *build* is seconds of "
            "`build_mask(values=True)` to a file, with its ratio against reading both checkpoints, and *mask only* "
            "the same build without values; *rebuild* is "
            "seconds of `apply_mask(base, delta, out)` (write, SHA-256, fsync), with the speed of a plain copy "
            "(read base and delta, write the file's bytes, fsync) divided by it: the goal is at least 0.80. "
            f"Best of {args.repeats}, warm page cache. Load average {load_start:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end (other jobs on the machine's {os.cpu_count()} cores): the copy is "
            "mostly kernel memcpy, while a rebuild also hashes, decodes values and scatters them, so it suffers "
            "more from a busy machine.\n\n"
            + markdown_table(["pair", "changed", "MiB", "delta", "(a) zstd", "(b) zipnn", "(c) zipnn delta",
                              "build s (vs read)", "mask only s", "rebuild s (vs copy)"], rows))
    if not args.no_write:
        write_section("delta", "Deltas: size against compressing the checkpoint, rebuild against a copy", body)


if __name__ == "__main__":
    main()
