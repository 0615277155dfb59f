"""Update masks during training: which parameters moved from a reference, on demand, on the model's device.

>>> tracker = submask.UpdateTracker(model)            # keeps a copy of the initial weights   # doctest: +SKIP
>>> ...                                               # training steps                        # doctest: +SKIP
>>> tracker.density().overall                         # fraction of values changed so far     # doctest: +SKIP
>>> tracker.save("step-1000.smask")                   # the update mask, streamed atomically  # doctest: +SKIP

The comparison is ``build_mask`` on the parameters (state dicts that stay on their device: a model on a
GPU is compared there, only the packed bits and counts come back), so criteria, the tolerance ladder and
the mask's metadata are those of a build. The reference costs memory only when it is not given: with
``reference=`` (the reference model an RL trainer already holds, or a state dict) nothing is copied. Under
FSDP2 (``fully_shard``), each rank compares its own shards: ``density()`` sums the counts over the ranks,
``mask()`` gathers every rank's bits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .breakdown import locate
from .builder import build_mask, count_changes
from .builder.criteria import LADDER_ATOL
from .built import BuiltMask, ChangeCounts
from .errors import MismatchError, UsageError
from .mask import Mask, TensorMask
from .metadata import model_fingerprint
from .sharding import is_sharded, local_shard
from .wrappers import effective_parameters, names_for


@dataclass(frozen=True)
class UpdateDensity:
    """Update density (the fraction of values changed from the reference; the paper's "update sparsity" is
    ``1 - density``): overall, per tensor and per module type (as ``submask.breakdown.locate`` names them)
    under the criterion, and at each tolerance of ``LADDER_ATOL`` (``ladder``: changed by more than the
    tolerance, overall and per module type)."""

    overall: float
    tensors: dict[str, float]
    modules: dict[str, float]
    ladder: dict[float, float]
    module_ladder: dict[str, dict[float, float]]

    @classmethod
    def of(cls, mask: Mask) -> UpdateDensity:
        """The density of an update mask built with its tolerance ladder."""
        ladder = mask.metadata.stats["ladder"]["changed"]
        return cls.from_counts(ChangeCounts(numel={name: tensor.numel for name, tensor in mask.items()},
                                            changed={name: tensor.count for name, tensor in mask.items()},
                                            ladder={name: ladder[name] for name in mask}, backend=""))

    @classmethod
    def from_counts(cls, counts: ChangeCounts) -> UpdateDensity:
        """The density of ``count_changes`` counts (taken with the ladder)."""
        if counts.ladder is None:
            raise UsageError("UpdateDensity needs the tolerance ladder's counts: count them with ladder=True")
        numel: dict[str, int] = {}
        changed: dict[str, int] = {}
        module_ladder: dict[str, list[int]] = {}
        for name, total in counts.numel.items():
            module = locate(name).module
            numel[module] = numel.get(module, 0) + total
            changed[module] = changed.get(module, 0) + counts.changed[name]
            rungs = module_ladder.setdefault(module, [0] * len(LADDER_ATOL))
            module_ladder[module] = [rung + count for rung, count in zip(rungs, counts.ladder[name], strict=True)]
        overall_numel = sum(numel.values())
        overall_ladder = [sum(rungs) for rungs in zip(*module_ladder.values(), strict=True)]

        def density(count: int, total: int) -> float:
            return count / total if total else 0.0

        def ladder(counts_at: list[int], total: int) -> dict[float, float]:
            return {atol: density(count, total) for atol, count in zip(LADDER_ATOL, counts_at, strict=True)}

        return cls(overall=density(sum(changed.values()), overall_numel),
                   tensors={name: density(counts.changed[name], total) for name, total in counts.numel.items()},
                   modules={module: density(changed[module], numel[module]) for module in numel},
                   ladder=ladder(overall_ladder or [0] * len(LADDER_ATOL), overall_numel),
                   module_ladder={module: ladder(rungs, numel[module]) for module, rungs in module_ladder.items()})

    def as_logs(self, prefix: str = "update_density") -> dict[str, float]:
        """Flat ``{name: value}`` for a trainer's loggers: overall, per module type, and the overall ladder."""
        logs = {prefix: self.overall}
        logs.update({f"{prefix}/{module}": value for module, value in self.modules.items()})
        logs.update({f"{prefix}@atol={atol:g}": value for atol, value in self.ladder.items() if atol})
        return logs


class _Criterion(TypedDict):
    """The change criterion a tracker passes on to ``build_mask`` and ``count_changes``."""

    criterion: str | None
    atol: float | None
    rtol: float | None


