"""Restricted finetuning: gradient + optimizer-state memory and step time of sparse mode, dense mode and
unrestricted training, side by side, for random masks of 5%, 15% and 30% density.

The model is a stack of square ``nn.Linear`` layers in float32 (about 200M parameters by default; smaller
with ``--layers``/``--width``), trained with AdamW (weight decay 0.1) on a random batch. Step time is forward
+ backward + ``optimizer.step()`` (+ the dense mode's reset hook), the fastest of ``--steps`` steps after
one warm-up step, the three modes stepping in turn on their own copies of the model. Memory is the bytes of every ``.grad`` and every tensor in ``optimizer.state`` after a step.

    .venv/bin/python -m tools.bench.bench_train [--layers 48 --width 2048 --steps 5] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import gc
import time

import torch

import submask
from submask import Mask, TensorMask

from .report import markdown_table, write_section

DENSITIES = (0.05, 0.15, 0.30)


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


class Setup:
    """One way of training a copy of the model: unrestricted, or restricted to a mask in a mode."""

    def __init__(self, model: torch.nn.Module, mask: Mask | None, mode: str):
        self.model = copy.deepcopy(model)
        self.restriction = submask.restrict(self.model, mask, mode=mode) if mask is not None else None
        parameters = self.restriction.parameters() if self.restriction else self.model.parameters()
        self.optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.1)
        if self.restriction is not None:
            self.restriction.attach(self.optimizer)
        self.times: dict[int, list[float]] = {}

    def step(self, inputs: torch.Tensor) -> None:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=False)
        self.model(inputs).square().mean().backward()
        self.optimizer.step()
        if inputs.is_cuda:
            torch.cuda.synchronize()
        self.times.setdefault(len(inputs), []).append(time.perf_counter() - start)

    def result(self) -> dict[str, float]:
        return {"memory": train_memory(self.optimizer),
                "overhead": self.restriction.overhead_bytes if self.restriction else 0,
                **{f"step_s_{batch}": min(times[1:]) for batch, times in self.times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 256],
                        help="batch sizes (rows of the input) to time steps at")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    model = build_model(args.layers, args.width, args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.0f}M parameters on {args.device}, {torch.get_num_threads()} threads")
    rows = []
    for density in DENSITIES:
        mask = random_mask(model, density)
        setups = {"unrestricted": Setup(model, None, "none"), "sparse": Setup(model, mask, "sparse"),
                  "dense": Setup(model, mask, "dense")}
        for batch in args.batches:
            inputs = torch.randn(batch, args.width, device=args.device)
            for _ in range(args.steps + 1):  # interleaved, so that load from other jobs hits every mode alike
                for setup in setups.values():
                    setup.step(inputs)
        results = {mode: setup.result() for mode, setup in setups.items()}
        del setups
        gc.collect()
        full = results["unrestricted"]
        for mode, result in results.items():
            expected = full["memory"] * (mask.density if mode == "sparse" else 1.0)
            steps = [f"{result[f'step_s_{b}'] * 1e3:,.0f} ({result[f'step_s_{b}'] / full[f'step_s_{b}']:.2f})"
                     for b in args.batches]
            rows.append([f"{density:.0%}", mode, f"{result['memory'] / 2**20:,.0f}",
                         f"{result['memory'] / expected:.3f}", f"{result['overhead'] / 2**20:,.0f}", *steps])
            print(" | ".join(rows[-1]), flush=True)
    body = (f"Model: {args.layers} x nn.Linear({args.width}, {args.width}) + Tanh, {params / 1e6:.0f}M float32 "
            f"parameters, on {args.device} ({torch.get_num_threads()} torch threads), AdamW (weight decay 0.1), "
            f"batches of {' and '.join(map(str, args.batches))} rows; random masks (each entry set with probability = density). *Train memory* = bytes of "
            "all `.grad` + `optimizer.state` tensors after a step; its ratio is against density x unrestricted "
            "for sparse (goal <= 1.2) and against unrestricted otherwise. *Restriction overhead* = memory the "
            "restriction adds (dense: saved start values + bool masks; sparse: int32 indexes). *Step* = forward + "
            f"backward + optimizer step (+ dense reset), the fastest of {args.steps} steps after a warm-up, the "
            "three modes stepping in turn on their own copies of the model; its ratio is against unrestricted "
            "(goal for dense <= 1.3). Other jobs shared the 2 CPU cores during the run, which adds noise to the "
            "step times (the fastest step is the least disturbed one).\n\n"
            + "Small batches make the optimizer step dominate (the worst case for dense mode's two extra passes "
            "over the parameters); larger ones are closer to real finetuning, where forward and backward dominate."
            "\n\n" + markdown_table(["density", "mode", "train memory (MiB)", "memory ratio",
                                      "restriction overhead (MiB)",
                                      *[f"step ms, batch {b} (ratio)" for b in args.batches]], rows))
    if not args.no_write:
        write_section(f"train-{args.device.split(':')[0]}", f"Restricted finetuning ({args.device})", body,
                      "python -m tools.bench.bench_train " + " ".join(
                          f"--{k} {getattr(args, k)}" for k in ("layers", "width", "steps", "device"))
                      + " --batches " + " ".join(map(str, args.batches)))


if __name__ == "__main__":
    main()
