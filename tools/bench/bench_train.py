"""Restricted finetuning of a Llama-shaped model: step time and peak memory of unrestricted training, dense
mode and sparse mode, for random masks of 5%, 20% and 30% density.

The model is a transformers ``LlamaForCausalLM`` built from a ``LlamaConfig`` (random init, no download,
tied embeddings: sparse mode restricts the shared tensor once), trained with AdamW (weight decay 0.1) and
``clip_grad_norm_`` (1.0) on random tokens: each step accumulates ``--micro`` backwards of ``--batch`` x
``--seq`` tokens (at least 4k tokens per step by default). Each configuration runs in a fresh process, so
that its peak memory is its own: on CPU the peak RSS (``ru_maxrss``), on CUDA ``max_memory_allocated``.
Step time is the fastest of ``--steps`` steps after one warm-up step (of one micro-batch: it creates the
optimizer state, so that the measured steps hold all of it).

    .venv/bin/python -m tools.bench.bench_train [--hidden 256 --layers 2 --vocab 8000 --steps 1] [--device cuda]

``--interleave R`` instead times steps only: unrestricted, dense and sparse (20%) side by side in one process,
R rounds of one step each in rotating order, medians and ratios to unrestricted (printed, not written).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    import submask

DENSITIES = (0.05, 0.20, 0.30)
CHUNK = 1 << 20  # mask bits drawn per call: keeps the mask's own transient memory small


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75),
        num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=args.seq,
        tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config).to(args.device)


def random_mask(model: torch.nn.Module, density: float) -> submask.Mask:
    """Each entry set with probability ``density``, drawn and packed in chunks (never a full bool tensor)."""
    from submask import Mask, TensorMask

    rng = np.random.default_rng(1)
    masks = {}
    for name, parameter in model.named_parameters():
        numel = parameter.numel()
        packed = np.concatenate([np.packbits(rng.random(min(CHUNK, numel - start), dtype=np.float32) < density)
                                 for start in range(0, numel, CHUNK)])
        masks[name] = TensorMask(tuple(parameter.shape), packed)
    return Mask(masks)


def peak_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_one(args: argparse.Namespace) -> dict[str, float]:
    """One configuration, in this process: build, (restrict,) train; step times and memory."""
    import torch

    import submask

    torch.manual_seed(0)
    model = build_model(args)
    weights = sum(p.nbytes for p in model.parameters())
    restriction = None
    if args.mode != "unrestricted":
        restriction = submask.restrict(model, random_mask(model, args.density), mode=args.mode)
    parameters = restriction.parameters() if restriction else list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.1)
    if restriction is not None:
        restriction.attach(optimizer)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = peak_bytes(args.device)
    tokens = torch.randint(0, args.vocab, (args.micro, args.batch, args.seq), device=args.device)
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for micro in tokens[:1] if step == 0 else tokens:  # the warm-up step creates the optimizer state
            (model(input_ids=micro, labels=micro).loss / args.micro).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    trained = [p for p in parameters if p.grad is not None]
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.dim() > 0)
    return {"step_s": min(times[1:]), "peak": peak_bytes(args.device), "before": before, "weights": weights,
            "train": sum(p.grad.nbytes for p in trained) + state,
            "overhead": restriction.overhead_bytes if restriction else 0}


def interleaved(args: argparse.Namespace, density: float = 0.20) -> dict[str, float]:
    """Median step time of unrestricted, dense and sparse training at ``density``, measured side by side in this
    process: three copies of the model, one step of each per round (the order rotating), ``args.interleave``
    rounds after a warm-up round."""
    import torch

    import submask

    runs = {}
    for mode in ("unrestricted", "dense", "sparse"):
        model = build_model(args)
        restriction = None if mode == "unrestricted" else submask.restrict(model, random_mask(model, density),
                                                                           mode=mode)
        parameters = restriction.parameters() if restriction else list(model.parameters())
        runs[mode] = (model, parameters, torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.1))
    tokens = torch.randint(0, args.vocab, (args.micro, args.batch, args.seq), device=args.device)
    times: dict[str, list[float]] = {mode: [] for mode in runs}
    order = list(runs)
    for round_ in range(args.interleave + 1):
        for mode in order[round_ % 3:] + order[:round_ % 3]:
            model, parameters, optimizer = runs[mode]
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            for micro in tokens:
                (model(input_ids=micro, labels=micro).loss / args.micro).backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if round_:  # the first round creates the optimizer state
                times[mode].append(time.perf_counter() - start)
    return {mode: float(np.median(values)) for mode, values in times.items()}


def spawn(args: argparse.Namespace, mode: str, density: float) -> dict[str, float]:
    """Run one configuration in a fresh interpreter and return its figures."""
    command = [sys.executable, "-m", "tools.bench.bench_train", "--one", mode, "--density", str(density)]
    for key in ("hidden", "layers", "vocab", "batch", "seq", "micro", "steps", "device"):
        command += [f"--{key}", str(getattr(args, key))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{mode} at {density:.0%} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=1, help="sequences per micro-batch")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--micro", type=int, default=8, help="micro-batches accumulated per step")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", choices=["unrestricted", "dense", "sparse"], help=argparse.SUPPRESS)
    parser.add_argument("--density", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--interleave", type=int, default=0,
                        help="only time steps: this many interleaved rounds of the three modes at 20%% density")
    args = parser.parse_args()
    if args.interleave:
        load = os.getloadavg()[0]
        medians = interleaved(args)
        print(f"interleaved step medians at 20% density, {args.interleave} rounds, load {load:.1f} -> "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: " + ", ".join(
                  f"{mode} {value * 1e3:,.0f} ms ({value / medians['unrestricted']:.3f}x)"
                  for mode, value in medians.items()))
        return
    if args.one:
        args.mode = args.one
        print(json.dumps(run_one(args)))
        return

    from .report import markdown_table, write_section

    mib = 2**20
    load_before = os.getloadavg()[0]
    full = spawn(args, "unrestricted", 0.0)
    state_bytes = full["train"]  # gradients + AdamW state of every parameter
    activations = full["peak"] - full["before"] - state_bytes  # what training adds besides them
    print(f"{full['weights'] / 4 / 1e6:.1f}M parameters, {args.micro * args.batch * args.seq} tokens per step, "
          f"unrestricted: {full['step_s'] * 1e3:,.0f} ms, peak {full['peak'] / mib:,.0f} MiB", flush=True)
    rows = [["-", "unrestricted", f"{full['step_s'] * 1e3:,.0f} (1.00)", f"{full['peak'] / mib:,.0f} (1.00)",
             f"{(full['peak'] - full['before']) / mib:,.0f} (1.00)", f"{state_bytes / mib:,.0f}", "0", "-"]]
    for density in DENSITIES:
        for mode in ("dense", "sparse"):
            result = spawn(args, mode, density)
            added = result["peak"] - full["before"]  # same model, same process start: a common baseline
            goal = activations + (density + 0.05) * state_bytes + result["overhead"]
            rows.append([f"{density:.0%}", mode,
                         f"{result['step_s'] * 1e3:,.0f} ({result['step_s'] / full['step_s']:.2f})",
                         f"{result['peak'] / mib:,.0f} ({result['peak'] / full['peak']:.2f})",
                         f"{added / mib:,.0f} ({added / (full['peak'] - full['before']):.2f})",
                         f"{result['train'] / mib:,.0f}", f"{result['overhead'] / mib:,.1f}",
                         ("yes" if added <= goal else "no") if mode == "sparse" else "-"])
            print(" | ".join(rows[-1]), flush=True)
    body = (
        f"Model: `LlamaForCausalLM` from a `LlamaConfig` (hidden {args.hidden}, {args.layers} layers, vocab "
        f"{args.vocab}, tied embeddings, random init), {full['weights'] / 4 / 1e6:.1f}M float32 parameters, on "
        f"{args.device}; AdamW (weight decay 0.1), `clip_grad_norm_` 1.0, {args.micro} x {args.batch} x "
        f"{args.seq} = {args.micro * args.batch * args.seq} tokens per step (gradient accumulation); random "
        "masks over every parameter. Each row is a fresh process. *Peak* = peak RSS of the process (CPU) or "
        "`max_memory_allocated` (CUDA); *added by training* = peak minus the unrestricted process's memory "
        "after building the model and optimizer (torch, weights, the same in every row). *Grad + optimizer "
        "state* = bytes of `.grad` and AdamW state after a step. *Overhead* = `Restriction.overhead_bytes` "
        "(dense: start values + packed masks; sparse: int32 indexes). *Goal met*: sparse's added memory <= "
        "activations + (density + 0.05) x unrestricted's gradients and state + overhead, activations being "
        "unrestricted's added memory minus its gradients and state. Sparse mode's values hold data only during "
        "the optimizer step (before, they made the goal unreachable above 15% density: 4 x density bytes per "
        "parameter against the 0.05 x 12 allowed). The tied embedding's full gradient is no extra: autograd "
        "holds the LM head's part of it until the embedding's part arrives, in every mode, so the activations "
        "term holds it too. Step = the fastest of "
        f"{args.steps} steps after a warm-up. Load average {load_before:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs on the machine's {os.cpu_count()} cores): above the "
        "core count, step times are noisy.\n\n"
        + markdown_table(["density", "mode", "step ms (ratio)", "peak MiB (ratio)",
                          "added by training MiB (ratio)", "grad + optimizer state MiB", "overhead MiB",
                          "goal met"], rows))
    if not args.no_write:
        write_section(f"train-{args.device.split(':')[0]}", f"Restricted finetuning ({args.device})", body,
                      "python -m tools.bench.bench_train " + " ".join(
                          f"--{k} {getattr(args, k)}" for k in ("hidden", "layers", "vocab", "batch", "seq",
                                                                "micro", "steps", "device")))


if __name__ == "__main__":
    main()
