"""Builds where the tensors are: device-resident diffs, files to the GPU, and the training tracker's cost.

Three parts, each against a baseline measured in the same run (issue 13):

- resident: ``build_mask`` of two bf16 state dicts already on the device (``auto`` compares them there)
  beside a device-to-device copy of the same bytes; on a CPU-only machine, the torch backend on CPU
  tensors beside the numpy path and a CPU tensor copy;
- files, hot and cold: the CPU backend, the CUDA backend, ``auto`` and (without CUDA) the torch backend on
  the CPU, beside the raw read of both files and, with CUDA, a pinned and a pageable host-to-device copy;
- tracker: ``UpdateTracker.density()`` on a Llama-shaped model built from a transformers config, per call
  and as a share of training step time at one call every 50 steps.

    python -m tools.bench.bench_gpu [--resident-gb 28] [--file-gb 2] [--llama-layers 8] [--no-write]

Defaults fit one 80 GB+ GPU in under 5 minutes; without CUDA they shrink to CPU sizes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from submask import UpdateTracker, build_mask, count_changes
from submask.builder.backends import TorchBackend
from submask.builder.run import MAX_CHUNK_BYTES, READ_BUDGET_BYTES
from tools.bench.bench_build import MIB, drop_cache, read_raw, tensor_sizes, write_pair
from tools.bench.report import markdown_table, write_section

GB = 10**9
TENSOR_ELEMENTS = 256 * 1024 * 1024  # bf16 elements per resident tensor (512 MiB), like a large layer


def best_of(run: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Best wall time of ``repeats`` runs (after one warm-up run), synchronising the device around each."""
    run()
    best = float("inf")
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - started)
    return best


def resident_pair(nbytes: int, device: str, changed: float = 0.25) -> tuple[dict, dict]:
    """Two bf16 state dicts on ``device``, ``changed`` of the values moved by one ulp."""
    base, finetuned, left, k = {}, {}, nbytes // 2, 0
    generator = torch.Generator(device=device).manual_seed(0)
    while left > 0:
        numel = min(left, TENSOR_ELEMENTS)
        bits = torch.randint(0x3B80, 0x3D80, (numel,), dtype=torch.int16, device=device, generator=generator)
        moved = bits + (torch.rand(numel, device=device, generator=generator) < changed).to(torch.int16)
        base[f"model.layers.{k}.weight"] = bits.view(torch.bfloat16)
        finetuned[f"model.layers.{k}.weight"] = moved.view(torch.bfloat16)
        left, k = left - numel, k + 1
    return base, finetuned


def bench_resident(nbytes: int, cuda: bool, repeats: int) -> list[list[str]]:
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    base, finetuned = resident_pair(nbytes, device)
    total = 2 * nbytes  # bytes of input: both sides
    copies = {name: torch.empty_like(value) for name, value in base.items()}

    def copy() -> None:
        for name, value in base.items():
            copies[name].copy_(value)
        for name, value in finetuned.items():
            copies[name].copy_(value)

    methods = {f"copy of both on {device} (baseline)": copy}
    if cuda:
        methods["build, auto (on the GPU)"] = lambda: build_mask(base, finetuned)
        methods["build, auto, no ladder"] = lambda: build_mask(base, finetuned, ladder=False)
        methods["count_changes (no bits back)"] = lambda: count_changes(base, finetuned)
    else:
        methods["build, torch backend (CPU tensors)"] = lambda: build_mask(base, finetuned, device=TorchBackend("cpu"))
        methods["count_changes, torch backend"] = lambda: count_changes(base, finetuned, device=TorchBackend("cpu"))
        methods["build, numpy path (device='cpu')"] = lambda: build_mask(base, finetuned, device="cpu")
    times = {}
    for name, run in methods.items():
        times[name] = best_of(run, repeats, sync)
        print(f"resident {name:40s} {total / times[name] / GB:8.2f} GB/s", flush=True)
    baseline = times[next(iter(methods))]
    return [[name, f"{total / t / GB:.2f}", f"{baseline / t:.2f}"] for name, t in times.items()]