class UpdateTracker:
    """The update mask of ``model``'s parameters against ``reference`` (default: a copy of the parameters
    now, on their device, which follows the model if it is moved or converted later), computed on demand on
    the model's device.

    ``reference`` may be a module (an RL trainer's reference model: its parameters are read live, never
    copied) or a state dict holding at least the model's parameters, under the model's names or the mask's.
    ``criterion``, ``atol`` and ``rtol`` are those of ``build_mask``. ``names`` maps the model's parameter
    names to the mask's (a PEFT model's map to its base model's by default: ``submask.wrappers``).
    """

    def __init__(self, model: Any, reference: Any = None, *, criterion: str | None = None,
                 atol: float | None = None, rtol: float | None = None, names: Callable[[str], str] | None = None):
        self.model = model
        self._criterion: _Criterion = {"criterion": criterion, "atol": atol, "rtol": rtol}
        self._names = names_for(model, names)
        self._owns_reference = reference is None
        if reference is None:
            reference = {name: value.detach().clone() for name, value in self._current().items()}
        elif callable(getattr(reference, "named_parameters", None)):
            reference = saved_parameters(reference)
        elif not isinstance(reference, Mapping):
            raise UsageError(f"UpdateTracker reference must be a module or a state dict, not a "
                                f"{type(reference).__name__}")
        self.reference = reference

    def _pair(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """The reference and current tensors to compare, and None; under FSDP2, this rank's shards of both and
        the (sharded) parameters themselves."""
        own = effective_parameters(self.model, saved_parameters(self.model))
        current = self._current(own)
        model_name = dict(zip(current, own, strict=True))  # the mask's name -> the model's
        missing = [name for name in current if name not in self.reference and model_name[name] not in self.reference]
        if missing:
            raise MismatchError(f"UpdateTracker: the reference has no {missing[0]!r} ({len(missing)} parameter(s) "
                                "missing); pass a reference with the model's parameter names")
        if self._owns_reference:
            self._follow(current)
        reference = {name: self.reference[name if name in self.reference else model_name[name]].detach()
                     for name in current}
        if not any(is_sharded(value) for value in current.values()):
            return reference, current, None
        local = {name: local_shard(value)[0] for name, value in current.items()}
        return _local_references(reference, current), local, current

    def _current(self, own: dict[str, Any] | None = None) -> dict[str, Any]:
        """The model's saved parameters (``own``, else read now), detached, under the mask's names."""
        own = effective_parameters(self.model, saved_parameters(self.model)) if own is None else own
        current = {name if self._names is None else self._names(name): value.detach() for name, value in own.items()}
        if len(current) != len(own):
            raise UsageError("UpdateTracker: the names mapping gives two of the model's parameters one name; "
                             "change it so that every name stays distinct")
        return current

    def _follow(self, current: dict[str, Any]) -> None:
        """Move and convert the tracker's copy of the initial weights as the model was since (``model.cuda()``,
        ``.half()``), once: a copy left behind would be sent to the model's device on every call, and one of
        another dtype would count every rounded value as changed."""
        for name, value in current.items():
            initial = self.reference[name]
            if initial.device != value.device or initial.dtype != value.dtype:
                self.reference[name] = initial.to(value.device, value.dtype)

    @property
    def sharded(self) -> bool:
        """True when the model's parameters are sharded (FSDP2's ``fully_shard``): each rank then compares its
        own shards, and ``density``, ``mask`` and ``save`` are collectives that every rank must call."""
        return any(is_sharded(value) for value in saved_parameters(self.model).values())

    def mask(self) -> Mask:
        """The update mask now (set where a parameter value differs from the reference), with its ladder. Under
        FSDP2 every rank gets the whole mask: each rank's bits are gathered (the packed bits of the model, one
        bit per parameter, on every rank)."""
        reference, current, sharded = self._pair()
        mask = _kept(build_mask(reference, current, **self._criterion))
        return mask if sharded is None else _gathered(mask, sharded)

    def density(self) -> UpdateDensity:
        """Fractions of values changed now, overall, per tensor, per module type and along the ladder
        (counted without making the mask: no bits come back from the model's device)."""
        reference, current, sharded = self._pair()
        counts = count_changes(reference, current, **self._criterion)
        return UpdateDensity.from_counts(counts if sharded is None else _summed_over_ranks(counts, sharded))

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the update mask now to ``path`` (streamed, atomically; over an existing file only with
        ``overwrite``); returns the path written. Under FSDP2 every rank calls it and the mesh's first rank
        writes the gathered mask."""
        reference, current, sharded = self._pair()
        if sharded is None:
            written = build_mask(reference, current, path, overwrite=overwrite, **self._criterion).path
            assert written is not None  # build_mask with an output path returns the path written
            return written
        gathered = _gathered(_kept(build_mask(reference, current, **self._criterion)), sharded)
        if _first_rank(sharded):
            from .io import save

            save(gathered, path, overwrite=overwrite)
        return Path(path)


def _local_references(reference: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The reference entries that match each sharded parameter's local shard: the reference's own shard, or the
    same rows of a full reference tensor."""
    local = {}
    for name, value in current.items():
        if is_sharded(reference[name]) or not is_sharded(value):
            local[name] = local_shard(reference[name])[0]
            continue
        if tuple(reference[name].shape) != tuple(value.shape):
            raise MismatchError(f"UpdateTracker: the reference's {name!r} has shape {list(reference[name].shape)}, "
                                f"the model's {list(value.shape)}")
        shard, start = local_shard(value)
        local[name] = reference[name].reshape(-1)[start:start + shard.numel()].view(shard.shape)
    return local


def _mesh(current: dict[str, Any]) -> Any:
    """The device mesh the sharded parameters are sharded over (1-D: HSDP's 2-D meshes are refused)."""
    mesh = next(value.device_mesh for value in current.values() if is_sharded(value))
    if mesh.ndim != 1:
        raise UsageError("UpdateTracker follows FSDP2 parameters sharded over a 1-D mesh, not HSDP's "
                         f"{mesh.ndim}-D mesh: track with reference=... on a model gathered from the shards, or "
                         "shard the model with FSDP2 over one mesh dimension")
    return mesh


def _first_rank(current: dict[str, Any]) -> bool:
    """Whether this process is the first rank of the sharded parameters' mesh."""
    return _mesh(current).get_local_rank() == 0


def _kept(built: BuiltMask) -> Mask:
    """The in-memory mask of a build made without an output path."""
    assert built.mask is not None  # build_mask without an output path keeps the mask in memory
    return built.mask


def _gathered(local: Mask, current: dict[str, Any]) -> Mask:
    """The mask of the full parameters from each rank's mask of its shards: every rank's bits and ladder counts
    gathered (one all_gather_object) and put end to end in flat order; metadata and stats made whole."""
    import torch.distributed as dist

    mesh = _mesh(current)
    ladders = local.metadata.stats["ladder"]["changed"]
    mine = {name: (local_shard(current[name])[1], tensor.numel, tensor.packed, ladders[name])
            for name, tensor in local.items() if is_sharded(current[name])}
    everyone: list[Any] = [None] * mesh.size()
    dist.all_gather_object(everyone, mine, group=mesh.get_group())
    tensors, ladder = {}, {}
    for name, tensor in local.items():
        if not is_sharded(current[name]):  # every rank holds all of it
            tensors[name], ladder[name] = tensor, ladders[name]
            continue
        parts = sorted((pieces[name] for pieces in everyone), key=lambda part: part[0])
        bits = np.concatenate([np.unpackbits(packed, count=numel) for _, numel, packed, _ in parts])
        tensors[name] = TensorMask(tuple(current[name].shape), np.packbits(bits))
        ladder[name] = [sum(rung) for rung in zip(*(part[3] for part in parts), strict=True)]
    shapes = {name: tensor.shape for name, tensor in tensors.items()}
    stats = {**local.metadata.stats, "changed": sum(t.count for t in tensors.values()),
             "numel": sum(t.numel for t in tensors.values())}
    total = [sum(rung) for rung in zip(*ladder.values(), strict=True)] or [0] * len(LADDER_ATOL)
    stats["ladder"] = {**stats["ladder"], "changed": {"__all__": total, **ladder}}
    model = {**(local.metadata.model or {}), "fingerprint": model_fingerprint(shapes)}
    return Mask(tensors, replace(local.metadata, stats=stats, model=model))


def _summed_over_ranks(counts: ChangeCounts, current: dict[str, Any]) -> ChangeCounts:
    """Each rank's counts of its shards summed over the ranks of the shards' mesh (one all-reduce): the counts of
    the full parameters. A parameter that is not sharded (every rank holds all of it) counts on one rank."""
    import torch
    import torch.distributed as dist

    mesh = _mesh(current)
    names, rungs = list(counts.numel), len(LADDER_ATOL)
    assert counts.ladder is not None
    mine = [is_sharded(current[name]) or mesh.get_local_rank() == 0 for name in names]
    flat = [counts.changed[name] if own else 0 for name, own in zip(names, mine, strict=True)]
    flat += [count if own else 0 for name, own in zip(names, mine, strict=True) for count in counts.ladder[name]]
    totals = torch.tensor(flat, dtype=torch.int64, device=mesh.device_type)
    dist.all_reduce(totals, group=mesh.get_group())
    summed = totals.tolist()
    return ChangeCounts(numel={name: current[name].numel() for name in names},
                        changed=dict(zip(names, summed[:len(names)], strict=True)),
                        ladder={name: summed[len(names) + k * rungs:len(names) + (k + 1) * rungs]
                                for k, name in enumerate(names)}, backend=counts.backend)


def saved_parameters(module: Any) -> dict[str, Any]:
    """The parameters a module saves in its state dict, by name: not the trained values that restricted
    finetuning's sparse mode registers beside a weight (``submask.train``), which the weight already holds."""
    saved = module.state_dict(keep_vars=True)
    return {name: value for name, value in module.named_parameters() if name in saved}
