"""The collectives and DistributedDataParallel settings that restricted finetuning needs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

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