def bench_files(root: Path, nbytes: int, cuda: bool, workers: int) -> list[list[str]]:
    paths = write_pair(root, tensor_sizes(nbytes // 2 * 2, min(nbytes, GB // 2) // 2 * 2), 0.25)
    total = sum(p.stat().st_size for p in paths)
    chunk_bytes = min(MAX_CHUNK_BYTES, READ_BUDGET_BYTES // (2 * (workers + 1)))
    out = root / "mask.smask"
    methods: dict[str, Callable[[], object]] = {
        "read (raw reader, baseline)": lambda: read_raw(paths, workers, chunk_bytes),
        "build, CPU backend": lambda: build_mask(*paths, out, device="cpu", workers=workers, overwrite=True)}
    if cuda:
        methods["build, CUDA backend"] = lambda: build_mask(*paths, out, device="cuda", workers=workers,
                                                            overwrite=True)
        for mib, threads in ((16, workers), (64, min(workers, 4))):  # larger chunks: fewer launches and syncs
            methods[f"build, CUDA backend, {mib} MiB chunks, {threads} workers"] = (
                lambda mib=mib, threads=threads: build_mask(*paths, out, device="cuda", workers=threads,
                                                            chunk_bytes=mib * MIB, overwrite=True))
        methods["pinned host-to-device copy"] = lambda: host_to_device(paths, pinned=True)
        methods["pageable host-to-device copy"] = lambda: host_to_device(paths, pinned=False)
    else:
        methods["build, torch backend on the CPU"] = lambda: build_mask(*paths, out, device=TorchBackend("cpu"),
                                                                         workers=workers, overwrite=True)
    methods["build, auto"] = lambda: build_mask(*paths, out, workers=workers, overwrite=True)
    rows = {}
    for cache in ("hot", "cold"):
        read_raw(paths, workers, chunk_bytes)
        for name, run in methods.items():
            if cache == "cold":
                drop_cache(paths)
            started = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            rows.setdefault(name, {})[cache] = time.perf_counter() - started
            print(f"files {cache:4s} {name:40s} {total / rows[name][cache] / GB:8.2f} GB/s", flush=True)
    base = rows["read (raw reader, baseline)"]
    return [[name, f"{total / t['hot'] / GB:.2f}", f"{base['hot'] / t['hot']:.2f}", f"{total / t['cold'] / GB:.2f}",
             f"{base['cold'] / t['cold']:.2f}"] for name, t in rows.items()]


def host_to_device(paths: tuple[Path, ...], pinned: bool, piece: int = 256 * MIB) -> None:
    """Read both files piece by piece into host memory (pinned or not) and copy each piece to the GPU."""
    host = torch.empty(piece, dtype=torch.uint8, pin_memory=pinned)
    device = torch.empty(piece, dtype=torch.uint8, device="cuda")
    view = memoryview(host.numpy())
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while got := handle.readinto(view):
                device[:got].copy_(host[:got], non_blocking=pinned)
                torch.cuda.synchronize()  # the host buffer is read into again next


def bench_tracker(cuda: bool, layers: int, hidden: int, steps: int = 5, every: int = 50) -> list[list[str]]:
    """Tracker cost; bf16 on a GPU, float32 and a small vocabulary and batch on the CPU (bf16 CPU matmuls
    are slow enough to distort the share of step time)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=max(64, hidden * 8 // 3 // 64 * 64),
                         num_hidden_layers=layers, num_attention_heads=max(1, hidden // 128),
                         num_key_value_heads=max(1, hidden // 512), vocab_size=32000 if cuda else 4096)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(0, config.vocab_size, (4, 256) if cuda else (2, 64), device=device)
    tracker = UpdateTracker(model)

    def step() -> None:
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step_time = best_of(step, steps, sync)
    mask_time = best_of(tracker.mask, 3, sync)
    call_time = best_of(tracker.density, 3, sync)
    params = sum(p.numel() for p in model.parameters())
    print(f"tracker: {params / 1e6:.0f}M params, step {step_time * 1e3:.1f} ms, mask() {mask_time * 1e3:.1f} ms, "
          f"density() {call_time * 1e3:.1f} ms, {call_time / every / step_time:.2%} of step time at N={every}",
          flush=True)
    return [[(f"Llama {layers} layers, hidden {hidden} ({params / 1e6:.0f}M params, {str(dtype)[6:]}, "
             f"batch {tuple(batch.shape)}, {device})"),
             f"{step_time * 1e3:.1f}", f"{mask_time * 1e3:.1f}", f"{call_time * 1e3:.1f}",
             f"{call_time / every / step_time:.2%}"]]


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resident-gb", type=float, default=28.0 if cuda else 0.25,
                        help="bytes of each resident checkpoint (GB); 28 GB of bf16 is 14B parameters")
    parser.add_argument("--file-gb", type=float, default=2.0 if cuda else 0.125, help="size of each file (GB)")
    parser.add_argument("--llama-layers", type=int, default=16 if cuda else 2)
    parser.add_argument("--llama-hidden", type=int, default=2048 if cuda else 256)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/submask-bench-gpu"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    args = parser.parse_args()

    resident = bench_resident(int(args.resident_gb * GB), cuda, args.repeats)
    if cuda:
        torch.cuda.empty_cache()
    try:
        files = bench_files(args.dir, int(args.file_gb * GB), cuda, args.workers)
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    tracker = bench_tracker(cuda, args.llama_layers, args.llama_hidden)

    where = "one GPU" if cuda else "the CPU only (no GPU on this machine)"
    body = "\n\n".join([
        (f"On {where}. Resident: two bf16 state dicts of {args.resident_gb:g} GB each on the "
         f"{'GPU' if cuda else 'CPU'}, 25% of values moved by one ulp; GB/s counts the bytes of both; ratio against "
         f"a copy of the same bytes on the same device, best of {args.repeats}."),
        markdown_table(["resident diff", "GB/s", "ratio to copy"], resident),
        (f"Files: two bf16 .safetensors files of {args.file_gb:g} GB each, {args.workers} worker threads; hot from "
         "the page cache, cold after posix_fadvise(DONTNEED); ratio against the raw read of both files."),
        markdown_table(["files", "hot GB/s", "hot ratio", "cold GB/s", "cold ratio"], files),
        ("Tracker: `UpdateTracker(model)` after AdamW steps of one batch: `mask()` (the update mask, bits back on "
         "the host) and `density()` (per-tensor, per-module and ladder fractions from `count_changes`: counts "
         "only); best of 3 calls and of 5 steps. The share is density()'s at one call every 50 steps."),
        markdown_table(["model", "step (ms)", "mask() (ms)", "density() (ms)", "share of step time at N=50"],
                       tracker),
    ])
    print(body)
    if not args.no_write:
        write_section("gpu", "Device-resident builds, files to the GPU and the update tracker", body,
                      "python -m tools.bench.bench_gpu " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
