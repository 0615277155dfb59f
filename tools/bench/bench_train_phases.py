"""Where restricted finetuning's peak memory is: peak RSS of each phase of a training step (forward,
backward, gradient clipping, optimizer step) and the RSS left between steps, unrestricted and sparse, each
under glibc's default (dynamic) mmap threshold and under a fixed one.

Each configuration runs in a fresh process (glibc reads ``MALLOC_MMAP_THRESHOLD_`` at start-up). A phase's
peak is the kernel's high-water mark of resident memory (``VmHWM``), reset before the phase by writing 5 to
``/proc/self/clear_refs``: no tracing, no allocator hooks. Figures are of the last of ``--steps`` steps.

    .venv/bin/python -m tools.bench.bench_train_phases [--hidden 1024 --layers 8 --vocab 32000 --density 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PHASES = ("between steps", "forward", "backward", "clip", "optimizer step")
THRESHOLD = 131072  # glibc's initial M_MMAP_THRESHOLD, kept fixed


def _memory() -> dict[str, int]:
    """VmHWM and VmRSS of this process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) // 1024 for key in ("VmHWM", "VmRSS")}


def _reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from the current RSS


def run_one(args: argparse.Namespace) -> dict[str, int]:
    """Peak RSS (MiB) of each phase of the last step, in this process."""
    import torch

    import submask

    from .bench_train import build_model, random_mask

    model = build_model(args)
    restriction = (submask.restrict(model, random_mask(model, args.density), mode="sparse")
                   if args.mode == "sparse" else None)
    parameters = restriction.parameters() if restriction else list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.1)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq))
    peaks: dict[str, int] = {}
    for _ in range(args.steps):
        peaks["between steps"] = _memory()["VmRSS"]
        _reset()
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=tokens, labels=tokens).loss
        peaks["forward"] = _memory()["VmHWM"]
        _reset()
        loss.backward()
        del loss
        peaks["backward"] = _memory()["VmHWM"]
        _reset()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        peaks["clip"] = _memory()["VmHWM"]
        _reset()
        optimizer.step()
        peaks["optimizer step"] = _memory()["VmHWM"]
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", choices=["unrestricted", "sparse"], help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    args.device, args.ranks = "cpu", 1
    if args.one:
        args.mode = args.one
        print(json.dumps(run_one(args)))
        return

    from .report import markdown_table, write_section

    rows = []
    load = os.getloadavg()[0]
    for threshold in (0, THRESHOLD):
        for mode in ("unrestricted", "sparse"):
            command = [sys.executable, "-m", "tools.bench.bench_train_phases", "--one", mode]
            for key in ("hidden", "layers", "vocab", "batch", "seq", "density", "steps"):
                command += [f"--{key}", str(getattr(args, key))]
            env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": str(threshold)} if threshold else {})}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                raise SystemExit(f"{mode} failed:\n{done.stderr[-2000:]}")
            peaks = json.loads(done.stdout.strip().splitlines()[-1])
            label = f"{mode}" + (f" {args.density:.0%}" if mode == "sparse" else "")
            rows.append([label, f"{threshold:,}" if threshold else "dynamic (default)"]
                        + [f"{peaks[phase]:,}" for phase in PHASES] + [f"{max(peaks.values()):,}"])
            print(" | ".join(rows[-1]), flush=True)
    body = (
        f"`LlamaForCausalLM` (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, tied embeddings, "
        f"random init), float32, AdamW, `clip_grad_norm_`, {args.batch} x {args.seq} tokens per step; sparse mode "
        f"with a random mask of {args.density:.0%}. Peak RSS in MiB of each phase of step {args.steps} (the "
        "kernel's high-water mark, reset before each phase), and the RSS between steps; each row a fresh "
        "process, with glibc's mmap threshold left dynamic (its default: after a large block is freed, blocks up "
        "to that size come from the heap, where freed ones stay resident) or fixed (`MALLOC_MMAP_THRESHOLD_`: "
        "every block of 128 KiB or more is mapped on its own and returned when freed). Load average "
        f"{load:.1f} -> {os.getloadavg()[0]:.1f} (memory figures do not depend on it).\n\n"
        + markdown_table(["run", "mmap threshold", *PHASES, "peak"], rows))
    if not args.no_write:
        write_section("train-phases-cpu", "Restricted finetuning: peak memory by phase (cpu)", body)


if __name__ == "__main__":
    main()
