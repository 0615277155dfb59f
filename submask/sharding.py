"""Parameters sharded by FSDP2 (``fully_shard``: DTensors sharded on dim 0 over a 1-D mesh): the entries a
process holds, and where they start in the full tensor. Restricted finetuning and the update tracker work on
these local shards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    import torch


def local_shard(tensor: "torch.Tensor") -> tuple["torch.Tensor", int]:
    """The entries of ``tensor`` this process holds (sharing its storage) and the flat index of the first:
    a DTensor sharded on dim 0 over a 1-D mesh (FSDP2's ``fully_shard``) holds a block of rows."""
    try:
        from torch.distributed.tensor import DTensor, Shard
    except ImportError:  # torch built without distributed support
        return tensor.data, 0
    if not isinstance(tensor, DTensor):
        return tensor.data, 0
    mesh = tensor.device_mesh
    if mesh.ndim != 1 or tuple(tensor.placements) != (Shard(0),):
        raise UsageError(f"submask supports DTensor parameters sharded on dim 0 over a 1-D mesh (FSDP2's "
                         f"fully_shard), not {tuple(tensor.placements)} over {mesh.ndim} dimension(s)")
    rows = -(-tensor.shape[0] // mesh.size())  # torch.chunk's split: the last ranks may hold fewer or none
    first_row = min(mesh.get_local_rank() * rows, tensor.shape[0])
    return tensor.to_local().data, first_row * (tensor.numel() // max(tensor.shape[0], 1))


def is_sharded(tensor: Any) -> bool:
    """True for a DTensor (a parameter sharded by FSDP2, or any other distributed tensor)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(tensor, DTensor)
