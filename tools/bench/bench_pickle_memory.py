"""Peak memory of a build from torch.save (.bin) shards against the same build from safetensors, side by side.

Writes one synthetic float32 pair twice with huggingface_hub's own writer: as ``pytorch_model-*.bin`` shards with
``pytorch_model.bin.index.json`` and as one ``model.safetensors`` per side. Each build runs in a fresh
subprocess that reports its peak resident memory (``VmHWM``) and the resident memory after its imports,
alternating the two kinds ``--repeats`` times (medians reported). The .bin build maps at most two shards
per checkpoint (``checkpoints.pickled``), so its growth over the imports should stay near a few shards,
not the model.

    .venv/bin/python -m tools.bench.bench_pickle_memory [--tensors 16 --width 2048 --shard-mib 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .report import markdown_table, write_section

CHILD = """
import json, sys
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import torch, submask
start = rss("VmRSS:")
built = submask.build_mask(sys.argv[1], sys.argv[2], workers=2)
print(json.dumps({"start": start, "peak": rss("VmHWM:"), "changed": built.ones}))
"""


def write_pair(root: Path, tensors: int, width: int, shard_mib: int) -> int:
    """Both sides in both formats under ``root``; returns one checkpoint's size in bytes."""
    import torch
    from huggingface_hub import save_torch_state_dict

    generator = torch.Generator().manual_seed(0)
    state = {f"layers.{i}.weight": torch.randn(width, width, generator=generator) for i in range(tensors)}
    for side in ("base", "finetuned"):
        if side == "finetuned":
            state = {n: torch.where(torch.rand(v.shape, generator=generator) < 0.05, v + 1, v)
                     for n, v in state.items()}
        for kind, safe in (("bin", False), ("safetensors", True)):
            (root / f"{side}_{kind}").mkdir()
            save_torch_state_dict(state, root / f"{side}_{kind}", safe_serialization=safe,
                                  max_shard_size=f"{shard_mib}MB" if not safe else "100GB")
    return sum(v.numel() * v.element_size() for v in state.values())


def measure(root: Path, kind: str) -> dict[str, int]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", CHILD, str(root / f"base_{kind}"), str(root / f"finetuned_{kind}")],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, default=16)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--shard-mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pickle-") as tmp:
        root = Path(tmp)
        size = write_pair(root, args.tensors, args.width, args.shard_mib)
        shards = len(list((root / "finetuned_bin").glob("*.bin")))
        runs: dict[str, list[dict[str, int]]] = {"safetensors": [], "bin": []}
        for _ in range(args.repeats):
            for kind in runs:
                runs[kind].append(measure(root, kind))
    load = open("/proc/loadavg").read().split()[:3]
    mib = 2**20
    rows = []
    median = {kind: {key: statistics.median(r[key] for r in rs) for key in ("start", "peak")}
              for kind, rs in runs.items()}
    for kind in ("safetensors", "bin"):
        peak, start = median[kind]["peak"], median[kind]["start"]
        rows.append([kind, f"{peak / mib:,.0f}", f"{start / mib:,.0f}", f"{(peak - start) / mib:,.0f}",
                     f"{peak / median['safetensors']['peak']:.2f}",
                     f"{(peak - start) / (median['safetensors']['peak'] - median['safetensors']['start']):.2f}"])
    for row in rows:
        print(" | ".join(row))
    body = (f"Synthetic float32 pair: {args.tensors} tensors of {args.width} x {args.width} ({size / mib:,.0f} MiB "
            f"per checkpoint; the .bin side in {shards} shards of about {args.shard_mib} MB, written by "
            "huggingface_hub.save_torch_state_dict). Exact build, 2 worker threads, each run in a fresh process; "
            f"median of {args.repeats} alternating runs per kind. *peak* is VmHWM, *after imports* the resident "
            "memory once torch and submask are imported, *growth* their difference; ratios are against the "
            f"safetensors build of the same pair in the same run. Load average {' '.join(load)}.\n\n"
            + markdown_table(["checkpoints", "peak MiB", "after imports MiB", "growth MiB", "peak ratio",
                              "growth ratio"], rows))
    print(body)
    if not args.no_write:
        write_section("pickle_memory", "Peak memory: build from .bin shards vs safetensors", body,
                      f"python -m tools.bench.bench_pickle_memory --tensors {args.tensors} --width {args.width} "
                      f"--shard-mib {args.shard_mib} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
