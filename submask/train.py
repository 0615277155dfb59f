"""Finetuning restricted to a mask: every parameter entry outside the mask keeps its exact starting value.

Masking gradients alone is not enough: AdamW's weight decay (and momentum left from earlier steps) moves
entries whose gradient is zero. Two modes give the guarantee:

- ``"dense"``: parameters stay ordinary tensors. Gradients outside the mask are zeroed in ``.grad`` as
  backward accumulates them (so clipping norms and optimizer statistics see only the masked gradient), and
  after every optimizer step the entries outside the mask are reset to a saved copy of their starting
  values, bit for bit (this is the guarantee; gradients set by hand bypass the zeroing, not the reset). Pass the
  ``optimizer`` to ``restrict`` (or ``Restriction.attach`` it) so the reset runs after each ``step()``;
  otherwise call ``Restriction.restore()`` after each step yourself.
- ``"sparse"``: each partly masked parameter becomes a parametrization (``torch.nn.utils.parametrize``): a
  frozen base buffer plus a trainable 1-D ``values`` parameter holding only the masked entries, so gradients
  and optimizer state scale with the mask's density (backward still forms each weight's full gradient
  transiently before keeping the masked entries). Create the optimizer after ``restrict``, from
  ``Restriction.parameters()``. While restricted, state_dict keys of those parameters change
  (``...parametrizations.weight.original``); ``unrestrict`` bakes the values back under the original names.

In both modes a parameter whose mask is empty is frozen (``requires_grad=False``, its ``.grad`` cleared) and
one whose mask is full trains as usual. Parameters the mask does not list follow ``missing``: ``"freeze"``
(the default: outside the mask means unchanged), ``"train"`` (left fully trainable) or ``"error"``.

>>> handle = submask.restrict(model, "rl.smask", mode="sparse")                       # doctest: +SKIP
>>> optimizer = torch.optim.AdamW(handle.parameters(), lr=1e-5, weight_decay=0.1)    # doctest: +SKIP
>>> ...  # train as usual
>>> submask.unrestrict(model)                                                         # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import MismatchError, SubmaskError
from .fit import MaskLike, check_fit, describe, open_mask

if TYPE_CHECKING:
    import torch

Mode = Literal["dense", "sparse"]
Missing = Literal["freeze", "train", "error"]
_ATTRIBUTE = "_submask_restriction"


@dataclass
class _Restricted:
    """One partly masked parameter: where it lives and, in dense mode, what to reset and its gradient hook."""

    owner: "torch.nn.Module"
    attribute: str
    parameter: "torch.nn.Parameter"
    outside: "torch.Tensor | None" = None  # dense: bool, True where the value must not change
    frozen: "torch.Tensor | None" = None   # dense: the starting values
    hook: Any = None                       # dense: the gradient hook
    order: tuple[str, ...] = ()            # sparse: the owner's parameter names in registration order


class Restriction:
    """The restriction of a module's training to a mask; ``remove()`` (or ``unrestrict``) lifts it."""

    def __init__(self, module: "torch.nn.Module", mode: Mode, restricted: list[_Restricted],
                 frozen: list["torch.nn.Parameter"]):
        self.module = module
        self.mode = mode
        self._restricted = restricted
        self._frozen = frozen  # parameters with an empty mask: requires_grad switched off
        self._hooks: list[Any] = []

    def parameters(self) -> list["torch.nn.Parameter"]:
        """The module's trainable parameters now: what to give the optimizer (sparse: the masked values)."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def attach(self, optimizer: "torch.optim.Optimizer") -> None:
        """Reset entries outside the mask after each ``optimizer.step()`` (dense mode; sparse needs nothing)."""
        if self.mode == "dense":
            self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.restore()))

    def restore(self) -> None:
        """Reset every entry outside the mask to its starting value (dense mode; a no-op in sparse mode)."""
        import torch

        if self.mode != "dense":
            return
        with torch.no_grad():
            for entry in self._restricted:
                torch.where(entry.outside, entry.frozen, entry.parameter, out=entry.parameter)  # type: ignore[arg-type]

    def remove(self) -> None:
        """Lift the restriction: plain parameters under their own names, trainable as before."""
        from torch.nn.utils import parametrize

        self.restore()
        for hook in self._hooks:
            hook.remove()
        for entry in reversed(self._restricted):  # last in, first out: each owner's order is restored in full
            if entry.hook is not None:
                entry.hook.remove()
            else:
                parametrize.remove_parametrizations(entry.owner, entry.attribute, leave_parametrized=True)
                # re-registration appends the parameter: put it back in place so state_dict order is unchanged
                parameters = entry.owner._parameters
                entry.owner._parameters = {name: parameters[name] for name in entry.order if name in parameters}
        for parameter in self._frozen:
            parameter.requires_grad_(True)
        self._hooks, self._restricted, self._frozen = [], [], []
        if getattr(self.module, _ATTRIBUTE, None) is self:
            delattr(self.module, _ATTRIBUTE)

    @property
    def overhead_bytes(self) -> int:
        """Memory the restriction adds to the model: saved values and masks (dense), indexes (sparse)."""
        if self.mode == "dense":
            return sum(e.frozen.nbytes + e.outside.nbytes for e in self._restricted)  # type: ignore[union-attr]
        return sum(e.owner.parametrizations[e.attribute][0].index.nbytes for e in self._restricted)

    def __repr__(self) -> str:
        return (f"Restriction(mode={self.mode!r}, restricted={len(self._restricted)}, "
                f"frozen={len(self._frozen)})")


def restrict(module: "torch.nn.Module", mask: MaskLike, *, mode: Mode = "dense",
             optimizer: "torch.optim.Optimizer | None" = None, missing: Missing = "freeze") -> Restriction:
    """Restrict training of ``module`` to ``mask`` (a Mask, MaskFile or .smask path) and return the handle.

    Mask names are ``module.named_parameters()`` names; names of buffers are accepted and ignored (buffers are
    not trained; a mask built from a checkpoint lists them). A name that is neither, or a shape that differs,
    raises MismatchError. See the module docstring for the two modes and ``missing``.
    """
    if mode not in ("dense", "sparse"):
        raise SubmaskError(f"mode must be 'dense' or 'sparse', got {mode!r}")
    if missing not in ("freeze", "train", "error"):
        raise SubmaskError(f"missing must be 'freeze', 'train' or 'error', got {missing!r}")
    if getattr(module, _ATTRIBUTE, None) is not None:
        raise SubmaskError("this module is already restricted to a mask; call submask.unrestrict(module) first")
    if mode == "sparse" and optimizer is not None:
        raise SubmaskError("sparse mode replaces the masked parameters by their masked values: create the "
                           "optimizer after restrict(), from restriction.parameters(), and do not pass it here")
    parameters = dict(module.named_parameters())
    with open_mask(mask) as masks:
        # a mask built from a checkpoint also lists its buffers (e.g. position ids): they fit, and stay as they are
        tensors = {**dict(module.named_buffers()), **parameters}
        check_fit(masks, {name: tuple(t.shape) for name, t in tensors.items()}, "the module's parameters and buffers")
        absent = [name for name in parameters if name not in masks]
        if absent and missing == "error":
            raise MismatchError(f"{describe(masks)} does not list {len(absent)} parameter(s) of the module, e.g. "
                                f"{absent[:3]}; pass missing='freeze' or missing='train' to accept that")
        if mode == "sparse":
            _refuse_tied(module, masks)
        restriction = Restriction(module, mode, [], [])
        try:
            for name, parameter in parameters.items():
                if not parameter.requires_grad:  # frozen by the caller: stays so
                    continue
                bits = masks[name] if name in masks else None
                if (bits is None and missing == "freeze") or (bits is not None and bits.count == 0):
                    restriction._frozen.append(_freeze(parameter))
                elif bits is not None and bits.count < bits.numel:
                    restriction._restricted.append(
                        _restrict_one(module, name, parameter, bits.to_torch(parameter.device), mode))
        except BaseException:  # e.g. a corrupt tensor in a .smask file: leave the module as it was
            restriction.remove()
            raise
    setattr(module, _ATTRIBUTE, restriction)
    if optimizer is not None:
        restriction.attach(optimizer)
    return restriction


def unrestrict(module: "torch.nn.Module") -> None:
    """Lift the restriction that ``restrict`` put on ``module``."""
    restriction = getattr(module, _ATTRIBUTE, None)
    if restriction is None:
        raise SubmaskError("this module is not restricted to a mask; nothing to remove")
    restriction.remove()


def restriction_of(module: "torch.nn.Module") -> Restriction | None:
    """The active restriction of ``module``, if any."""
    return getattr(module, _ATTRIBUTE, None)


def _freeze(parameter: "torch.nn.Parameter") -> "torch.nn.Parameter":
    parameter.requires_grad_(False)
    parameter.grad = None  # a stale gradient would still be applied by the optimizer
    return parameter


def _restrict_one(module: "torch.nn.Module", name: str, parameter: "torch.nn.Parameter", inside: "torch.Tensor",
                  mode: Mode) -> _Restricted:
    from torch.nn.utils import parametrize

    owner_name, _, attribute = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    frozen = parameter.detach().clone()
    if mode == "sparse":
        order = tuple(owner._parameters)
        parametrize.register_parametrization(owner, attribute, _sparse_values()(frozen, inside), unsafe=True)
        return _Restricted(owner, attribute, parameter, order=order)
    outside = inside.logical_not()
    hook = parameter.register_post_accumulate_grad_hook(_zero_outside(outside))
    return _Restricted(owner, attribute, parameter, outside, frozen, hook)


def _zero_outside(outside: "torch.Tensor") -> Callable[["torch.Tensor"], None]:
    """Zero the accumulated gradient outside the mask, in place (no second gradient-sized tensor)."""

    def hook(parameter: "torch.Tensor") -> None:
        parameter.grad.masked_fill_(outside, 0)  # type: ignore[union-attr]

    return hook


def _refuse_tied(module: "torch.nn.Module", masks: Any) -> None:
    """Sparse mode re-registers parameters per module, which would untie weights shared between modules."""
    seen: dict[int, str] = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        first = seen.setdefault(id(parameter), name)
        if first != name and (first in masks or name in masks):
            raise SubmaskError(f"parameter {first!r} is shared with {name!r} (tied weights); sparse mode cannot "
                               "restrict tied weights: use mode='dense'")


@functools.cache
def _sparse_values() -> type:
    """The parametrization class, defined on first use so that importing submask does not import torch."""
    import torch

    class SparseValues(torch.nn.Module):
        """Parametrization: the frozen ``base`` with its masked entries (``index``) replaced by the values."""

        def __init__(self, base: torch.Tensor, inside: torch.Tensor):
            super().__init__()
            self.register_buffer("base", base)
            index = inside.flatten().nonzero().flatten()
            self.register_buffer("index", index.int() if base.numel() < 2**31 else index)  # int32 halves it

        def forward(self, values: torch.Tensor) -> torch.Tensor:
            return self.base.flatten().index_put((self.index,), values).view_as(self.base)

        def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
            return weight.flatten()[self.index]

    return SparseValues


__all__ = ["Restriction", "restrict", "restriction_of", "unrestrict"]
