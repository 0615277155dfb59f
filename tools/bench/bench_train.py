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
R rounds of one step each in rotating order, medians (wall and CPU time) and ratios to unrestricted, for each
model of ``--models HIDDENxVOCABxSEQxMICRO,...`` (BENCHMARKS.md's interleaved section).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
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
    if args.ranks == 1:
        return transformers.LlamaForCausalLM(config).to(args.device)
    return sharded_model(config)


def sharded_model(config: object) -> torch.nn.Module:
    """The model sharded by FSDP2 over this process group (each layer, then the root), built on the meta
    device and initialised shard by shard: no rank ever holds the full weights, so its peak is its own."""
    import torch
    import transformers
    from torch.distributed.fsdp import fully_shard

    from submask.sharding import local_shard

    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():  # norms at 1, the rest as transformers initialises them
            local = local_shard(parameter)[0]
            local.fill_(1.0) if parameter.dim() == 1 else local.normal_(0.0, 0.02)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # its buffers, computed again
    return model


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` held by this process (its shard of an FSDP2 parameter)."""
    from submask.sharding import local_shard

    return int(local_shard(tensor)[0].nbytes)


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
    if args.ranks > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set by spawn
    model = build_model(args)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
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
    tokens = torch.randint(0, args.vocab, (args.micro, args.batch, args.seq), device=args.device,
                           generator=torch.Generator(args.device).manual_seed(int(os.environ.get("RANK", 0))))
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
    state = sum(local_bytes(t) for s in optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.dim() > 0)
    return {"step_s": min(times[1:]), "peak": peak_bytes(args.device), "before": before, "weights": weights,
            "train": sum(local_bytes(p.grad) for p in trained) + state,
            "overhead": restriction.overhead_bytes if restriction else 0,
            "largest": max(local_bytes(p) for p in model.parameters())}


def interleaved(args: argparse.Namespace, density: float = 0.20) -> dict[str, dict[str, float]]:
    """Median step time (wall and process CPU seconds) of unrestricted, dense and sparse training at
    ``density``, measured side by side in this process: three copies of the model, one step of each per round
    (the order rotating), ``args.interleave`` rounds after a warm-up round."""
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
    times: dict[str, dict[str, list[float]]] = {mode: {"wall": [], "cpu": []} for mode in runs}
    order = list(runs)
    for round_ in range(args.interleave + 1):
        for mode in order[round_ % 3:] + order[:round_ % 3]:
            model, parameters, optimizer = runs[mode]
            wall, cpu = time.perf_counter(), time.process_time()
            optimizer.zero_grad(set_to_none=True)
            for micro in tokens:
                (model(input_ids=micro, labels=micro).loss / args.micro).backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if round_:  # the first round creates the optimizer state
                times[mode]["wall"].append(time.perf_counter() - wall)
                times[mode]["cpu"].append(time.process_time() - cpu)
    return {mode: {kind: float(np.median(values)) for kind, values in kinds.items()}
            for mode, kinds in times.items()}


def interleaved_report(args: argparse.Namespace) -> None:
    """Time each model of ``args.models`` (else the one of ``--hidden`` etc.) interleaved; print, and write
    BENCHMARKS.md's interleaved section."""
    from .report import markdown_table, write_section

    models = [tuple(int(x) for x in model.split("x")) for model in args.models.split(",")] if args.models else [
        (args.hidden, args.vocab, args.seq, args.micro)]
    rows = []
    for args.hidden, args.vocab, args.seq, args.micro in models:
        load = os.getloadavg()[0]
        medians = interleaved(args)
        wall, cpu = ({mode: kinds[kind] for mode, kinds in medians.items()} for kind in ("wall", "cpu"))
        rows.append([f"{args.hidden}, {args.vocab}, {args.seq} x {args.micro}", args.interleave,
                     f"{load:.1f} -> {os.getloadavg()[0]:.1f}", f"{wall['unrestricted'] * 1e3:,.0f}"]
                    + [f"{wall[mode] * 1e3:,.0f} ({wall[mode] / wall['unrestricted']:.2f})" for mode in
                       ("dense", "sparse")]
                    + [f"{cpu[mode] / cpu['unrestricted']:.2f}" for mode in ("dense", "sparse")])
        print(" | ".join(str(cell) for cell in rows[-1]), flush=True)
    body = (
        f"Unrestricted, dense and sparse training of three copies of one Llama-shaped model ({args.layers} "
        "layers, tied embeddings, random init), random masks of 20% density, AdamW (weight decay 0.1) and "
        f"`clip_grad_norm_`, {args.batch} sequence(s) per micro-batch: one step of each per round in rotating "
        "order, the rounds after a warm-up round, medians; ratios to unrestricted. *CPU* ratios are of the "
        "process's CPU time (`time.process_time`, every thread), less disturbed by other jobs than wall time "
        f"when the load average is above the machine's {os.cpu_count()} cores. Torch threads: "
        f"{args.threads or 'default'}.\n\n"
        + markdown_table(["model (hidden, vocab, seq x micro-batches)", "rounds", "load", "unrestricted ms",
                          "dense ms (ratio)", "sparse ms (ratio)", "dense CPU ratio", "sparse CPU ratio"], rows))
    if not args.no_write:
        write_section("train-interleaved", f"Restricted finetuning step time, interleaved ({args.device})", body)


def spawn(args: argparse.Namespace, mode: str, density: float) -> dict[str, float]:
    """Run one configuration in a fresh interpreter (one per rank with ``--ranks``) and return its figures:
    with several ranks, each figure is the largest over the ranks (per-rank peak)."""
    command = [sys.executable, "-m", "tools.bench.bench_train", "--one", mode, "--density", str(density)]
    for key in ("hidden", "layers", "vocab", "batch", "seq", "micro", "steps", "device", "ranks", "threads"):
        command += [f"--{key}", str(getattr(args, key))]
    with socket.socket() as probe:  # a free port for the ranks' rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    malloc = {"MALLOC_MMAP_THRESHOLD_": str(args.mmap_threshold)} if args.mmap_threshold else {}
    ranks = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={
        **os.environ, **malloc, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(args.ranks),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}) for rank in range(args.ranks)]
    results = []
    for process in ranks:
        out, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"{mode} at {density:.0%} failed:\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {key: max(result[key] for result in results) for key in results[0]}


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
    parser.add_argument("--models", help="with --interleave: models to time, HIDDENxVOCABxSEQxMICRO,...")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--ranks", type=int, default=1,
                        help="FSDP2 over this many gloo processes (CPU): per-rank peak memory")
    parser.add_argument("--modes", default="dense,sparse", help="restricted modes to run (memory table)")
    parser.add_argument("--mmap-threshold", type=int, default=0,
                        help="glibc's M_MMAP_THRESHOLD in bytes for the measured processes (0: glibc's dynamic "
                             "default, under which freed weight-sized gradients stay in the process's memory)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.interleave:
        interleaved_report(args)
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
    largest = full["largest"]
    print(f"{full['weights'] / 4 / 1e6:.1f}M parameters, {args.micro * args.batch * args.seq} tokens per step, "
          f"unrestricted: {full['step_s'] * 1e3:,.0f} ms, peak {full['peak'] / mib:,.0f} MiB", flush=True)
    rows = [["-", "unrestricted", f"{full['step_s'] * 1e3:,.0f} (1.00)", f"{full['peak'] / mib:,.0f} (1.00)",
             f"{(full['peak'] - full['before']) / mib:,.0f} (1.00)", f"{state_bytes / mib:,.0f}", "0", "-"]]
    for density in DENSITIES:
        for mode in args.modes.split(","):
            result = spawn(args, mode, density)
            added = result["peak"] - full["before"]  # same model, same process start: a common baseline
            # sparse mode reduces each weight's full gradient once autograd has made all of it: the largest
            # weight's (the tied embedding's, held from the LM head's backward to the embedding's) is extra
            goal = activations + (density + 0.05) * state_bytes + result["overhead"] + result["largest"]
            rows.append([f"{density:.0%}", mode,
                         f"{result['step_s'] * 1e3:,.0f} ({result['step_s'] / full['step_s']:.2f})",
                         f"{result['peak'] / mib:,.0f} ({result['peak'] / full['peak']:.2f})",
                         f"{added / mib:,.0f} ({added / (full['peak'] - full['before']):.2f})",
                         f"{result['train'] / mib:,.0f}", f"{result['overhead'] / mib:,.1f}",
                         ("yes" if added <= goal else "no") if mode == "sparse" else "-"])
            print(" | ".join(rows[-1]), flush=True)
    fsdp = (f"FSDP2 (`fully_shard` on each layer and the root) over {args.ranks} gloo processes, each built on the "
            "meta device and initialised shard by shard, each rank training its own tokens; every figure is the "
            "largest over the ranks (per-rank peak). " if args.ranks > 1 else "")
    body = (
        f"Model: `LlamaForCausalLM` from a `LlamaConfig` (hidden {args.hidden}, {args.layers} layers, vocab "
        f"{args.vocab}, tied embeddings, random init), {full['weights'] / 4 / 1e6:.1f}M float32 parameters, on "
        f"{args.device}; AdamW (weight decay 0.1), `clip_grad_norm_` 1.0, {args.micro} x {args.batch} x "
        f"{args.seq} = {args.micro * args.batch * args.seq} tokens per step (gradient accumulation); random "
        f"masks over every parameter. {fsdp}Each row is a fresh process. *Peak* = peak RSS of the process "
        "(CPU: `ru_maxrss`, every page it ever held: torch, the weights, the step) or `max_memory_allocated` "
        "(CUDA); *added by training* = peak minus the unrestricted process's memory after building the model "
        "and optimizer (torch, weights, the same in every row). *Grad + optimizer state* = bytes of `.grad` and "
        "AdamW state after a step. *Overhead* = `Restriction.overhead_bytes` (dense: start values + unpacked "
        "masks, 1 byte per entry; sparse: int32 indexes). *Goal met*: sparse's added memory <= activations + "
        "(density + 0.05) x unrestricted's gradients and state + overhead + the largest weight's full gradient "
        f"({largest / mib:,.0f} MiB here), activations being unrestricted's added memory minus its gradients and "
        "state. The last term is inherent: autograd makes a weight's whole gradient before sparse mode can keep "
        "its masked entries, and the tied embedding's (the largest weight) lives through all of backward, "
        "alongside the activations: the LM head's part of it is made first and held until the embedding's part "
        "arrives last (unrestricted, that memory is the embedding's `.grad`, part of the gradients term; before "
        "December 2026 the bound left it out and said no). Sparse mode's values hold data only during the "
        "optimizer step. "
        + (f"glibc's mmap threshold fixed at {args.mmap_threshold:,} bytes (`MALLOC_MMAP_THRESHOLD_`): with "
           "its dynamic default, freed weight-sized gradients stay in the heap and peaks are higher, sparse "
           "ones most (BENCHMARKS.md, \"peak memory by phase\"; docs/restriction.md, \"Memory of a sparse "
           "step\"). " if args.mmap_threshold else
           "glibc's default (dynamic) mmap threshold: freed weight-sized gradients stay in the process's heap, "
           "which raises sparse peaks beyond what the step holds (docs/restriction.md, \"Memory of a sparse "
           "step\"). ")
        + f"Step = the fastest of {args.steps} steps after a warm-up. Load average {load_before:.1f} at the "
        f"start and {os.getloadavg()[0]:.1f} at the end (other jobs on the machine's {os.cpu_count()} cores): "
        "above the core count, step times are noisy.\n\n"
        + markdown_table(["density", "mode", "step ms (ratio)", "peak MiB (ratio)",
                          "added by training MiB (ratio)", "grad + optimizer state MiB", "overhead MiB",
                          "goal met"], rows))
    if not args.no_write:
        device = args.device.split(":")[0]
        name, title = ((f"train-fsdp2-{device}", f"Restricted finetuning under FSDP2, {args.ranks} ranks ({device})")
                       if args.ranks > 1 else (f"train-{device}", f"Restricted finetuning ({args.device})"))
        write_section(name, title, body, "python -m tools.bench.bench_train " + " ".join(
            f"--{k.replace('_', '-')} {getattr(args, k)}" for k in (
                "hidden", "layers", "vocab", "batch", "seq", "micro", "steps", "device", "ranks", "modes",
                "mmap_threshold")))


if __name__ == "__main__":
    main()
