"""Run by tests/test_tracker_distributed.py: 2 gloo processes track the update density of a model sharded by
FSDP2's fully_shard.

    python tests/tracker_fsdp_worker.py OUT_DIR PORT

Each rank moves some entries of its own shards (and of a parameter left unsharded, the same on both ranks),
then writes OUT_DIR/rank{N}.json: the density the tracker reports (its own copy as reference, and a full,
unsharded state dict as reference) beside that of the full parameters built directly, whether its gathered
mask (and the file save() and the Trainer callback wrote) equals the full parameters' mask.
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
    from torch.distributed.fsdp import fully_shard

    import submask

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
    built = submask.build_mask(start, full).mask
    mask = tracker.mask()
    saved = Path(out, "update.smask")
    tracker.save(saved)  # every rank calls it; the first writes
    dist.barrier()
    try:  # a full reference of another shape is refused on every rank, before any collective
        submask.UpdateTracker(model, reference={**start, "0.weight": start["0.weight"][:5]}).density()
        wrong_reference = ""
    except submask.MismatchError as error:
        wrong_reference = str(error)
    report = {"callback": _callback_saves(tracker, out, rank), "wrong_reference": wrong_reference,
              "tracker": dataclasses.asdict(tracker.density()), "given": dataclasses.asdict(given.density()),
              "expected": dataclasses.asdict(submask.UpdateDensity.of(built)), "sharded": tracker.sharded,
              "mask_equal": dict(mask) == dict(built), "stats_equal": mask.metadata.stats == built.metadata.stats,
              "model_equal": mask.metadata.model == built.metadata.model,
              "saved_equal": dict(submask.load(saved)) == dict(built), "count": mask.count}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report, default=str))
    dist.destroy_process_group()


def _callback_saves(tracker: object, out: str, rank: int) -> list[str]:
    """What UpdateDensityCallback's on_save writes for a sharded model (every rank calls it, as a Trainer does)."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from submask.integrations import UpdateDensityCallback

    callback = UpdateDensityCallback(log_every=1)
    callback.tracker = tracker
    folder = Path(out, "callback")
    (folder / "checkpoint-3").mkdir(parents=True, exist_ok=True)  # the Trainer saved the checkpoint there
    args, state = TrainingArguments(output_dir=str(folder), report_to=[]), TrainerState(global_step=3)
    callback.on_save(args, state, TrainerControl())
    dist.barrier()
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*.smask"))


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2)
