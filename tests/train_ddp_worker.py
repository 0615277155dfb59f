"""Run by tests/test_train_distributed.py: 2 gloo processes train MiniLM restricted to a mask.

    python tests/train_ddp_worker.py OUT_DIR PORT MODE[,MODE...]

MODE is dense or sparse (a copy wrapped in DDP), fsdp2-dense or fsdp2-sparse (a copy sharded by FSDP2's
fully_shard, each rank restricting its own rows). For each, every rank trains its copy and writes
OUT_DIR/{mode}-rank{N}.json: how many masked entries moved, whether every unmasked entry kept its start bits
(in the full state dict, gathered from the shards), the gradient norm clip_grad_norm_ saw at the first step,
and a checksum of the trained weights (equal on both ranks when they stayed in step).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import submask

SENTENCES = ["Boil the pasta in salted water.", "The telescope revealed rings around the planet.",
             "Sort the list before searching it.", "Let the dough rest for an hour."]
FROZEN = "embeddings.word_embeddings.weight"


def seeded_mask(model: torch.nn.Module) -> submask.Mask:
    """The same mask on every rank: weights random 30%, biases and norms full (DDP syncs those), word
    embeddings left out (frozen)."""
    from submask import Mask, TensorMask

    generator = torch.Generator().manual_seed(0)
    return Mask({name: TensorMask.from_torch(torch.rand(p.shape, generator=generator) < 0.3) if p.dim() == 2
                 else TensorMask.full(tuple(p.shape), True)
                 for name, p in model.named_parameters() if name != FROZEN})


def worker(rank: int, out: str, port: int, modes: list[str]) -> None:
    import transformers

    import submask
    from submask.examples import minilm

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    loaded = transformers.AutoModel.from_pretrained(minilm.model_dir(), dtype=torch.float32).eval()
    start = {name: value.clone() for name, value in loaded.state_dict().items()}
    mask = seeded_mask(loaded)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.model_dir())
    batch = tokenizer(SENTENCES[rank * 2:rank * 2 + 2], padding="max_length", max_length=12, return_tensors="pt")
    for mode in modes:
        model, refusal = copy.deepcopy(loaded), ""
        if mode.startswith("fsdp2-"):  # each rank restricts its own row blocks of every parameter
            from torch.distributed.fsdp import fully_shard

            for layer in model.encoder.layer:
                fully_shard(layer)
            ddp = fully_shard(model)
            try:  # FSDP2 reduces the gradients itself: sparse mode refuses a process group there
                submask.restrict(model, mask, mode="sparse", process_group=dist.group.WORLD).remove()
            except submask.UsageError as error:
                refusal = str(error)
            restriction = submask.restrict(model, mask, mode=mode.removeprefix("fsdp2-"))
        else:
            restriction = submask.restrict(model, mask, mode=mode,
                                           process_group=dist.group.WORLD if mode == "sparse" else None)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.AdamW(restriction.parameters(), lr=1e-3, weight_decay=0.1)
        restriction.attach(optimizer)
        norms = []
        for _ in range(2):
            optimizer.zero_grad()
            output = ddp(**batch)
            (output.last_hidden_state.pow(2).mean() + output.pooler_output.pow(2).mean()).backward()
            norm = torch.nn.utils.clip_grad_norm_(restriction.parameters(), 0.5)
            norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))  # FSDP2: a DTensor
            optimizer.step()
        values = [p.detach() for name, p in model.named_parameters() if name.endswith("_submask_values")]
        values = [p.to_local() if hasattr(p, "to_local") else p for p in values]  # FSDP2: this rank's part
        released = all(p.untyped_storage().nbytes() == p.element_size() for p in values)  # one element each
        keys = list(model.state_dict())  # while restricted: the plain module's names, and they load back
        model.load_state_dict(model.state_dict())
        restriction.remove()
        state = {name: value.full_tensor() if hasattr(value, "full_tensor") else value
                 for name, value in model.state_dict().items()}
        moved, kept = 0, True
        for name, value in state.items():
            inside = mask[name].to_torch() if name in mask else torch.zeros(value.shape, dtype=torch.bool)
            same = value.view(torch.int32) == start[name].view(torch.int32)
            kept &= bool(same[~inside].all())
            moved += int((~same[inside]).sum())
        checksum = sum(float(value.double().sum()) for value in state.values())
        Path(out, f"{mode}-rank{rank}.json").write_text(json.dumps(
            {"moved": moved, "kept": kept, "checksum": checksum, "masked": mask.count, "norm": norms[0],
             "keys": keys == list(start), "refusal": refusal, "values": len(values), "released": released}))
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")), nprocs=2)
