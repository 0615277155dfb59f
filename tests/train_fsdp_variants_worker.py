"""Run by tests/test_train_fsdp_variants.py: gloo processes train a tiny Llama sharded by FSDP2 in a variant,
restricted in dense and in sparse mode (each rank its own batches).

    python tests/train_fsdp_variants_worker.py OUT_DIR PORT WORLD SETUP[,SETUP...]

SETUP is hsdp (a 2 x 2 mesh: replicate x shard; WORLD 4), mixed (MixedPrecisionPolicy: bf16 parameters for
compute, fp32 reduce) or offload (CPUOffloadPolicy). Each rank writes OUT_DIR/{setup}-{mode}-rank{N}.json:
entries outside the mask that moved and masked entries that moved (read while still restricted, from the
full parameters), and a checksum of the trained weights.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))


def worker(rank: int, out: str, port: int, world: int, setups: list[str]) -> None:
    import tiny_lm
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    import submask

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for setup in setups:
        if setup == "hsdp":
            options: dict = {"mesh": init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))}
        elif setup == "mixed":
            options = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)}
        else:
            options = {"offload_policy": CPUOffloadPolicy(pin_memory=False)}
        for mode in ("dense", "sparse"):
            model = tiny_lm.model()
            mask, start = tiny_lm.seeded_mask(model), tiny_lm.start_of(model)
            for layer in model.model.layers:
                fully_shard(layer, **options)
            fully_shard(model, **options)
            restriction = submask.restrict(model, mask, mode=mode)
            optimizer = torch.optim.AdamW(restriction.parameters(), lr=1e-2, weight_decay=0.1)
            data = torch.Generator().manual_seed(rank)
            for _ in range(2):
                ids = torch.randint(3, len(tiny_lm.WORDS) + 3, (2, 8), generator=data)
                model(input_ids=ids, labels=ids).loss.backward()
                torch.nn.utils.clip_grad_norm_(restriction.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
            state = {name: value.full_tensor() for name, value in model.state_dict().items()}
            restriction.remove()
            moved, broken = tiny_lm.moved_inside_kept_outside(state, start, mask)
            checksum = sum(float(value.double().sum()) for value in state.values())
            Path(out, f"{setup}-{mode}-rank{rank}.json").write_text(json.dumps(
                {"moved": moved, "broken": broken, "masked": mask.count, "checksum": checksum}))
    dist.destroy_process_group()


if __name__ == "__main__":
    world = int(sys.argv[3])
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2]), world, sys.argv[4].split(",")), nprocs=world)
