"""Applying patches on a receiver: check the parent fingerprint, then write the values in place.

A receiver's fingerprint is remembered per target (keyed weakly by its first tensor, so pass the same module
or state dict every step). A target with none yet is fingerprinted in full once: that matches the first patch of
a sender started from the same weights; any other receiver starts with ``WeightSync.resume`` from a snapshot.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from ..errors import MismatchError, UsageError
from .content import PatchLike, PatchTensor, check_chain
from .kernels import decode_at, host_view, write_at
from .state import dtype_name, state_fingerprint, sync_tensors

if TYPE_CHECKING:
    import numpy as np
    import torch

#: id of a target's first tensor -> (a weak reference to it, the fingerprint of the state the target holds)
_FINGERPRINTS: dict[int, tuple[weakref.ref[Any], str]] = {}


def fingerprint_of(target: Any, tensors: dict[str, torch.Tensor] | None = None) -> str:
    """The fingerprint of the state ``target`` holds (``tensors``: its ``sync_tensors`` when known): the last
    patch applied to it, else its full fingerprint."""
    tensors = sync_tensors(target) if tensors is None else tensors
    key = _key(tensors, target)
    known = _FINGERPRINTS.get(id(key))
    return known[1] if known is not None and known[0]() is key else state_fingerprint(tensors)


def apply_patch(patch: PatchLike, target: Any) -> None:
    """``Patch.apply_to``: check, write in place, check the full fingerprint where the patch carries one."""
    tensors = sync_tensors(target)
    if patch.parent is not None:
        current = fingerprint_of(target, tensors)
        if current != patch.parent:
            raise MismatchError(f"patch for step {patch.step} applies to state {patch.parent[:19]}..., but the "
                                f"receiver holds {current[:19]}...; nothing was written. Apply the patches in "
                                "order, or resume from a snapshot (WeightSync.resume) and apply the patches after it")
    _check_fit(patch, tensors)
    views = {name: host_view(tensors[name]) for name in patch.tensors}
    for name, part in _decoded(patch, tensors, views).items():
        write_at(tensors[name], views[name], part.positions, part.values)
    key = _key(tensors, target)
    if patch.state is not None and state_fingerprint(tensors) != patch.state:
        _FINGERPRINTS.pop(id(key), None)
        raise MismatchError(f"after the patch for step {patch.step} the receiver's weights differ from the "
                            "sender's (they were changed outside the sync); resume from a snapshot "
                            "(WeightSync.resume)")
    _remember(key, patch.fingerprint)


def _decoded(patch: PatchLike, tensors: dict[str, torch.Tensor],
             views: dict[str, np.ndarray | None]) -> dict[str, PatchTensor]:
    """The patch's tensors, those with values coded against the previous ones decoded from the receiver's own (read
    at the changed positions; ``views``: ``kernels.host_view`` of each) and the fingerprint then checked, before
    anything is written."""
    if all(part.pending is None for part in patch.tensors.values()):
        return patch.tensors
    decoded = {name: part if part.pending is None else
               PatchTensor(part.shape, part.dtype, part.positions,
                           decode_at(tensors[name], views[name], part.positions, part.pending))
               for name, part in patch.tensors.items()}
    check_chain(patch.parent, patch.fingerprint, decoded, f"patch for step {patch.step}")
    return decoded


def _check_fit(patch: PatchLike, tensors: dict[str, torch.Tensor]) -> None:
    """Every tensor the patch writes exists with its shape and dtype (a snapshot: exactly the target's tensors),
    before anything is written (``Patch`` checked that its positions lie within that shape, in order)."""
    names = set(patch.tensors)
    if patch.parent is None and names != set(tensors):
        odd = sorted(names ^ set(tensors))[:3]
        raise MismatchError(f"the snapshot of step {patch.step} and the receiver hold different tensors (e.g. "
                            f"{odd}); build the receiver with the sender's model class and config")
    for name, part in patch.tensors.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise MismatchError(f"patch for step {patch.step} writes tensor {name!r}, which the receiver lacks")
        if tuple(tensor.shape) != part.shape or dtype_name(tensor, name) != part.dtype:
            raise MismatchError(f"patch for step {patch.step}: tensor {name!r} is {part.dtype} {list(part.shape)} "
                                f"there, {dtype_name(tensor, name)} {list(tensor.shape)} on the receiver; convert "
                                "the receiver to the sender's dtype")
        if not tensor.is_contiguous():
            raise UsageError(f"weight sync writes in place: tensor {name!r} of the receiver is not contiguous")


def _remember(key: torch.Tensor, fingerprint: str) -> None:
    """Record the state a target holds, forgotten when its first tensor is freed (ids are reused)."""
    ident = id(key)
    _FINGERPRINTS[ident] = (weakref.ref(key, lambda _: _FINGERPRINTS.pop(ident, None)), fingerprint)


def _key(tensors: dict[str, torch.Tensor], target: Any) -> torch.Tensor:
    if not tensors:
        raise UsageError(f"weight sync: the {type(target).__name__} holds no tensors")
    return next(iter(tensors.values()))


__all__ = ["apply_patch", "fingerprint_of"]
