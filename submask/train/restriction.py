"""The restriction handle and ``restrict``: which parameters train, and the optimizer hooks that keep the mask.

See docs/restriction.md for how each mode keeps the guarantee and what it costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..align import check_fit, describe
from ..errors import MismatchError, UsageError
from ..io import MaskLike, open_mask
from ..wrappers import adapter_parameters, names_for
from .dense import DenseEntry
from .distributed import check_in_step, data_parallel_group, ddp_ignore, smallest_for_ddp
from .entry import Entry
from .sparse import SparseEntry

if TYPE_CHECKING:
    import torch

    from ..mask import TensorMask

Mode = Literal["dense", "sparse"]
Missing = Literal["freeze", "train", "error"]
_ATTRIBUTE = "_submask_restriction"


class Restriction:
    """The restriction of a module's training to a mask; ``remove()`` (or ``unrestrict``) lifts it."""

    def __init__(self, module: torch.nn.Module, mode: Mode):
        self.module = module
        self.mode = mode
        self._restricted: list[Entry] = []
        self._frozen: list[torch.nn.Parameter] = []  # parameters with an empty mask: requires_grad switched off
        self._hooks: list[Any] = []
        self._stepping: dict[int, list[Entry]] = {}  # by optimizer id: the entries its running step updates
        # whoever builds the optimizer (a Trainer too) and whenever: its steps keep the mask
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self._hooks += [register_optimizer_step_pre_hook(self._before_step),
                        register_optimizer_step_post_hook(self._after_step)]

    def parameters(self) -> list[torch.nn.Parameter]:
        """The module's trainable parameters now: what to give the optimizer (sparse: the masked values)."""
        weights = {id(entry.parameter) for entry in self._restricted if isinstance(entry, SparseEntry)}
        return [p for p in self.module.parameters() if p.requires_grad and id(p) not in weights]

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Check ``optimizer`` now rather than at its first step (``_check_optimizer``). Not needed for the
        guarantee: every optimizer's steps keep the mask (global optimizer step hooks)."""
        self._check_optimizer(optimizer)

    def restore(self) -> None:
        """Dense: reset every entry outside the mask to its starting value. Sparse: write the masked values
        held by a step into the weights and release them. Done after each optimizer step that updates them;
        call it yourself after changing parameters by hand."""
        for entry in self._restricted:
            entry.restore()
        for entry in self._restricted:
            entry.check_attached()

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> list[Entry]:
        """The restricted parameters ``optimizer`` updates. Raise UsageError where one of its steps would move
        entries outside the mask: a restricted parameter replaced or swapped (``Entry.check_attached``), a
        parameter frozen by ``restrict`` that has a gradient again, or (sparse) a weight held without its values
        (the optimizer was built before ``restrict``, so it would train nothing there)."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        stepped = []
        for entry in self._restricted:
            if id(entry.trainable) in held or id(entry.current) in held:
                entry.check_attached()
                stepped.append(entry)
            if isinstance(entry, SparseEntry) and id(entry.parameter) in held and id(entry.values) not in held:
                raise UsageError(f"{type(optimizer).__name__} holds {entry.attribute!r} of "
                                 f"{type(entry.owner).__name__} but not its masked values: it was built before "
                                 "restrict(mode='sparse'). Build the optimizer after restrict(), from "
                                 "restriction.parameters() (a Trainer: restrict before building it)")
        for parameter in self._frozen:
            if id(parameter) in held and parameter.grad is not None:
                raise UsageError(f"{type(optimizer).__name__} would step a parameter of shape "
                                 f"{list(parameter.shape)} that restrict() froze (its mask is empty or it is not "
                                 "listed), but it has a gradient: something made it trainable again. Leave "
                                 "requires_grad as restrict() set it, or pass missing='train' for unlisted ones")
        return stepped

    def _before_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        stepped = self._check_optimizer(optimizer)
        check_in_step(entry for entry in stepped if isinstance(entry, SparseEntry))
        for entry in stepped:
            entry.gather()
        self._stepping[id(optimizer)] = stepped

    def _after_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        # the entries _before_step checked for this step (checked again if it did not run for this optimizer)
        stepped = self._stepping.pop(id(optimizer), None)
        for entry in self._check_optimizer(optimizer) if stepped is None else stepped:
            entry.restore()

    def remove(self) -> None:
        """Lift the restriction: plain parameters under their own names, trainable as before."""
        for hook in self._hooks:
            hook.remove()
        for entry in reversed(self._restricted):
            entry.remove()
        for parameter in self._frozen:
            parameter.requires_grad_(True)
        if hasattr(self.module, "_ddp_params_and_buffers_to_ignore"):  # set by restrict(process_group=...)
            del self.module._ddp_params_and_buffers_to_ignore
            for entry in self._restricted:
                entry.parameter.__dict__.pop("_ddp_ignored", None)
        self._hooks, self._restricted, self._frozen = [], [], []
        if getattr(self.module, _ATTRIBUTE, None) is self:
            delattr(self.module, _ATTRIBUTE)

    @property
    def overhead_bytes(self) -> int:
        """Memory the restriction adds to the model besides what is trained: dense, the starting values and
        the masks (1 byte per entry) of partly masked parameters; sparse, the indexes of masked entries
        (int32). Sparse mode's ``values`` are the trained parameters themselves (density x the weights, held
        only during optimizer steps)."""
        return sum(entry.overhead_bytes for entry in self._restricted)

    def __repr__(self) -> str:
        return (f"Restriction(mode={self.mode!r}, restricted={len(self._restricted)}, "
                f"frozen={len(self._frozen)})")


def restrict(module: torch.nn.Module, mask: MaskLike, *, mode: Mode = "dense",
             optimizer: torch.optim.Optimizer | None = None, missing: Missing | None = None,
             process_group: Any = None, names: Callable[[str], str] | None = None) -> Restriction:
    """Restrict training of ``module`` to ``mask`` (a Mask, MaskFile or .smask path) and return the handle.

    Mask names are ``module.named_parameters()`` names, or what ``names`` maps them to (a PEFT model's map to
    its base model's names by default: ``submask.wrappers``); names of buffers are accepted and ignored
    (buffers are not trained; a mask built from a checkpoint lists them). A name that is neither, or a shape
    that differs, raises MismatchError. Parameters the mask does not list follow ``missing``: ``"freeze"``,
    ``"train"`` or ``"error"``; by default they are frozen, except a PEFT model's adapters, which train.

    Under ``DistributedDataParallel``, dense mode needs nothing; sparse mode needs ``restrict`` before
    wrapping, and averages the values' gradients over ``process_group`` (default: the default group, when
    ``torch.distributed`` is initialised with several ranks; pass a group of one rank to train alone). DDP is
    told to leave the restricted weights and their values alone (where that would leave DDP nothing, the
    smallest restricted parameter is restricted in dense mode instead).
    Under FSDP2, ``restrict`` after ``fully_shard`` (both modes, no ``process_group``): sparse mode runs one
    collective per restricted parameter here (the longest rank's count of masked entries), so every rank
    must call it.
    """
    if mode not in ("dense", "sparse"):
        raise UsageError(f"mode must be 'dense' or 'sparse', got {mode!r}")
    if missing not in (None, "freeze", "train", "error"):
        raise UsageError(f"missing must be 'freeze', 'train' or 'error', got {missing!r}")
    if getattr(module, _ATTRIBUTE, None) is not None:
        raise UsageError("this module is already restricted to a mask; call submask.unrestrict(module) first")
    if process_group is not None and mode != "sparse":
        raise UsageError("process_group is for sparse mode under DistributedDataParallel; dense mode needs none")
    if mode == "sparse" and optimizer is not None:
        raise UsageError("sparse mode replaces the masked parameters by their masked values: create the "
                           "optimizer after restrict(), from restriction.parameters(), and do not pass it here")
    group = data_parallel_group(module, process_group) if mode == "sparse" else None
    names = names_for(module, names)
    adapters = adapter_parameters(module) if missing is None else set()
    rename = (lambda name: name) if names is None else names
    aliases: dict[int, list[str]] = {}  # tied weights: one parameter, several names (the mask's)
    for name, parameter in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(parameter), []).append(rename(name))
    parameters = dict(module.named_parameters())
    with open_mask(mask) as masks:
        # a mask built from a checkpoint also lists its buffers (e.g. position ids): they fit, and stay as they are
        tensors = {rename(name): tuple(t.shape) for named in (module.named_buffers(remove_duplicate=False),
                                                              module.named_parameters(remove_duplicate=False))
                   for name, t in named}
        check_fit(masks, tensors, "the module's parameters and buffers")
        absent = [name for name, p in parameters.items() if not any(alias in masks for alias in aliases[id(p)])]
        if absent and missing == "error":
            raise MismatchError(f"{describe(masks)} does not list {len(absent)} parameter(s) of the module, e.g. "
                                f"{absent[:3]}; pass missing='freeze' or missing='train' to accept that")
        restriction = Restriction(module, mode)
        try:
            partly: dict[str, TensorMask] = {}
            for name, parameter in parameters.items():
                if not parameter.requires_grad:  # frozen by the caller: stays so
                    continue
                bits = _mask_of(masks, aliases[id(parameter)])
                unlisted = missing or ("train" if id(parameter) in adapters else "freeze")
                if (bits is None and unlisted == "freeze") or (bits is not None and bits.count == 0):
                    restriction._frozen.append(_freeze(parameter))
                elif bits is not None and bits.count < bits.numel:
                    partly[name] = bits
            dense = smallest_for_ddp(parameters, partly) if group is not None else None
            for name, bits in partly.items():
                entry_mode: Mode = "dense" if name == dense else mode
                restriction._restricted.append(_restrict_one(module, name, parameters[name], bits, entry_mode, group))
        except BaseException:  # e.g. a corrupt tensor in a .smask file: leave the module as it was
            restriction.remove()
            raise
    if group is not None:
        ddp_ignore(module, [entry for entry in restriction._restricted if isinstance(entry, SparseEntry)])
    setattr(module, _ATTRIBUTE, restriction)
    if optimizer is not None:
        restriction.attach(optimizer)
    return restriction


def unrestrict(module: torch.nn.Module) -> None:
    """Lift the restriction that ``restrict`` put on ``module``."""
    restriction = getattr(module, _ATTRIBUTE, None)
    if restriction is None:
        raise UsageError("this module is not restricted to a mask; nothing to remove")
    restriction.remove()


def restriction_of(module: torch.nn.Module) -> Restriction | None:
    """The active restriction of ``module``, if any."""
    return getattr(module, _ATTRIBUTE, None)


def _freeze(parameter: torch.nn.Parameter) -> torch.nn.Parameter:
    parameter.requires_grad_(False)
    parameter.grad = None  # a stale gradient would still be applied by the optimizer
    return parameter


def _mask_of(masks: Any, names: list[str]) -> TensorMask | None:
    """The mask of a parameter listed under any of its (tied) names; all that are listed must agree."""
    listed = [name for name in names if name in masks]
    if not listed:
        return None
    bits = masks[listed[0]]
    for other in listed[1:]:
        if masks[other] != bits:
            raise MismatchError(f"{describe(masks)} gives the tied weights {listed[0]!r} and {other!r} different "
                                "masks, but they share one tensor: give both names the same mask")
    return bits


def _restrict_one(module: torch.nn.Module, name: str, parameter: torch.nn.Parameter, bits: TensorMask,
                  mode: Mode, group: Any) -> Entry:
    owner_name, _, attribute = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if mode == "dense":
        return DenseEntry(owner, attribute, parameter, bits)
    return SparseEntry(owner, attribute, parameter, bits, group)
