"""Finetuning restricted to a mask: every parameter entry outside the mask keeps its exact starting value.

Masking gradients alone is not enough: AdamW's weight decay (and momentum left from earlier steps) moves
entries whose gradient is zero. Two modes give the guarantee:

- ``"dense"``: parameters stay ordinary tensors. Gradients outside the mask are zeroed in ``.grad`` as
  backward accumulates them (so clipping norms and optimizer statistics see only the masked gradient), and
  after every optimizer step the entries outside the mask are reset to a saved copy of their starting
  values, bit for bit (this is the guarantee; gradients set by hand bypass the zeroing, not the reset). Pass the
  ``optimizer`` to ``restrict`` (or ``Restriction.attach`` it) so the reset runs after each ``step()``;
  otherwise call ``Restriction.restore()`` after each step yourself. Overhead, per entry of each partly
  masked parameter (under FSDP2: of the rank's shard): a copy of its starting value, in the parameter's
  dtype (4 bytes in float32, 2 in bfloat16: the reset needs the exact bits of the entries outside the mask)
  and 1 bit of packed mask; the bool mask (1 byte per entry) exists only while one parameter's gradient is
  zeroed or its entries are reset, one parameter at a time.
- ``"sparse"``: gradients and optimizer state scale with the mask's density. Each partly masked weight stays
  the module's parameter, used as is by the forward; next to it a trainable 1-D ``values`` parameter holds
  its masked entries (registered as ``<name>_submask_values`` but left out of ``state_dict``). As backward
  accumulates the weight's full gradient, a hook gathers the masked entries into ``values.grad`` and frees
  it, so a weight-sized gradient exists only transiently. The values hold data only during an optimizer step
  that updates them: gathered from the weight before it, written into the weight in place (only at the
  masked entries) after it and released (between steps they read as zeros from a single element), so in
  forward and backward the weight is their only copy. Build the optimizer from ``Restriction.parameters()``
  (or ``module.parameters()``: the weights never get a gradient, so optimizers skip them) after
  ``restrict``; clip over the same list. ``state_dict`` keeps the module's own keys and order, so
  checkpoints save and load as usual (the next step gathers the values from the loaded weights). Tied
  weights are restricted once, with the mask of any of their names (all listed must agree). Works with
  ``torch.autocast``, bf16 weights, gradient accumulation and ``torch.compile`` of the model (the forward
  is the plain module's; the hooks run in eager autograd).

In both modes a parameter whose mask is empty is frozen (``requires_grad=False``, its ``.grad`` cleared) and
one whose mask is full trains as usual. Parameters the mask does not list follow ``missing``: ``"freeze"``
(the default: outside the mask means unchanged), ``"train"`` (left fully trainable) or ``"error"``. Names of
buffers in the mask are accepted and ignored (buffers are not trained).

Moving the model after ``restrict`` (``model.to("cuda")``, ``.half()``, a Trainer placing it on its device) is
followed: the starting values, packed masks and indexes move and convert with the parameters when next used.
A restricted parameter replaced by another (``load_state_dict(assign=True)``) or whose tensor was swapped
(``torch.utils.swap_tensors``, which drops gradient hooks) makes the next step raise UsageError before it
writes anything (dense mode: with the optimizer attached).

Distributed: under ``DistributedDataParallel`` both modes work (sparse mode: pass ``process_group`` to
``restrict`` before wrapping). Under FSDP2 (``fully_shard``: DTensor parameters sharded on dim 0; restrict
after sharding, without ``process_group``) each rank restricts its own rows with the matching slice of the
mask, unpacked from the Mask's packed bits for that row range only; no rank holds the full mask unpacked or
a full parameter beyond FSDP2's own all-gathers. Dense mode zeroes and resets the rank's shard; sparse mode's
``values`` are a DTensor over the same mesh (each rank: the masked entries of its rows), their gradient is
taken from the reduce-scattered shard gradient when FSDP2 runs the shard's post-accumulate-grad hooks, and
the values are written into the rank's shard after each step. ``clip_grad_norm_(restriction.parameters())``
then sums every rank's part, as for FSDP2's own parameters.

>>> handle = submask.restrict(model, "rl.smask", mode="sparse")                       # doctest: +SKIP
>>> optimizer = torch.optim.AdamW(handle.parameters(), lr=1e-5, weight_decay=0.1)    # doctest: +SKIP
>>> ...  # train as usual
>>> submask.unrestrict(model)                                                         # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

from .errors import MismatchError, UsageError
from .align import check_fit, describe
from .io import MaskLike, open_mask
from .sharding import local_shard

if TYPE_CHECKING:
    import torch

    from .mask import TensorMask

Mode = Literal["dense", "sparse"]
Missing = Literal["freeze", "train", "error"]
_ATTRIBUTE = "_submask_restriction"
_VALUES = "_submask_values"  # suffix of the name under which sparse mode registers a weight's masked values


class _Entry:
    """One restricted parameter: the module attribute that holds it and the tensor its hooks are on."""

    def __init__(self, owner: "torch.nn.Module", attribute: str, parameter: "torch.nn.Parameter"):
        self.owner, self.attribute, self.parameter = owner, attribute, parameter
        self._hooked = parameter._cdata  # the C++ tensor that gradient hooks are registered on

    def check_attached(self) -> None:
        """Raise UsageError when the module no longer trains the tensor ``restrict`` hooked, which would leave
        entries outside the mask free to move: a new parameter object took its place, or ``model.to()``
        swapped its tensor (``torch.utils.swap_tensors``), which drops gradient hooks. (The usual
        ``model.to()``, which gives the same parameter new data, is followed.)"""
        if self.owner._parameters.get(self.attribute) is not self.parameter:
            how = "it was replaced by another parameter (e.g. load_state_dict(assign=True))"
        elif self.parameter._cdata != self._hooked:
            how = ("model.to() swapped its tensor, dropping the gradient hooks (DTensor parameters, or "
                   "torch.__future__.set_swap_module_params_on_conversion(True))")
        else:
            return
        raise UsageError(f"{self.attribute!r} of {type(self.owner).__name__} is no longer the tensor restrict() "
                         f"hooked: {how}. Call submask.unrestrict(model) before that change and restrict() after it")


class _Dense(_Entry):
    """Dense mode for one partly masked parameter: gradient zeroing outside the mask and the reset."""

    def __init__(self, owner: "torch.nn.Module", attribute: str, parameter: "torch.nn.Parameter",
                 bits: "TensorMask"):
        import torch

        super().__init__(owner, attribute, parameter)
        local, start = local_shard(parameter)
        self.frozen = local.clone()
        packed = _packed_range(bits, start, local.numel())
        self.packed = torch.from_numpy(packed).to(parameter.device)  # 1 bit per entry, unpacked on use
        self.hook = parameter.register_post_accumulate_grad_hook(self._zero_outside)

    def _local(self) -> "torch.Tensor":
        """The entries held here, where the parameter is now; the starting values and the packed mask follow
        it there (``model.to("cuda")`` or ``.half()`` after ``restrict`` gives the parameter new storage)."""
        local = local_shard(self.parameter)[0]
        if self.frozen.device != local.device or self.frozen.dtype != local.dtype:
            self.frozen = self.frozen.to(local.device, local.dtype)  # converted as the parameter was
            self.packed = self.packed.to(local.device)
        return local

    def _zero_outside(self, parameter: "torch.Tensor") -> None:
        """Zero the accumulated gradient outside the mask, in place (no second gradient-sized tensor)."""
        grad, _ = local_shard(parameter.grad)  # type: ignore[arg-type]
        grad.masked_fill_(self.inside(self._local()).logical_not_(), 0)

    def inside(self, local: "torch.Tensor") -> "torch.Tensor":
        """The mask of the entries held here (``local``, from ``_local``), a bool tensor (transient: one
        parameter at a time)."""
        import torch

        shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=self.packed.device)  # most significant first
        bits = (self.packed.unsqueeze(1) >> shifts).bitwise_and_(1).view(-1)[:local.numel()]
        return bits.view(torch.bool).view(local.shape)  # 0/1 bytes read as bool: no second copy

    @property
    def trainable(self) -> "torch.nn.Parameter":
        return self.parameter

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


class _Sparse(_Entry):
    """Sparse mode for one partly masked parameter: density-sized ``values`` trained in place of the weight.

    Under FSDP2 the parameter is a DTensor sharded on dim 0: each rank trains the masked entries of its own
    rows, and ``values`` is a DTensor sharded over the same mesh (each rank's part padded with zeros to the
    longest part, so that DTensor's even ``Shard(0)`` holds: the norm in ``clip_grad_norm_`` sums every
    rank's part, and the padding stays zero under AdamW, Adam, SGD).
    """

    def __init__(self, owner: "torch.nn.Module", attribute: str, parameter: "torch.nn.Parameter",
                 bits: "TensorMask", group: Any = None):
        import torch

        if not parameter.is_contiguous():
            raise UsageError(f"sparse mode writes into the weight's storage, and {attribute!r} of "
                               f"{type(owner).__name__} is not contiguous: use mode='dense'")
        super().__init__(owner, attribute, parameter)
        self.group = group
        local, start = local_shard(parameter)
        self.mesh = getattr(parameter, "device_mesh", None)  # a DTensor's
        if self.mesh is not None and group is not None:
            raise UsageError(f"{attribute!r} of {type(owner).__name__} is sharded (FSDP2), which reduces its "
                               "gradients itself: do not pass process_group (it is for DistributedDataParallel)")
        index = torch.from_numpy(_indices_in_range(bits, start, local.numel())).to(parameter.device)
        self.index = index.int() if local.numel() < 2**31 else index  # int32 halves it
        self.width = self.index.numel() if self.mesh is None else _longest(self.index.numel(), self.mesh)
        self.values = torch.nn.Parameter(self._as_values(self._pick(local)))
        self._release()  # between steps the weight holds the only copy of the masked entries
        owner.register_parameter(attribute + _VALUES, self.values)
        self.handles = [parameter.register_post_accumulate_grad_hook(self._gather),
                        owner.register_state_dict_post_hook(functools.partial(self._drop_values)),  # torch tags it
                        owner.register_load_state_dict_post_hook(self._values_not_missing)]

    def _local(self) -> "torch.Tensor":
        """This rank's entries of the weight, where the weight is now (``model.to(...)`` after ``restrict``
        gives it new storage, and converts the registered values too: released values are released again
        there, rather than left as the full-size zeros the conversion made of them)."""
        local = local_shard(self.parameter)[0]
        if self.index.device != local.device:
            self.index = self.index.to(local.device)
        if not self.held and self._local_values().stride() != (0,):
            self._release()
        return local

    def _pick(self, local: "torch.Tensor") -> "torch.Tensor":
        """The masked entries of ``local`` (this rank's part of the weight or of its gradient), a new tensor
        padded with zeros to ``width``."""
        import torch

        flat, index = local.reshape(-1), self.index.to(local.device)
        if self.width == index.numel():
            return torch.index_select(flat, 0, index)  # takes int32 indexes as they are
        padded = flat.new_zeros(self.width)
        torch.index_select(flat, 0, index, out=padded[:index.numel()])
        return padded

    def _as_values(self, local: "torch.Tensor") -> "torch.Tensor":
        """``local`` as this rank's part of ``values`` (or of their gradient): a DTensor under FSDP2."""
        if self.mesh is None:
            return local
        from torch.distributed.tensor import DTensor, Shard

        return DTensor.from_local(local, self.mesh, (Shard(0),), run_check=False)

    def _gather(self, parameter: "torch.Tensor") -> None:
        """Reduce the weight's full gradient (under FSDP2: its reduce-scattered shard) to the masked entries at
        once, and free it."""
        self._local()  # the index follows the weight to its device
        grad = self._as_values(self._pick(local_shard(parameter.grad)[0]))  # type: ignore[arg-type]
        parameter.grad = None
        if self.group is not None:  # data parallel: average the density-sized gradient, not the weight's
            import torch.distributed as dist

            dist.all_reduce(grad, group=self.group)
            grad.div_(dist.get_world_size(self.group))
        if self.values.grad is None:
            self.values.grad = grad
        else:
            self.values.grad.add_(grad)  # gradient accumulation over several backwards

    def _drop_values(self, module: Any, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        state_dict.pop(prefix + self.attribute + _VALUES, None)  # checkpoints hold the module's own names

    def _values_not_missing(self, module: Any, incompatible: Any) -> None:
        """Checkpoints hold no values: the next step gathers them from the loaded weight."""
        incompatible.missing_keys[:] = [key for key in incompatible.missing_keys if not key.endswith(_VALUES)]

    @property
    def trainable(self) -> "torch.nn.Parameter":
        return self.values

    def _local_values(self) -> "torch.Tensor":
        """The tensor that holds this rank's values (all of them outside FSDP2): its ``data`` is swapped."""
        # a DTensor parameter's to_local() is a fresh view: swapping its data would leave the DTensor's alone
        return self.values if self.mesh is None else self.values._local_tensor

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
        delattr(self.owner, self.attribute + _VALUES)  # the last parameter registered: the order is as before
        self.values.grad = None

    @property
    def overhead_bytes(self) -> int:
        return self.index.nbytes


class Restriction:
    """The restriction of a module's training to a mask; ``remove()`` (or ``unrestrict``) lifts it."""

    def __init__(self, module: "torch.nn.Module", mode: Mode):
        self.module = module
        self.mode = mode
        self._restricted: list[_Dense | _Sparse] = []
        self._frozen: list["torch.nn.Parameter"] = []  # parameters with an empty mask: requires_grad switched off
        self._hooks: list[Any] = []
        if mode == "sparse":  # whoever builds the optimizer (a Trainer too), its steps must reach the weights
            from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

            self._hooks += [register_optimizer_step_pre_hook(self._before_step),
                            register_optimizer_step_post_hook(self._after_step)]

    def parameters(self) -> list["torch.nn.Parameter"]:
        """The module's trainable parameters now: what to give the optimizer (sparse: the masked values)."""
        weights = {id(entry.parameter) for entry in self._restricted if isinstance(entry, _Sparse)}
        return [p for p in self.module.parameters() if p.requires_grad and id(p) not in weights]

    def attach(self, optimizer: "torch.optim.Optimizer") -> None:
        """Reset entries outside the mask after each ``optimizer.step()`` (dense mode; sparse needs nothing),
        and refuse a step if a restricted parameter was replaced or swapped (``_Entry.check_attached``)."""
        if self.mode == "dense":
            self._hooks += [optimizer.register_step_pre_hook(lambda *_: self._check_attached()),
                            optimizer.register_step_post_hook(lambda *_: self.restore())]

    def restore(self) -> None:
        """Dense: reset every entry outside the mask to its starting value. Sparse: write the masked values
        held by a step into the weights and release them (done after each optimizer step that updates them)."""
        for entry in self._restricted:
            entry.restore()
        self._check_attached()

    def _check_attached(self) -> None:
        for entry in self._restricted:
            entry.check_attached()

    def _stepped(self, optimizer: "torch.optim.Optimizer") -> list[_Sparse]:
        """The sparse entries whose values ``optimizer`` updates."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        return [entry for entry in self._restricted if isinstance(entry, _Sparse) and id(entry.values) in held]

    def _before_step(self, optimizer: "torch.optim.Optimizer", *_: Any) -> None:
        for entry in self._stepped(optimizer):
            entry.gather()

    def _after_step(self, optimizer: "torch.optim.Optimizer", *_: Any) -> None:
        for entry in self._stepped(optimizer):
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
        the packed masks (1 bit per entry) of partly masked parameters; sparse, the indexes of masked entries
        (int32). Sparse mode's ``values`` are the trained parameters themselves (density x the weights, held
        only during optimizer steps)."""
        return sum(entry.overhead_bytes for entry in self._restricted)

    def __repr__(self) -> str:
        return (f"Restriction(mode={self.mode!r}, restricted={len(self._restricted)}, "
                f"frozen={len(self._frozen)})")


def restrict(module: "torch.nn.Module", mask: MaskLike, *, mode: Mode = "dense",
             optimizer: "torch.optim.Optimizer | None" = None, missing: Missing = "freeze",
             process_group: Any = None) -> Restriction:
    """Restrict training of ``module`` to ``mask`` (a Mask, MaskFile or .smask path) and return the handle.

    Mask names are ``module.named_parameters()`` names; names of buffers are accepted and ignored (buffers are
    not trained; a mask built from a checkpoint lists them). A name that is neither, or a shape that differs,
    raises MismatchError. See the module docstring for the two modes and ``missing``.

    Under ``DistributedDataParallel``, dense mode needs nothing; sparse mode needs the ``process_group``
    (e.g. ``torch.distributed.group.WORLD``) and ``restrict`` before wrapping: DDP is told to leave the
    restricted weights and their values alone, and each values gradient is averaged over the group as
    backward produces it (density-sized communication; with ``no_sync`` accumulation, once per backward).
    Under FSDP2, ``restrict`` after ``fully_shard`` (both modes, no ``process_group``): sparse mode runs one
    collective per restricted parameter here (the longest rank's count of masked entries), so every rank
    must call it.
    """
    if mode not in ("dense", "sparse"):
        raise UsageError(f"mode must be 'dense' or 'sparse', got {mode!r}")
    if missing not in ("freeze", "train", "error"):
        raise UsageError(f"missing must be 'freeze', 'train' or 'error', got {missing!r}")
    if getattr(module, _ATTRIBUTE, None) is not None:
        raise UsageError("this module is already restricted to a mask; call submask.unrestrict(module) first")
    if process_group is not None and mode != "sparse":
        raise UsageError("process_group is for sparse mode under DistributedDataParallel; dense mode needs none")
    if mode == "sparse" and optimizer is not None:
        raise UsageError("sparse mode replaces the masked parameters by their masked values: create the "
                           "optimizer after restrict(), from restriction.parameters(), and do not pass it here")
    aliases: dict[int, list[str]] = {}  # tied weights: one parameter, several names
    for name, parameter in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(parameter), []).append(name)
    parameters = dict(module.named_parameters())
    with open_mask(mask) as masks:
        # a mask built from a checkpoint also lists its buffers (e.g. position ids): they fit, and stay as they are
        tensors = {**dict(module.named_buffers(remove_duplicate=False)),
                   **dict(module.named_parameters(remove_duplicate=False))}
        check_fit(masks, {name: tuple(t.shape) for name, t in tensors.items()}, "the module's parameters and buffers")
        absent = [name for name, p in parameters.items() if not any(alias in masks for alias in aliases[id(p)])]
        if absent and missing == "error":
            raise MismatchError(f"{describe(masks)} does not list {len(absent)} parameter(s) of the module, e.g. "
                                f"{absent[:3]}; pass missing='freeze' or missing='train' to accept that")
        restriction = Restriction(module, mode)
        try:
            for name, parameter in parameters.items():
                if not parameter.requires_grad:  # frozen by the caller: stays so
                    continue
                bits = _mask_of(masks, aliases[id(parameter)])
                if (bits is None and missing == "freeze") or (bits is not None and bits.count == 0):
                    restriction._frozen.append(_freeze(parameter))
                elif bits is not None and bits.count < bits.numel:
                    restriction._restricted.append(_restrict_one(module, name, parameter, bits, mode, process_group))
        except BaseException:  # e.g. a corrupt tensor in a .smask file: leave the module as it was
            restriction.remove()
            raise
    if process_group is not None:
        _ddp_ignore(module, restriction._restricted)
    setattr(module, _ATTRIBUTE, restriction)
    if optimizer is not None:
        restriction.attach(optimizer)
    return restriction


def unrestrict(module: "torch.nn.Module") -> None:
    """Lift the restriction that ``restrict`` put on ``module``."""
    restriction = getattr(module, _ATTRIBUTE, None)
    if restriction is None:
        raise UsageError("this module is not restricted to a mask; nothing to remove")
    restriction.remove()


def restriction_of(module: "torch.nn.Module") -> Restriction | None:
    """The active restriction of ``module``, if any."""
    return getattr(module, _ATTRIBUTE, None)


def _freeze(parameter: "torch.nn.Parameter") -> "torch.nn.Parameter":
    parameter.requires_grad_(False)
    parameter.grad = None  # a stale gradient would still be applied by the optimizer
    return parameter


def _packed_range(bits: "TensorMask", start: int, count: int) -> Any:
    """Packed bits (most significant first) of entries [start, start + count): only that range is unpacked."""
    import numpy as np

    if start == 0 and count == bits.numel:
        return bits.packed
    first = start // 8
    unpacked = np.unpackbits(bits.packed[first:(start + count + 7) // 8 + 1])
    return np.packbits(unpacked[start - 8 * first:start - 8 * first + count])


def _indices_in_range(bits: "TensorMask", start: int, count: int) -> Any:
    """Flat indices, counted from ``start``, of the masked entries in [start, start + count)."""
    from .packed import set_positions

    return set_positions(_packed_range(bits, start, count), count)


def _longest(count: int, mesh: Any) -> int:
    """The largest ``count`` over the ranks of ``mesh`` (a 1-D device mesh): one collective per parameter."""
    import torch
    import torch.distributed as dist

    counts = torch.tensor([count], device=mesh.device_type)
    dist.all_reduce(counts, op=dist.ReduceOp.MAX, group=mesh.get_group())
    return int(counts.item())


def _mask_of(masks: Any, names: list[str]) -> "TensorMask | None":
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


def _restrict_one(module: "torch.nn.Module", name: str, parameter: "torch.nn.Parameter", bits: "TensorMask",
                  mode: Mode, group: Any) -> _Dense | _Sparse:
    owner_name, _, attribute = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if mode == "dense":
        return _Dense(owner, attribute, parameter, bits)
    return _Sparse(owner, attribute, parameter, bits, group)


def _ddp_ignore(module: "torch.nn.Module", entries: list[_Dense | _Sparse]) -> None:
    """Tell DistributedDataParallel (wrapping ``module`` later) to leave restricted weights and values alone:
    the restriction averages the values' gradients itself."""
    from torch.nn.parallel import DistributedDataParallel

    tensors = {id(t) for e in entries for t in (e.parameter, e.trainable)}
    names = [name for name, p in module.named_parameters(remove_duplicate=False) if id(p) in tensors]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)


__all__ = ["Restriction", "restrict", "restriction_of", "unrestrict"]
