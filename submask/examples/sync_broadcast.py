"""Weight sync over ``torch.distributed``: rank 0 trains and broadcasts each step's patch bytes, every other rank
applies them to its own copy (an inference engine's weights), bit for bit.

    python -m submask.examples.sync_broadcast OUT_DIR --world 3 --steps 5 --port 29512

Each rank writes ``OUT_DIR/rank{N}.json`` with the full fingerprint of its weights at the end, the bytes it
received per step and the entries the patches changed; the fingerprints of all ranks are equal.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..sync import Patch, WeightSync
from ..sync.state import state_fingerprint, sync_tensors

VOCAB, WIDTH = 64, 32


def tiny_model() -> Any:
    """An embedding, a hidden layer and an output layer tied to the embedding, in bfloat16; the same weights on
    every rank (a fixed seed)."""
    import torch

    torch.manual_seed(0)
    embed, hidden, out = torch.nn.Embedding(VOCAB, WIDTH), torch.nn.Linear(WIDTH, WIDTH), torch.nn.Linear(WIDTH, VOCAB)
    out.weight = embed.weight
    return torch.nn.Sequential(embed, hidden, torch.nn.GELU(), out).to(torch.bfloat16)


def broadcast_bytes(data: bytes | None, src: int = 0) -> bytes:
    """``data`` of rank ``src`` on every rank: its length, then its bytes (two broadcasts)."""
    import torch
    import torch.distributed as dist

    size = torch.tensor([0 if data is None else len(data)], dtype=torch.int64)
    dist.broadcast(size, src)
    buffer = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if data is not None
              else torch.empty(int(size), dtype=torch.uint8))
    dist.broadcast(buffer, src)
    return buffer.numpy().tobytes()


def run(rank: int, world: int, port: int, steps: int, out: str) -> None:
    """One rank: rank 0 trains and sends, the others receive."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model, received, changed = tiny_model(), [], 0
    if rank == 0:
        sync, optimizer = WeightSync(model), torch.optim.AdamW(model.parameters(), lr=1e-3)
        tokens = torch.Generator().manual_seed(1)
    for _ in range(steps):
        data = None
        if rank == 0:
            ids = torch.randint(0, VOCAB, (8, 4), generator=tokens)
            loss = torch.nn.functional.cross_entropy(model(ids).float().view(-1, VOCAB), ids.roll(1).view(-1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            patch = sync.diff()
            changed += patch.count
            data = patch.to_bytes()
        data = broadcast_bytes(data)
        received.append(len(data))
        if rank != 0:
            patch = Patch.from_bytes(data)
            patch.apply_to(model)
            changed += patch.count
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"fingerprint": state_fingerprint(sync_tensors(model)), "received": received, "changed": changed}))
    dist.destroy_process_group()


def main() -> None:
    from torch.multiprocessing.spawn import spawn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--world", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--port", type=int, default=29512)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    spawn(run, args=(args.world, args.port, args.steps, args.out), nprocs=args.world)


if __name__ == "__main__":
    main()
