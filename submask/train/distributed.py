"""The collectives and DistributedDataParallel settings that restricted finetuning needs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..sharding import is_sharded, shard_mesh_dim

if TYPE_CHECKING:
    import torch

    from ..mask import TensorMask
    from .entry import Entry


def longest(count: int, parameter: Any) -> int:
    """The largest ``count`` over the ranks that hold shards of the sharded ``parameter`` (its mesh dimension
    of shards): one collective per parameter."""
    import torch
    import torch.distributed as dist

    mesh = parameter.device_mesh
    counts = torch.tensor([count], device=mesh.device_type)
    dist.all_reduce(counts, op=dist.ReduceOp.MAX, group=mesh.get_group(shard_mesh_dim(parameter)))
    return int(counts.item())


def ddp_ignore(module: torch.nn.Module, entries: Iterable[Entry]) -> None:
    """Tell DistributedDataParallel (wrapping ``module`` later) to leave restricted weights and values alone:
    the restriction averages the values' gradients itself."""
    from torch.nn.parallel import DistributedDataParallel

    tensors = {id(t) for e in entries for t in (e.parameter, e.trainable)}
    names = [name for name, p in module.named_parameters(remove_duplicate=False) if id(p) in tensors]
    # torch leaves this function unannotated
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)  # type: ignore[no-untyped-call]


DEFAULT_GROUP = "default process group, once initialised"  # restrict ran in a launched process before init


def data_parallel_group(module: torch.nn.Module, process_group: Any) -> Any:
    """The group over which sparse mode averages the values' gradients: ``process_group``, else the default
    group when torch.distributed is initialised with several ranks, or ``DEFAULT_GROUP`` when it is not yet but
    the process was launched as one of several (``WORLD_SIZE``, as torchrun and accelerate set it: a Trainer
    initialises it later); None otherwise, and for FSDP2's shards (which reduce their gradients themselves)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel):
        raise UsageError("sparse mode must tell DistributedDataParallel which weights to leave alone before it "
                         "wraps the model: restrict(model, ...) the unwrapped model, then wrap it (a Trainer or "
                         "accelerate wraps it for you when training starts)")
    if process_group is not None:
        return process_group
    if any(is_sharded(parameter) for parameter in module.parameters()):
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD if dist.get_world_size() > 1 else None
    return DEFAULT_GROUP if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None


def resolved(group: Any) -> Any:
    """``group``, with ``DEFAULT_GROUP`` replaced by the default group (refused if still not initialised)."""
    if group is not DEFAULT_GROUP:
        return group
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise UsageError(f"this process was launched as one of {os.environ.get('WORLD_SIZE')} (WORLD_SIZE), but "
                         "torch.distributed is still not initialised at the first backward: initialise it (or build "
                         "the TrainingArguments) before training, or pass restrict(process_group=...)")
    return dist.group.WORLD


def check_in_step(entries: Iterable[Any]) -> None:
    """Refuse a step of sparse ``entries`` whose ranks would drift apart: torch.distributed runs several ranks,
    but ``restrict`` ran before it was initialised, outside a launcher, so the values' gradients are not averaged."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    for entry in entries:
        if entry.group is None and entry.mesh is None:
            raise UsageError(f"torch.distributed runs {dist.get_world_size()} ranks, but restrict(mode='sparse') "
                             "ran before it was initialised, so the ranks would drift apart: call restrict() after "
                             "init_process_group, or pass process_group")


def smallest_for_ddp(parameters: dict[str, torch.nn.Parameter], partly: dict[str, TensorMask]) -> str | None:
    """The name of the smallest partly masked parameter when DistributedDataParallel would otherwise see no
    parameter to train (it refuses such a module): sparse mode restricts that one in dense mode, and DDP
    reduces its gradient. None when DDP keeps a trainable parameter of its own."""
    if not partly or any(p.requires_grad and name not in partly for name, p in parameters.items()):
        return None
    return min(partly, key=lambda name: parameters[name].numel())
