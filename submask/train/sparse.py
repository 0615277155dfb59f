"""Sparse mode for one partly masked parameter: density-sized ``values`` trained in place of the weight."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

from ..errors import UsageError
from ..sharding import local_shard
from .distributed import longest, resolved
from .entry import Entry, indices_in_range

if TYPE_CHECKING:
    import torch
    from torch.distributed.tensor import DTensor

    from ..mask import TensorMask

VALUES = "_submask_values"  # suffix of the name under which a weight's masked values are registered


class SparseEntry(Entry):
    """Sparse mode for one partly masked parameter: density-sized ``values`` trained in place of the weight.

    Under FSDP2 the parameter is a DTensor sharded on dim 0: each rank trains the masked entries of its own
    rows, and ``values`` is a DTensor sharded over the same mesh (each rank's part padded with zeros to the
    longest part, so that DTensor's even ``Shard(0)`` holds: the norm in ``clip_grad_norm_`` sums every
    rank's part, and the padding stays zero under AdamW, Adam, SGD).
    """

    def __init__(self, owner: torch.nn.Module, attribute: str, parameter: torch.nn.Parameter,
                 bits: TensorMask, group: Any = None):
        import torch

        if not parameter.is_contiguous():
            raise UsageError(f"sparse mode writes into the weight's storage, and {attribute!r} of "
                               f"{type(owner).__name__} is not contiguous: use mode='dense'")
        super().__init__(owner, attribute, parameter)
        self.group = group
        local, start = local_shard(parameter)
        self.mesh = getattr(parameter, "device_mesh", None)  # a DTensor's
        self.placements = getattr(parameter, "placements", None)  # HSDP: replicated over one mesh dimension
        if self.mesh is not None and group is not None:
            raise UsageError(f"{attribute!r} of {type(owner).__name__} is sharded (FSDP2), which reduces its "
                               "gradients itself: do not pass process_group (it is for DistributedDataParallel)")
        index = torch.from_numpy(indices_in_range(bits, start, local.numel())).to(parameter.device)
        self.index = index.int() if local.numel() < 2**31 else index  # int32 halves it
        self.width = self.index.numel() if self.mesh is None else longest(self.index.numel(), parameter)
        self.values = torch.nn.Parameter(self._as_values(self._pick(local)))
        self._release()  # between steps the weight holds the only copy of the masked entries
        owner.register_parameter(attribute + VALUES, self.values)
        # torch leaves these hook registrars unannotated (no-untyped-call)
        self.handles = [parameter.register_post_accumulate_grad_hook(self._gather),  # type: ignore[no-untyped-call]
                        owner.register_state_dict_post_hook(  # type: ignore[no-untyped-call]
                            functools.partial(self._drop_values)),  # torch tags it
                        owner.register_load_state_dict_post_hook(  # type: ignore[no-untyped-call]
                            self._values_not_missing)]

    def _local(self) -> torch.Tensor:
        """This rank's entries of the weight, where the weight is now (``model.to(...)`` after ``restrict``
        gives it new storage, and converts the registered values too: released values are released again
        there, rather than left as the full-size zeros the conversion made of them)."""
        local = local_shard(self.parameter)[0]
        if self.index.device != local.device:
            self.index = self.index.to(local.device)
        if not self.held and self._local_values().stride() != (0,):
            self._release()
        return local

    def _pick(self, local: torch.Tensor) -> torch.Tensor:
        """The masked entries of ``local`` (this rank's part of the weight or of its gradient), a new tensor
        padded with zeros to ``width``."""
        import torch

        flat, index = local.reshape(-1), self.index.to(local.device)
        if self.width == index.numel():
            return torch.index_select(flat, 0, index)  # takes int32 indexes as they are
        padded = flat.new_zeros(self.width)
        torch.index_select(flat, 0, index, out=padded[:index.numel()])
        return padded

    def _as_values(self, local: torch.Tensor) -> torch.Tensor:
        """``local`` as this rank's part of ``values`` (or of their gradient): a DTensor under FSDP2."""
        if self.mesh is None:
            return local
        from torch.distributed.tensor import DTensor

        return DTensor.from_local(local, self.mesh, self.placements, run_check=False)

    def _gather(self, parameter: torch.Tensor) -> None:
        """Reduce the weight's full gradient (under FSDP2: its reduce-scattered shard) to the masked entries at
        once, and free it."""
        self._local()  # the index follows the weight to its device
        grad = self._as_values(self._pick(local_shard(parameter.grad)[0]))  # type: ignore[arg-type]
        parameter.grad = None
        if self.group is not None:  # data parallel: average the density-sized gradient, not the weight's
            import torch.distributed as dist

            self.group = resolved(self.group)
            dist.all_reduce(grad, group=self.group)
            grad.div_(dist.get_world_size(self.group))
        if self.values.grad is None:
            self.values.grad = grad
        else:
            self.values.grad.add_(grad)  # gradient accumulation over several backwards

    def _drop_values(self, module: Any, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        state_dict.pop(prefix + self.attribute + VALUES, None)  # checkpoints hold the module's own names

    def _values_not_missing(self, module: Any, incompatible: Any) -> None:
        """Checkpoints hold no values: the next step gathers them from the loaded weight."""
        incompatible.missing_keys[:] = [key for key in incompatible.missing_keys if not key.endswith(VALUES)]

    @property
    def trainable(self) -> torch.nn.Parameter:
        return self.values

    def _local_values(self) -> torch.Tensor:
        """The tensor that holds this rank's values (all of them outside FSDP2): its ``data`` is swapped."""
        # a DTensor parameter's to_local() is a fresh view: swapping its data would leave the DTensor's alone
        # with a mesh (FSDP2) the values parameter is a DTensor
        return self.values if self.mesh is None else cast("DTensor", self.values)._local_tensor

    def _release(self) -> None:
        """Drop the values' data, keeping their shape and identity (the optimizer keys on them): until the next
        step they read as zeros from one element, and the weight holds the masked entries."""
        values = self._local_values()
        values.data = values.new_zeros(1).expand(values.shape)
        self.held = False

    def gather(self) -> None:
        """Before an optimizer step: fill the values with the weight's masked entries."""
        self.check_attached()
        if not self.held:
            self._local_values().data = self._pick(self._local())
            self.held = True

    def restore(self) -> None:
        """After an optimizer step: write the values into the weight in place (no other entry is written)
        and release them."""
        import torch

        if self.held:
            with torch.no_grad():
                self._local().view(-1).index_put_((self.index,), self._local_values()[:self.index.numel()])
            self._release()

    def remove(self) -> None:
        self.restore()
        for handle in self.handles:
            handle.remove()
        delattr(self.owner, self.attribute + VALUES)  # the last parameter registered: the order is as before
        self.values.grad = None

    @property
    def overhead_bytes(self) -> int:
        return self.index.nbytes
