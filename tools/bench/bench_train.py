"""Restricted finetuning: gradient + optimizer-state memory and step time of sparse mode, dense mode and
unrestricted training, side by side, for random masks of 5%, 15% and 30% density.

The model is a stack of square ``nn.Linear`` layers in float32 (about 200M parameters by default; smaller
with ``--layers``/``--width``), trained with AdamW (weight decay 0.1) on a random batch. Step time is forward
+ backward + ``optimizer.step()`` (+ the dense mode's reset hook), the median of ``--steps`` steps after one
warm-up step. Memory is the bytes of every ``.grad`` and every tensor in ``optimizer.state`` after a step.

    .venv/bin/python -m tools.bench.bench_train [--layers 48 --width 2048 --steps 5] [--device cuda]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch

import submask
from submask import Mask, TensorMask

from .report import markdown_table, write_section

DENSITIES = (0.05, 0.15, 0.30)
BATCH = 16


def build_model(layers: int, width: int, device: str) -> torch.nn.Sequential:
    torch.manual_seed(0)
    blocks: list[torch.nn.Module] = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    return torch.nn.Sequential(*blocks).to(device)


def random_mask(model: torch.nn.Module, density: float) -> Mask:
    generator = torch.Generator().manual_seed(1)
    return Mask({name: TensorMask.from_torch(torch.rand(p.shape, generator=generator) < density)
                 for name, p in model.named_parameters()})


def train_memory(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the gradients and optimizer state of the parameters the optimizer updates."""
    grads = sum(p.grad.nbytes for group in optimizer.param_groups for p in group["params"] if p.grad is not None)
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.dim() > 0)
    return grads + state


def run(model: torch.nn.Module, mask: Mask | None, mode: str, steps: int, device: str) -> dict[str, float]:
    """Train ``steps`` + 1 steps; median step seconds, train memory and restriction overhead."""
    restriction = submask.restrict(model, mask, mode=mode) if mask is not None else None
    optimizer = torch.optim.AdamW(restriction.parameters() if restriction else model.parameters(), lr=1e-4,
                                  weight_decay=0.1)
    if restriction is not None:
        restriction.attach(optimizer)
    width = model[0].in_features
    inputs = torch.randn(BATCH, width, device=device, generator=None)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        model(inputs).square().mean().backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"step_s": statistics.median(times[1:]), "memory": train_memory(optimizer),
              "overhead": restriction.overhead_bytes if restriction else 0}
    if restriction is not None:
        restriction.remove()
    del optimizer
    for p in model.parameters():
        p.grad = None
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    model = build_model(args.layers, args.width, args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.0f}M parameters on {args.device}, {torch.get_num_threads()} threads")
    rows = []
    for density in DENSITIES:
        mask = random_mask(model, density)
        full = run(model, None, "none", args.steps, args.device)  # the baseline, measured next to each density
        results = {mode: run(model, mask, mode, args.steps, args.device) for mode in ("sparse", "dense")}
        for mode, result in (("unrestricted", full), *results.items()):
            expected = full["memory"] * (mask.density if mode == "sparse" else 1.0)
            rows.append([f"{density:.0%}", mode, f"{result['memory'] / 2**20:,.0f}",
                         f"{result['memory'] / expected:.3f}", f"{result['overhead'] / 2**20:,.0f}",
                         f"{result['step_s'] * 1e3:,.0f}", f"{result['step_s'] / full['step_s']:.2f}"])
            print(" | ".join(rows[-1]))
    body = (f"Model: {args.layers} x nn.Linear({args.width}, {args.width}) + Tanh, {params / 1e6:.0f}M float32 "
            f"parameters, on {args.device} ({torch.get_num_threads()} torch threads), AdamW (weight decay 0.1), "
            f"batch {BATCH}; random masks (each entry set with probability = density). *Train memory* = bytes of "
            "all `.grad` + `optimizer.state` tensors after a step; its ratio is against density x unrestricted "
            "for sparse (goal <= 1.2) and against unrestricted otherwise. *Restriction overhead* = memory the "
            "restriction adds (dense: saved start values + bool masks; sparse: int32 indexes). *Step* = forward + "
            f"backward + optimizer step (+ dense reset), median of {args.steps} steps after a warm-up; its ratio "
            "is against unrestricted measured in the same run just before (goal for dense <= 1.3). Other jobs may "
            "share the CPU cores, which adds noise to the step times.\n\n"
            + markdown_table(["density", "mode", "train memory (MiB)", "memory ratio", "restriction overhead (MiB)",
                              "step (ms)", "step ratio"], rows))
    if not args.no_write:
        write_section(f"train-{args.device.split(':')[0]}", f"Restricted finetuning ({args.device})", body,
                      "python -m tools.bench.bench_train " + " ".join(
                          f"--{k} {getattr(args, k)}" for k in ("layers", "width", "steps", "device")))


if __name__ == "__main__":
    main()
