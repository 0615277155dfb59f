"""Run by tests/test_tracker_distributed.py: 2 gloo processes track the update sparsity of a model sharded by
FSDP2's fully_shard.

    python tests/tracker_fsdp_worker.py OUT_DIR PORT

Each rank moves some entries of its own shards (and of a parameter left unsharded, the same on both ranks),
then writes OUT_DIR/rank{N}.json: the sparsity the tracker reports (its own copy as reference, and a full,
unsharded state dict as reference), the sparsity of the full parameters computed directly, and how mask()
and save() refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank: int, out: str, port: int) -> None:
    import submask
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same model on both ranks
    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.LayerNorm(24), torch.nn.Linear(24, 5))
    start = {name: value.detach().clone() for name, value in model.state_dict().items()}
    fully_shard(model[0])
    fully_shard(model[2])  # the LayerNorm stays a plain parameter on every rank
    tracker = submask.UpdateTracker(model)
    given = submask.UpdateTracker(model, reference=start)  # a full reference: each rank takes its rows
    with torch.no_grad():
        for value in model.parameters():
            if hasattr(value, "to_local"):  # each rank's own rows, moved differently on each rank
                value.to_local().view(-1)[rank::5] += 1.0
        model[1].weight[:3] += 1.0  # unsharded: the same on both ranks
    full = {name: value.full_tensor() if hasattr(value, "full_tensor") else value.detach()
            for name, value in model.named_parameters()}
    expected = submask.UpdateSparsity.of(submask.build_mask(start, full).mask)
    refusals = []
    for call in (tracker.mask, lambda: tracker.save(Path(out) / f"rank{rank}.smask")):
        try:
            call()
        except submask.UsageError as error:
            refusals.append(str(error))
    report = {"callback": _callback_saves(tracker, out, rank)}
    report |= {"tracker": dataclasses.asdict(tracker.sparsity()), "given": dataclasses.asdict(given.sparsity()),
              "expected": dataclasses.asdict(expected), "sharded": tracker.sharded, "refusals": refusals}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report, default=str))
    dist.destroy_process_group()


def _callback_saves(tracker: object, out: str, rank: int) -> dict[str, object]:
    """What UpdateSparsityCallback's on_save does for a sharded model: the warnings it gives, the files it writes."""
    import warnings

    from transformers import TrainerControl, TrainerState, TrainingArguments

    from submask.integrations import UpdateSparsityCallback

    callback = UpdateSparsityCallback(log_every=1)
    callback.tracker = tracker
    folder = Path(out, f"callback{rank}")
    args, state = TrainingArguments(output_dir=str(folder), report_to=[]), TrainerState(global_step=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            callback.on_save(args, state, TrainerControl())
    return {"warnings": [str(w.message) for w in caught if "UpdateSparsityCallback" in str(w.message)],
            "written": sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []}


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2)
