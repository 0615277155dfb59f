"""Sparse-update models: the finetuned values where a mask is set, the base values elsewhere.

``apply_mask`` works on safetensors checkpoints on disk, tensor by tensor and chunk by chunk (memory stays
bounded by ``CHUNK_ELEMENTS``), selecting raw bits, so every dtype is exact and torch is not needed. Given a
delta (a mask with values, ``build_mask(..., values=True)``) instead of the finetuned model and a mask, it
rebuilds the finetuned checkpoint (``submask.rebuild``).
``apply_to_state_dict`` and ``apply_to_module`` do the same in memory (torch tensors or numpy arrays).

>>> submask.apply_mask("base/", "finetuned/", "rl.smask", "sparse-update/")   # doctest: +SKIP
AppliedModel(path=PosixPath('sparse-update'), tensors=291, numel=..., count=...)
>>> submask.apply_mask("org/base@3f2c...", "hf://org/run/deltas/step-1000.smask", "step-1000/")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from .align import check_fit, check_same_model, check_same_tensors, mismatch
from .atomic import check_target, replace_dir, staging_dir, writing
from .built import AppliedModel
from .checkpoints.pickled import PICKLE_INDEX, PickleSource, safetensors_shards
from .checkpoints.safetensors_file import TensorInfo
from .checkpoints.sources import CHUNK_ELEMENTS, INDEX, ShardedSource, Source, local_source
from .errors import SourceError, UsageError
from .io import MaskLike, open_mask
from .mask import TensorMask
from .names import Names, mapped
from .packed import unpack
from .rebuild import rebuild

if TYPE_CHECKING:
    import torch

#: Files of a finetuned model dir that are weights, not copied next to the applied weights.
#: The weights file of a model dir applied from single files: the name transformers' from_pretrained reads.
SINGLE_FILE = "model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")


def apply_mask(base: Any, finetuned: Any, mask: Any, out_dir: str | os.PathLike[str] | None = None, *,
               invert: bool = False, overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
               hub_api: Any = None, cache_dir: str | os.PathLike[str] | None = None,
               names: Names | None = None) -> AppliedModel:
    """Write a model dir whose weights are ``finetuned`` where ``mask`` is set and ``base`` elsewhere.

    Called with three arguments, ``apply_mask(base, delta, out_dir)``, it rebuilds the finetuned checkpoint
    from ``base`` and a delta (a mask with values and the checkpoint layout; ``submask.rebuild.rebuild``,
    which says what ``base`` and ``delta`` may be, Hub ids and hf:// URLs included, with ``hub_api`` and
    ``cache_dir``): every recorded file byte for byte, each verified against its SHA-256, and nothing else
    (config and tokenizer files are not part of a delta, so nothing vouches for them).

    With four arguments, ``base`` and ``finetuned`` are model dirs (sharded with an index, or not) or
    ``.safetensors`` or ``torch.save`` (.bin, .pt) files with the same tensor names, shapes and dtypes. Each
    output shard is the finetuned shard's header, byte for byte, followed by the selected values; the index is
    copied, and when ``finetuned`` is a directory its other files (config, tokenizer, ...) too. From a single
    ``.safetensors`` file, the output is ``model.safetensors``, the name ``from_pretrained`` looks for (add the
    config). A torch.save finetuned checkpoint is written as safetensors (``pytorch_model-00001-of-00002.bin`` as
    ``model-00001-of-00002.safetensors``, with a ``model.safetensors.index.json`` when sharded). Tensors the
    mask does not list take the base values.
    ``invert=True`` swaps the roles: finetuned values outside the mask, base values inside. The directory
    appears atomically, complete or not at all; an existing non-empty ``out_dir`` is replaced only with
    ``overwrite=True``. ``progress(nbytes, total)`` is called as tensor bytes are written. ``names``
    (``submask.names.NameMap``) maps the checkpoints' tensor names to the mask's; the output keeps the
    checkpoint's names.
    """
    if out_dir is None:
        if invert:
            raise UsageError("invert=True (--invert) needs the finetuned checkpoint and a mask; a delta rebuilds "
                             "the finetuned checkpoint only")
        if names is not None:
            raise UsageError("a delta rebuilds the checkpoint under the names it recorded; names= (--strip-prefix, "
                             "--add-prefix, --rename) applies to a mask and two checkpoints only")
        return rebuild(base, finetuned, mask, overwrite=overwrite, progress=progress, hub_api=hub_api,
                       cache_dir=cache_dir)
    out = check_target(out_dir, overwrite, directory=True, inputs=[base, finetuned])
    with local_source(base) as base_src, local_source(finetuned) as ft_src, open_mask(mask) as masks:
        _check_pair(base_src, ft_src)
        as_mask = mapped(ft_src.tensors, names, ft_src.label)
        check_fit(masks, {as_mask[name]: info.shape for name, info in ft_src.tensors.items()},
                  f"the finetuned model {ft_src.label}")
        shards, index = _shards(ft_src)
        buffers = (np.empty(CHUNK_ELEMENTS * 8, np.uint8), np.empty(CHUNK_ELEMENTS * 8, np.uint8))
        total = sum(info.nbytes for info in ft_src.tensors.values())
        report = None if progress is None else (lambda nbytes: progress(nbytes, total))
        taken = 0
        single = Path(os.fspath(finetuned)).is_file() and len(shards) == 1
        with staging_dir(out) as staging:
            for shard in shards:
                with writing(out), open(staging / (SINGLE_FILE if single else shard.name), "wb") as handle:
                    handle.write(shard.header)
                    for name in shard.names:
                        bits = masks[as_mask[name]] if as_mask[name] in masks else None
                        taken += _write_selected(handle, ft_src.tensors[name], base_src, ft_src, bits, invert,
                                                 buffers, report)
                    handle.flush()
                    os.fsync(handle.fileno())
            with writing(out):
                if Path(finetuned).is_dir():
                    _copy_side_files(Path(finetuned), staging)
                if index is not None:
                    (staging / INDEX).write_bytes(index)
                replace_dir(staging, out, overwrite)
        numel = sum(t.numel for t in ft_src.tensors.values())
        return AppliedModel(out, len(ft_src.tensors), numel, taken)


def apply_to_state_dict(base_sd: Mapping[str, Any], finetuned_sd: Mapping[str, Any], mask: MaskLike, *,
                        invert: bool = False) -> dict[str, Any]:
    """A new state dict: ``finetuned_sd`` where ``mask`` is set, ``base_sd`` elsewhere (``invert`` swaps).

    Values are torch tensors or numpy arrays; tensors the mask does not list are taken from ``base_sd``
    (``finetuned_sd`` with ``invert``) as they are, not copied.
    """
    shapes = _shapes(base_sd)
    check_same_model(_shapes(finetuned_sd), shapes, "the finetuned state dict", "the base state dict")
    with open_mask(mask) as masks:
        check_fit(masks, shapes, "the state dict")
        result = {}
        for name, base_value in base_sd.items():
            take, keep = (base_value, finetuned_sd[name]) if invert else (finetuned_sd[name], base_value)
            result[name] = _select(masks[name], take, keep) if name in masks else keep
    return result


def apply_to_module(module: torch.nn.Module, finetuned_sd: Mapping[str, torch.Tensor], mask: MaskLike, *,
                    invert: bool = False, names: Names | None = None) -> None:
    """Overwrite ``module``'s parameters and buffers in place with ``finetuned_sd`` where ``mask`` is set.

    The module holds the base values; ``names`` (``submask.names.NameMap``) maps its parameter and buffer
    names to the mask's (default: the same names), as for a module wrapped by DDP or PEFT; ``finetuned_sd``
    is keyed as the module is. Finetuned values are cast to each tensor's dtype and device (exact when the
    module's dtype is at least as wide). With ``invert`` the finetuned values go outside the mask, and the
    state_dict tensors the mask does not list are replaced whole. ``finetuned_sd`` must hold every tensor
    that gives at least one value; nothing is changed unless it does.
    """
    import torch

    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    as_mask = mapped(tensors, names, "the module")
    with open_mask(mask) as masks:
        check_fit(masks, {as_mask[name]: tuple(t.shape) for name, t in tensors.items()}, "the module")
        counts = {name: masks.counts[key] for name, key in as_mask.items() if key in masks.counts}
        if invert:
            giving = [name for name in module.state_dict() if name not in counts]
            giving += [name for name, count in counts.items() if count < tensors[name].numel()]
        else:
            giving = [name for name, count in counts.items() if count]
        check_same_tensors({name: tuple(tensors[name].shape) for name in giving}, _shapes(finetuned_sd),
                           "the module's tensors to update", "the finetuned state dict",
                           "Pass the finetuned model's full state dict.")
        with torch.no_grad():
            for name in giving:
                target = tensors[name]
                finetuned = finetuned_sd[name].to(device=target.device, dtype=target.dtype)
                if name not in counts:
                    target.copy_(finetuned)
                    continue
                take, keep = (target, finetuned) if invert else (finetuned, target)
                target.copy_(_select(masks[as_mask[name]], take, keep))


def _select(bits: TensorMask, take: Any, keep: Any) -> Any:
    """``take`` where ``bits`` is set, ``keep`` elsewhere: the one numpy/torch seam of this module."""
    if isinstance(take, np.ndarray):
        return np.where(bits.to_numpy(), take, keep)
    return take.where(bits.to_torch(take.device), keep)


def _shapes(tensors: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in tensors.items()}


def _write_selected(handle: BinaryIO, tensor: TensorInfo, base: Source, finetuned: Source,
                    bits: TensorMask | None, invert: bool, buffers: tuple[np.ndarray, np.ndarray],
                    progress: Callable[[int], None] | None) -> int:
    """Write one tensor's selected raw values chunk by chunk; return how many came from ``finetuned``."""
    count = 0 if bits is None else bits.count
    taken = tensor.numel - count if invert else count
    whole = finetuned if taken == tensor.numel else base if taken == 0 else None  # one side only: copy it
    take, keep = (base, finetuned) if invert else (finetuned, base)
    for start in range(0, tensor.numel, CHUNK_ELEMENTS):
        stop = min(start + CHUNK_ELEMENTS, tensor.numel)
        if whole is not None:
            chunk = whole.read(tensor.name, start, stop, buffers[0])
        else:
            chosen = unpack(bits.packed[start // 8: (stop + 7) // 8], stop - start)  # type: ignore[union-attr]
            chunk = keep.read(tensor.name, start, stop, buffers[1])
            if not chunk.flags.writeable:  # a source may hand back a read-only view instead of the buffer
                chunk = chunk.copy()
            np.copyto(chunk, take.read(tensor.name, start, stop, buffers[0]), where=chosen)
        handle.write(chunk.data)
        if progress is not None:
            progress(chunk.nbytes)
    return taken


@dataclass(frozen=True)
class _Shard:
    """One file to write: its name, its raw header (length prefix included) and its tensors in byte order."""

    name: str
    header: bytes
    names: list[str]


def _shards(source: Source) -> tuple[list[_Shard], bytes | None]:
    """The files to write, as the finetuned checkpoint lays them out, and a safetensors index to write beside
    them when the finetuned checkpoint is a sharded pickle (a safetensors one's index is copied as it is):
    safetensors headers are copied verbatim; torch.save files become safetensors files of the same tensors."""
    if isinstance(source, PickleSource):
        pickled, index = safetensors_shards(source)
        return [_Shard(*shard) for shard in pickled], index
    assert isinstance(source, ShardedSource)
    shards = []
    for file_name in source.provenance["files"]:
        opened = source.file(file_name)
        unread = [name for name in opened.tensors if name not in source.tensors]
        if unread:
            raise SourceError(f"{opened.path}: holds tensor(s) its index does not list (e.g. {unread[:3]}); "
                              f"fix the index or remove them so that the output can keep this shard's layout")
        shards.append(_Shard(opened.path.name, opened.raw_header, opened.names_in_file_order))
    return shards, None


def _info_shapes(source: Source) -> dict[str, tuple[int, ...]]:
    return {name: info.shape for name, info in source.tensors.items()}


def _check_pair(base: Source, finetuned: Source) -> None:
    base_label, ft_label = f"the base model {base.label}", f"the finetuned model {finetuned.label}"
    check_same_model(_info_shapes(finetuned), _info_shapes(base), ft_label, base_label)
    dtypes = [f"{name} {info.dtype.name} vs {base.tensors[name].dtype.name}"
              for name, info in finetuned.tensors.items() if info.dtype != base.tensors[name].dtype]
    if dtypes:
        raise mismatch(ft_label, base_label, "Convert one so that both store the same dtypes.", different=dtypes)


def _copy_side_files(model_dir: Path, out: Path) -> None:
    """Copy config, tokenizer and other non-weight files (not hidden ones such as .git) into ``out``."""
    for source in sorted(model_dir.rglob("*")):
        relative = source.relative_to(model_dir)
        if (any(part.startswith(".") for part in relative.parts) or not source.is_file()
                or source.name.endswith(WEIGHT_SUFFIXES) or source.name == PICKLE_INDEX):
            continue
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / relative)


__all__ = ["AppliedModel", "apply_mask", "apply_to_module", "apply_to_state_dict"]
