"""The collectives and DistributedDataParallel settings that restricted finetuning needs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..sharding import is_sharded

if TYPE_CHECKING:
    import torch

    from ..mask import TensorMask
    from .entry import Entry


def longest(count: int, mesh: Any) -> int:
    """The largest ``count`` over the ranks of ``mesh`` (a 1-D device mesh): one collective per parameter."""
    import torch
    import torch.distributed as dist

    counts = torch.tensor([count], device=mesh.device_type)
    dist.all_reduce(counts, op=dist.ReduceOp.MAX, group=mesh.get_group())
    return int(counts.item())


def ddp_ignore(module: torch.nn.Module, entries: Iterable[Entry]) -> None:
    """Tell DistributedDataParallel (wrapping ``module`` later) to leave restricted weights and values alone:
    the restriction averages the values' gradients itself."""
    from torch.nn.parallel import DistributedDataParallel

    tensors = {id(t) for e in entries for t in (e.parameter, e.trainable)}
    names = [name for name, p in module.named_parameters(remove_duplicate=False) if id(p) in tensors]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)


def data_parallel_group(module: torch.nn.Module, process_group: Any) -> Any:
    """The group over which sparse mode averages the values' gradients: ``process_group``, else the default
    group when torch.distributed is initialised with several ranks and the parameters are not FSDP2's shards
    (which reduce their gradients themselves); None otherwise."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel):
        raise UsageError("sparse mode must tell DistributedDataParallel which weights to leave alone before it "
                         "wraps the model: restrict(model, ...) the unwrapped model, then wrap it (a Trainer or "
                         "accelerate wraps it for you when training starts)")
    if process_group is not None:
        return process_group
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    if any(is_sharded(parameter) for parameter in module.parameters()):
        return None
    return dist.group.WORLD


def smallest_for_ddp(parameters: dict[str, torch.nn.Parameter], partly: dict[str, TensorMask]) -> str | None:
    """The name of the smallest partly masked parameter when DistributedDataParallel would otherwise see no
    parameter to train (it refuses such a module): sparse mode restricts that one in dense mode, and DDP
    reduces its gradient. None when DDP keeps a trainable parameter of its own."""
    if not partly or any(p.requires_grad and name not in partly for name, p in parameters.items()):
        return None
    return min(partly, key=lambda name: parameters[name].numel())
