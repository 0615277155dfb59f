"""The sender of a weight sync: a reference of the last synced state, and the patches that bring it up to date.

>>> sync = submask.WeightSync(model)                                   # doctest: +SKIP
>>> for batch in batches:                                              # doctest: +SKIP
...     train_step(model, batch)
...     publish(sync.diff().to_bytes())      # entries changed since the last diff, bit for bit
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MismatchError, UsageError
from ..metadata import model_fingerprint
from . import values as coding
from .content import PatchTensor, digest_of
from .patch import Patch
from .receiver import apply_patch
from .state import bits, chained, dtype_name, host_bytes, state_fingerprint, sync_tensors

if TYPE_CHECKING:
    import torch


class WeightSync:
    """Track ``model`` (a module or state dict) for its receivers: ``diff()`` after each optimizer step.

    The reference is a copy of the tensors now, on their devices, in their dtypes (one more copy of the
    weights). Every ``check_every`` diffs (0: never) a patch also carries the full fingerprint of the state it
    produces, which receivers check after applying: that pass over the weights is what the fingerprint chain
    saves on the other steps.
    """

    def __init__(self, model: Any, *, check_every: int = 100):
        if type(check_every) is not int or check_every < 0:
            raise UsageError(f"check_every must be a non-negative integer, got {check_every!r}")
        self.model, self.check_every, self.step = model, check_every, 0
        tensors = sync_tensors(model)
        self.reference = {name: bits(tensor).clone() for name, tensor in tensors.items()}
        self.dtypes = {name: dtype_name(tensor, name) for name, tensor in tensors.items()}
        self.layout = model_fingerprint({name: tuple(tensor.shape) for name, tensor in tensors.items()})
        self.fingerprint = state_fingerprint(tensors)  # the chain's root: a receiver with the same weights matches it

    def diff(self) -> Patch:
        """The entries that changed (bitwise) since the last diff, as a patch from the last synced state; the
        reference then holds the model's state now."""
        import torch

        changed = {}
        with torch.no_grad():
            for name, tensor in self._current().items():
                now, then = bits(tensor).reshape(-1), self.reference[name].view(-1)
                positions = torch.ne(now, then).nonzero().view(-1)
                if not positions.numel():
                    continue
                values = now[positions]
                previous = host_bytes(then[positions]) if coding.CODED_AGAINST_PREVIOUS else None
                then[positions] = values
                changed[name] = PatchTensor(tuple(tensor.shape), self.dtypes[name],
                                            positions.cpu().numpy(), host_bytes(values), previous)
        self.step += 1
        parent, self.fingerprint = self.fingerprint, chained(self.fingerprint, digest_of(changed))
        due = self.check_every and self.step % self.check_every == 0
        state = state_fingerprint(self._reference_tensors()) if due else None
        return Patch(parent, self.fingerprint, self.step, changed, state, self.layout)

    def snapshot(self) -> Patch:
        """The last synced state whole (not the model's changes since), for a receiver that starts or restarts:
        ``WeightSync.resume(model, snapshot)``, then the patches of the later steps."""
        tensors = self._reference_tensors()
        whole = {name: PatchTensor(tuple(tensor.shape), self.dtypes[name], None, host_bytes(tensor).copy())
                 for name, tensor in tensors.items()}  # a copy: the reference moves on with the next diff
        return Patch(None, self.fingerprint, self.step, whole, state_fingerprint(tensors), self.layout)

    @staticmethod
    def resume(target: Any, snapshot: Patch | bytes | bytearray | memoryview) -> int:
        """Receiver: overwrite ``target`` (module or state dict) in place with a snapshot (a Patch or its bytes) and
        check its full fingerprint; returns the snapshot's step, after which patches apply."""
        patch = snapshot if isinstance(snapshot, Patch) else Patch.from_bytes(snapshot)
        if not patch.is_snapshot:
            raise UsageError(f"WeightSync.resume needs a snapshot (WeightSync.snapshot), got the patch for step "
                             f"{patch.step}; apply it with patch.apply_to")
        apply_patch(patch, target)
        return patch.step

    def _current(self) -> dict[str, torch.Tensor]:
        """The model's tensors, checked against the reference's layout (the reference follows a device move)."""
        tensors = sync_tensors(self.model)
        if set(tensors) != set(self.reference):
            odd = sorted(set(tensors) ^ set(self.reference))[:3]
            raise MismatchError(f"WeightSync: the model's tensors changed since the sync began (e.g. {odd}); "
                                "start a new WeightSync and resume the receivers from its snapshot")
        for name, tensor in tensors.items():
            reference = self.reference[name]
            if dtype_name(tensor, name) != self.dtypes[name] or tensor.shape != reference.shape:
                raise MismatchError(f"WeightSync: tensor {name!r} is now {tensor.dtype} {list(tensor.shape)}, was "
                                    f"{self.dtypes[name]} {list(reference.shape)}; start a new WeightSync")
            if reference.device != tensor.device:
                self.reference[name] = reference.to(tensor.device)
        return tensors

    def _reference_tensors(self) -> dict[str, torch.Tensor]:
        """The reference in the model's dtypes (it is kept as integer views of the same bits)."""
        import torch

        from ..checkpoints.dtypes import DTYPES

        return {name: value.view(getattr(torch, DTYPES[self.dtypes[name]].torch_name))
                for name, value in self.reference.items()}
