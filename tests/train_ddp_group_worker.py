"""Run by tests/test_train_ddp_group.py: 2 gloo processes train a small MLP in sparse mode under
DistributedDataParallel, every parameter partly masked, restricted without passing a process group.

    python tests/train_ddp_group_worker.py OUT_DIR PORT

Each rank writes OUT_DIR/rank{N}.json: entries outside the mask that moved, masked entries that moved, a
checksum of the trained weights (equal on both ranks when they stayed in step), which parameters trained in
dense mode, and the refusal of restricting a model already wrapped by DDP.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank: int, out: str, port: int) -> None:
    import submask
    from submask.train.dense import DenseEntry

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    generator = torch.Generator().manual_seed(0)
    mask = submask.Mask({name: submask.TensorMask.from_torch(torch.rand(p.shape, generator=generator) < 0.5)
                         for name, p in model.named_parameters()})
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    restriction = submask.restrict(model, mask, mode="sparse")  # no process_group: the initialised one is taken
    dense = [entry.attribute for entry in restriction._restricted if isinstance(entry, DenseEntry)]
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    try:
        submask.restrict(ddp, mask, mode="sparse")
        refusal = ""
    except submask.UsageError as error:
        refusal = str(error)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    data = torch.Generator().manual_seed(10 + rank)  # each rank its own batches: only averaging keeps them in step
    for _ in range(3):
        optimizer.zero_grad()
        ddp(torch.randn(4, 8, generator=data)).pow(2).mean().backward()
        optimizer.step()
    restriction.remove()
    moved = broken = 0
    for name, p in model.named_parameters():
        changed = p.detach() != start[name]
        inside = mask[name].to_torch()
        moved += int(changed[inside].sum())
        broken += int(changed[~inside].sum())
    checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"moved": moved, "broken": broken, "masked": mask.count, "checksum": checksum, "dense": dense,
         "refusal": refusal}))
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2)
