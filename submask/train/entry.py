"""One restricted parameter (the base of each mode's entry) and the slice of a mask a rank's shard needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    import torch

    from ..mask import TensorMask


class Entry:
    """One restricted parameter: the module attribute that holds it and the tensor its hooks are on."""

    def __init__(self, owner: torch.nn.Module, attribute: str, parameter: torch.nn.Parameter):
        self.owner, self.attribute, self.parameter = owner, attribute, parameter
        self._hooked = parameter._cdata  # the C++ tensor that gradient hooks are registered on

    def check_attached(self) -> None:
        """Raise UsageError when the module no longer trains the tensor ``restrict`` hooked, which would leave
        entries outside the mask free to move: a new parameter object took its place, or ``model.to()``
        swapped its tensor (``torch.utils.swap_tensors``), which drops gradient hooks. (The usual
        ``model.to()``, which gives the same parameter new data, is followed.)"""
        if self.current is not self.parameter:
            how = "it was replaced by another parameter (e.g. load_state_dict(assign=True))"
        elif self.parameter._cdata != self._hooked:
            how = ("model.to() swapped its tensor, dropping the gradient hooks (DTensor parameters, or "
                   "torch.__future__.set_swap_module_params_on_conversion(True))")
        else:
            return
        raise UsageError(f"{self.attribute!r} of {type(self.owner).__name__} is no longer the tensor restrict() "
                         f"hooked: {how}. Call submask.unrestrict(model) before that change and restrict() after it")

    @property
    def current(self) -> torch.nn.Parameter | None:
        """The parameter the module holds at this entry's place now (another one if it was replaced)."""
        return self.owner._parameters.get(self.attribute)

    def gather(self) -> None:
        """Before an optimizer step that updates this parameter: refuse one that would break the guarantee."""
        self.check_attached()

    @property
    def trainable(self) -> torch.nn.Parameter:
        """The parameter the optimizer updates for this entry."""
        return self.parameter

    @property
    def overhead_bytes(self) -> int:
        """Memory this entry adds besides what is trained."""
        raise NotImplementedError

    def restore(self) -> None:
        """After an optimizer step: make the entries outside the mask hold their starting values again."""
        raise NotImplementedError

    def remove(self) -> None:
        """Lift the restriction of this parameter."""
        raise NotImplementedError


def packed_range(bits: TensorMask, start: int, count: int) -> Any:
    """Packed bits (most significant first) of entries [start, start + count): only that range is unpacked."""
    import numpy as np

    if start == 0 and count == bits.numel:
        return bits.packed
    first = start // 8
    unpacked = np.unpackbits(bits.packed[first:(start + count + 7) // 8 + 1])
    return np.packbits(unpacked[start - 8 * first:start - 8 * first + count])


def indices_in_range(bits: TensorMask, start: int, count: int) -> Any:
    """Flat indices, counted from ``start``, of the masked entries in [start, start + count)."""
    from ..packed import set_positions

    return set_positions(packed_range(bits, start, count), count)
