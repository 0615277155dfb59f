"""Dense mode for one partly masked parameter: gradients zeroed outside the mask, entries reset after a step."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..sharding import local_shard
from .entry import Entry, packed_range

if TYPE_CHECKING:
    import torch

    from ..mask import TensorMask

#: Entries widened per pass on the CPU: the mask's bytes become integers of the entries' size in a buffer
#: reused by every parameter (1 MiB for float32), where a whole widened mask would be a fresh allocation
#: (page faults) in every backward.
CHUNK = 1 << 18
_buffers = threading.local()  # per thread: CPU backward runs in the caller's thread


class DenseEntry(Entry):
    """Keeps the parameter's starting values outside the mask (its rank's shard under FSDP2) and 1 byte of mask
    per entry: zeroing a gradient is one bitwise AND, resetting the entries an AND and an OR."""

    def __init__(self, owner: torch.nn.Module, attribute: str, parameter: torch.nn.Parameter,
                 bits: TensorMask):
        import numpy as np
        import torch

        super().__init__(owner, attribute, parameter)
        local, start = local_shard(parameter)
        as_bits(local)  # refuse an element size the bitwise operations cannot view, before keeping anything
        inside = np.unpackbits(packed_range(bits, start, local.numel()), count=local.numel())  # 0 or 1
        # all bits set inside the mask, none outside: AND keeps an entry's bits or clears them to +0.0
        self.keep = torch.from_numpy(inside).view(torch.int8).neg_().view(local.shape).to(parameter.device)
        self.frozen = local.clone()  # the starting values outside the mask, +0.0 inside (their bits cleared)
        as_bits(self.frozen).bitwise_and_(self.keep.bitwise_not())
        # torch leaves register_post_accumulate_grad_hook unannotated
        self.hook = parameter.register_post_accumulate_grad_hook(self._zero_outside)  # type: ignore[no-untyped-call]

    def _local(self) -> torch.Tensor:
        """The entries held here, where the parameter is now; the starting values and the mask follow it
        there (``model.to("cuda")`` or ``.half()`` after ``restrict`` gives the parameter new storage)."""
        local = local_shard(self.parameter)[0]
        if self.frozen.device != local.device or self.frozen.dtype != local.dtype:
            self.frozen = self.frozen.to(local.device, local.dtype)  # converted as the parameter was (+0.0 stays)
            self.keep = self.keep.to(local.device)
        return local

    def _zero_outside(self, parameter: torch.Tensor) -> None:
        """Zero the accumulated gradient outside the mask, in place (bits cleared: +0.0, NaN and inf too)."""
        self._local()  # the mask follows the parameter to its device
        grad, _ = local_shard(parameter.grad)  # type: ignore[arg-type]
        keep_only(as_bits(grad), self.keep)

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            local = as_bits(self._local())
            keep_only(local, self.keep)  # the trained entries inside the mask, +0.0 outside
            local.bitwise_or_(as_bits(self.frozen))  # the starting values outside, bit for bit

    def remove(self) -> None:
        self.restore()
        self.hook.remove()

    @property
    def overhead_bytes(self) -> int:
        return self.frozen.nbytes + self.keep.nbytes


def as_bits(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s storage read as signed integers of its element size (a view: writes go to ``tensor``)."""
    import torch

    integers = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if tensor.element_size() not in integers:
        raise UsageError(f"dense mode restricts parameters of 1 to 8 bytes per entry, not {tensor.dtype}: "
                         "use restrict(..., mode='sparse') for this model")
    return tensor.view(integers[tensor.element_size()])


def keep_only(bits: torch.Tensor, keep: torch.Tensor) -> None:
    """``bits &= keep`` in place, ``keep`` (int8: -1 or 0) widened to ``bits``'s integers. On the CPU a
    contiguous tensor is done in chunks through a reused buffer; elsewhere torch widens it in the operation."""
    import torch

    if bits.device.type != "cpu" or not bits.is_contiguous() or bits.numel() <= CHUNK:
        bits.bitwise_and_(keep)
        return
    buffer = getattr(_buffers, str(bits.dtype), None)
    if buffer is None:
        buffer = torch.empty(CHUNK, dtype=bits.dtype)
        setattr(_buffers, str(bits.dtype), buffer)
    flat, keep = bits.view(-1), keep.reshape(-1)
    for start in range(0, flat.numel(), CHUNK):
        stop = min(start + CHUNK, flat.numel())
        widened = buffer[:stop - start]
        widened.copy_(keep[start:stop])
        flat[start:stop].bitwise_and_(widened)
