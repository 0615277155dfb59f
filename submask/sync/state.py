"""The tensors a weight sync covers, their raw bits, and the fingerprints of states and patches.

A *state* is a module's or state dict's tensors by name, tied weights once (under the first of their names in
sorted order, on sender and receiver alike). Its full fingerprint hashes every byte; a patch's fingerprint
chains its parent's with a hash of the patch's own content, so that each step costs the patch, not the model
(README, "Syncing RL weights"; FORMAT.md §13).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoints.dtypes import DTYPES, dtype_of_array
from ..errors import UsageError

if TYPE_CHECKING:
    import torch

PREFIX = "sha256:"
_INT_OF_WIDTH = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}  # the torch integer views of each width


def sync_tensors(target: Any) -> dict[str, torch.Tensor]:
    """A module's state dict tensors (parameters and persistent buffers, live) or a state dict's, by name in
    sorted order, each tensor once: aliases of one tensor (tied weights) keep the first name."""
    if callable(getattr(target, "state_dict", None)):
        tensors = target.state_dict(keep_vars=True)
    elif isinstance(target, Mapping):
        tensors = target
    else:
        raise UsageError(f"weight sync needs a torch module or a state dict, not a {type(target).__name__}")
    names = sorted(tensors)
    for name in names:
        if not hasattr(tensors[name], "untyped_storage"):
            raise UsageError(f"weight sync: {name!r} is a {type(tensors[name]).__name__}, not a torch tensor")
    starts = [tensors[name].data_ptr() for name in names]
    shared = {start for start, times in Counter(starts).items() if times > 1}  # only these can be aliases
    seen: set[tuple[Any, ...]] = set()
    found = {}
    for name, start in zip(names, starts):
        tensor = tensors[name]
        if start in shared and tensor.numel():
            alias = (tensor.device, start, tensor.dtype, tuple(tensor.shape), tensor.stride())
            if alias in seen:
                continue
            seen.add(alias)
        found[name] = tensor
    return found


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as integers of the same width (compared bit for bit: NaN == NaN, -0 != 0)."""
    import torch

    return tensor.detach().view(getattr(torch, _INT_OF_WIDTH[tensor.element_size()]))


def dtype_name(tensor: torch.Tensor, name: str) -> str:
    """The safetensors name of a tensor's dtype (BF16, F16, F32, ...)."""
    return dtype_of_array(tensor.dtype, f"weight sync: tensor {name!r}: ").name


def itemsize(dtype: str) -> int:
    return DTYPES[dtype].itemsize


def host_bytes(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's raw bytes in memory order (little-endian), as uint8 on the host."""
    return bits(tensor).contiguous().cpu().numpy().view(np.uint8).reshape(-1)


def state_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """The full fingerprint of a state: every tensor's name, dtype, shape and bytes (costs a pass over all)."""
    digest = hashlib.sha256(b"submask-sync-state\n")
    for name, tensor in tensors.items():
        digest.update(_line(name, dtype_name(tensor, name), tuple(tensor.shape), tensor.numel()))
        digest.update(host_bytes(tensor).data)
    return PREFIX + digest.hexdigest()


def content_digest(entries: Iterable[tuple[str, str, tuple[int, ...], np.ndarray | None, np.ndarray]]) -> str:
    """The hash of a patch's content: (name, dtype, shape, positions or None for all, value bytes) per tensor."""
    digest = hashlib.sha256(b"submask-sync-patch\n")
    for name, dtype, shape, positions, values in entries:
        count = len(values) // itemsize(dtype)
        digest.update(_line(name, dtype, shape, count) + (b"*" if positions is None else b"+"))
        if positions is not None:
            digest.update(np.ascontiguousarray(positions, dtype="<i8").data)
        digest.update(np.ascontiguousarray(values).data)
    return digest.hexdigest()


def chained(parent: str, digest: str) -> str:
    """The fingerprint of the state a patch produces: its parent's fingerprint chained with its content."""
    return PREFIX + hashlib.sha256(f"submask-sync-chain\n{parent}\n{digest}\n".encode()).hexdigest()


def _line(name: str, dtype: str, shape: tuple[int, ...], count: int) -> bytes:
    return f"{name}\t{dtype}\t{','.join(map(str, shape))}\t{count}\n".encode()
