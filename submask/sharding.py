"""Parameters sharded by FSDP2 (``fully_shard``: DTensors sharded on dim 0 over one mesh dimension, replicated
over any other as under HSDP): the entries a process holds, and where they start in the full tensor. Restricted
finetuning and the update tracker work on these local shards."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    import torch


def local_shard(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The entries of ``tensor`` this process holds (sharing its storage) and the flat index of the first:
    a DTensor sharded on dim 0 over one mesh dimension (FSDP2's ``fully_shard``; under HSDP, replicated over
    the others) holds a block of rows."""
    if not is_sharded(tensor):
        return tensor.data, 0
    sharded: Any = tensor  # a DTensor
    mesh, dim = sharded.device_mesh, shard_mesh_dim(sharded)
    rows = -(-tensor.shape[0] // mesh.size(dim))  # torch.chunk's split: the last ranks may hold fewer or none
    first_row = min(mesh.get_local_rank(dim) * rows, tensor.shape[0])
    return sharded.to_local().data, first_row * (tensor.numel() // max(tensor.shape[0], 1))


def shard_mesh_dim(tensor: Any) -> int:
    """The mesh dimension over which the DTensor ``tensor`` is sharded on dim 0 (it is replicated over any
    other): 0 under FSDP2's ``fully_shard`` on a 1-D mesh, the shard dimension under HSDP."""
    from torch.distributed.tensor import Replicate, Shard

    sharded = [dim for dim, placement in enumerate(tensor.placements) if placement != Replicate()]
    if len(sharded) != 1 or tensor.placements[sharded[0]] != Shard(0):
        raise UsageError(f"submask supports DTensor parameters sharded on dim 0 over one mesh dimension (FSDP2's "
                         f"fully_shard, or HSDP replicating them over the others), not {tuple(tensor.placements)}: "
                         "use FSDP2 or HSDP, or gather the parameters before restrict() or UpdateTracker")
    return sharded[0]


def is_sharded(tensor: Any) -> bool:
    """True for a DTensor (a parameter sharded by FSDP2, or any other distributed tensor)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


@functools.cache
def _dtensor_type() -> type | None:
    """torch's DTensor class, looked up once (training hooks ask for every parameter in every step), or None
    where torch is built without distributed support."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return None
    return DTensor
