"""Dense mode for one partly masked parameter: gradients zeroed outside the mask, entries reset after a step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sharding import local_shard
from .entry import Entry, packed_range

if TYPE_CHECKING:
    import torch

    from ..mask import TensorMask


class DenseEntry(Entry):
    """Keeps a copy of the parameter's starting values (its rank's shard under FSDP2) and 1 bit per entry."""

    def __init__(self, owner: torch.nn.Module, attribute: str, parameter: torch.nn.Parameter,
                 bits: TensorMask):
        import torch

        super().__init__(owner, attribute, parameter)
        local, start = local_shard(parameter)
        self.frozen = local.clone()
        packed = packed_range(bits, start, local.numel())
        self.packed = torch.from_numpy(packed).to(parameter.device)  # 1 bit per entry, unpacked on use
        # torch leaves register_post_accumulate_grad_hook unannotated
        self.hook = parameter.register_post_accumulate_grad_hook(self._zero_outside)  # type: ignore[no-untyped-call]

    def _local(self) -> torch.Tensor:
        """The entries held here, where the parameter is now; the starting values and the packed mask follow
        it there (``model.to("cuda")`` or ``.half()`` after ``restrict`` gives the parameter new storage)."""
        local = local_shard(self.parameter)[0]
        if self.frozen.device != local.device or self.frozen.dtype != local.dtype:
            self.frozen = self.frozen.to(local.device, local.dtype)  # converted as the parameter was
            self.packed = self.packed.to(local.device)
        return local

    def _zero_outside(self, parameter: torch.Tensor) -> None:
        """Zero the accumulated gradient outside the mask, in place (no second gradient-sized tensor)."""
        grad, _ = local_shard(parameter.grad)  # type: ignore[arg-type]
        grad.masked_fill_(self.inside(self._local()).logical_not_(), 0)

    def inside(self, local: torch.Tensor) -> torch.Tensor:
        """The mask of the entries held here (``local``, from ``_local``), a bool tensor (transient: one
        parameter at a time)."""
        import torch

        shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=self.packed.device)  # most significant first
        bits = (self.packed.unsqueeze(1) >> shifts).bitwise_and_(1).view(-1)[:local.numel()]
        return bits.view(torch.bool).view(local.shape)  # 0/1 bytes read as bool: no second copy

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            local = self._local()
            torch.where(self.inside(local), local, self.frozen, out=local)

    def remove(self) -> None:
        self.restore()
        self.hook.remove()

    @property
    def overhead_bytes(self) -> int:
        return self.frozen.nbytes + self.packed.nbytes
