"""Dense mode for one partly masked parameter: gradients zeroed outside the mask, entries reset after a step."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from ..accel import Kernel
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
        self._arrays: tuple[Any, Any] | None = None  # keep and frozen as numpy arrays, for the compiled kernels
        # torch leaves register_post_accumulate_grad_hook unannotated
        self.hook = parameter.register_post_accumulate_grad_hook(self._zero_outside)  # type: ignore[no-untyped-call]

    def _local(self) -> torch.Tensor:
        """The entries held here, where the parameter is now; the starting values and the mask follow it
        there (``model.to("cuda")`` or ``.half()`` after ``restrict`` gives the parameter new storage)."""
        local = local_shard(self.parameter)[0]
        if self.frozen.device != local.device or self.frozen.dtype != local.dtype:
            self.frozen = self.frozen.to(local.device, local.dtype)  # converted as the parameter was (+0.0 stays)
            self.keep = self.keep.to(local.device)
            self._arrays = None
        return local

    def _compiled_bits(self, tensor: torch.Tensor) -> Any:
        """``tensor``'s bits as a flat numpy array when the compiled kernels can work on it in place: a plain
        contiguous CPU tensor (not a shard) of the kept values' dtype and size, numba running; else None. This
        is the path of every step on the CPU, so it does the least per call (the hooks' Python was most of
        dense mode's cost on small models)."""
        import torch

        if (type(tensor) is not torch.Tensor or tensor.device.type != "cpu" or tensor.dtype != self.frozen.dtype
                or tensor.numel() != self.keep.numel() or not tensor.is_contiguous()
                or and_kernel.compiled is None):
            return None
        if self._arrays is None:
            if self.keep.device.type != "cpu":
                return None
            self._arrays = (self.keep.view(-1).numpy(), as_bits(self.frozen).view(-1).numpy())
        return as_bits(tensor).detach().view(-1).numpy()

    def _zero_outside(self, parameter: torch.Tensor) -> None:
        """Zero the accumulated gradient outside the mask, in place (bits cleared: +0.0, NaN and inf too)."""
        bits = self._compiled_bits(parameter.grad)  # type: ignore[arg-type]
        if bits is not None and self._arrays is not None:
            and_kernel.compiled(bits, self._arrays[0])
            return
        self._local()  # the mask follows the parameter to its device
        grad, _ = local_shard(parameter.grad)  # type: ignore[arg-type]
        keep_only(as_bits(grad), self.keep)

    def restore(self) -> None:
        import torch

        bits = self._compiled_bits(self.parameter.data)
        if bits is not None and self._arrays is not None:
            reset_kernel.compiled(bits, *self._arrays)
            return
        with torch.no_grad():
            # the trained entries inside the mask, the starting values outside, bit for bit
            reset_outside(as_bits(self._local()), self.keep, as_bits(self.frozen))

    def remove(self) -> None:
        self.restore()
        self.hook.remove()

    @property
    def overhead_bytes(self) -> int:
        return self.frozen.nbytes + self.keep.nbytes


def as_bits(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s storage read as signed integers of its element size (a view: writes go to ``tensor``)."""
    integers = _integer_dtypes()
    if tensor.element_size() not in integers:
        raise UsageError(f"dense mode restricts parameters of 1 to 8 bytes per entry, not {tensor.dtype}: "
                         "use restrict(..., mode='sparse') for this model")
    return tensor.view(integers[tensor.element_size()])


@Kernel
def and_kernel(bits: Any, keep: Any) -> None:
    """``bits[i] &= keep[i]``, ``keep`` (int8: -1 or 0) sign-extended to ``bits``'s integers: one pass."""
    for i in range(bits.size):
        bits[i] &= keep[i]


@Kernel
def reset_kernel(bits: Any, keep: Any, frozen: Any) -> None:
    """``bits[i] = bits[i] & keep[i] | frozen[i]``: the trained entries inside the mask, the starting values
    outside, in one pass over the three arrays (torch takes two, and a third to widen ``keep``)."""
    for i in range(bits.size):
        bits[i] = (bits[i] & keep[i]) | frozen[i]


def compiled_arrays(*tensors: torch.Tensor) -> list[Any] | None:
    """``tensors`` as flat numpy views for the compiled kernels, or None where they cannot run (numba absent
    or off, a tensor off the CPU or not contiguous): the caller takes torch's path then, with the same bits."""
    if and_kernel.compiled is None or not all(t.device.type == "cpu" and t.is_contiguous() for t in tensors):
        return None
    return [t.detach().view(-1).numpy() for t in tensors]


def reset_outside(bits: torch.Tensor, keep: torch.Tensor, frozen: torch.Tensor) -> None:
    """``bits = bits & keep | frozen`` in place (``keep`` int8 -1 or 0, ``frozen`` of ``bits``'s integers)."""
    arrays = compiled_arrays(bits, keep, frozen)
    if arrays is not None:
        reset_kernel.compiled(*arrays)
        return
    keep_only(bits, keep)
    bits.bitwise_or_(frozen)


@functools.cache
def _integer_dtypes() -> dict[int, torch.dtype]:
    """torch's signed integer dtypes by element size (built once: ``as_bits`` runs in every hook)."""
    import torch

    return {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def keep_only(bits: torch.Tensor, keep: torch.Tensor) -> None:
    """``bits &= keep`` in place, ``keep`` (int8: -1 or 0) widened to ``bits``'s integers. Compiled: one
    pass. Otherwise on the CPU a contiguous tensor is done in chunks through a reused buffer; elsewhere torch
    widens it in the operation."""
    import torch

    arrays = compiled_arrays(bits, keep)
    if arrays is not None:
        and_kernel.compiled(*arrays)
        return
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
