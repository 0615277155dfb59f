"""Base + delta: the finetuned checkpoint again, byte for byte (FORMAT.md, "Values and checkpoint layout").

``rebuild`` (what ``apply_mask(base, delta, out_dir)`` calls) writes every file the delta's checkpoint layout
lists: a safetensors file is its recorded header, then its tensors in byte order, each the base tensor with
the delta's values scattered in at the mask's set positions (a tensor whose mask is full is the values
alone), chunk by chunk (``CHUNK_ELEMENTS`` elements; values arrive block by block), hashed while written;
the index is its recorded text. Each file's size and SHA-256 must equal the recorded ones before the
directory appears (atomically): a wrong base is refused and leaves nothing. No other file is written: a
config or tokenizer is not part of the delta, so nothing vouches for it.

``apply_delta`` does the same in memory: base state dict + delta -> the finetuned state dict.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .accel import job
from .align import mismatch
from .atomic import check_target, replace_dir, staging_dir, writing
from .built import AppliedModel
from .checkpoints.dtypes import DTYPES, DType, dtype_of_array
from .checkpoints.safetensors_file import TensorInfo
from .checkpoints.sources import Source, open_source
from .delta import Delta
from .errors import MismatchError, UsageError
from .format.layout import check_layout
from .io import load_delta
from .mask import TensorMask
from .metadata import CheckpointFile
from .rebuild_source import DeltaLike, DeltaValues, opened
from .rebuild_write import write_file

#: elements from which a rebuild starts numba (``accel.job``): its numpy decode of values coded against the base
#: costs 2-13 ns more an element than the compiled one (`tools/bench/rebuild_stages.py`, "decode, numpy" vs
#: "decode in place"), numba's start from its disk cache ~1.3-1.5 s of CPU, so the start pays from ~1e8-7e8
#: elements; compare's threshold (``START_UP_WORK``, 2^30) would leave a 0.5B-parameter rebuild on numpy
START_UP = 1 << 28


def rebuild(base: Any, delta: DeltaLike, out_dir: str | os.PathLike[str], *, overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None, hub_api: Any = None,
            cache_dir: str | os.PathLike[str] | None = None) -> AppliedModel:
    """Write the finetuned checkpoint's files that ``delta`` records, from ``base`` and its values.

    ``base`` is whatever ``build_mask`` reads (a .safetensors file, a model dir, a Hub repo id
    ``org/name@revision``, a state dict); ``delta`` a .smask file (or hf:// URL) built with values, an
    open one, or a ``Delta``. MismatchError, before anything is written, when ``base`` lacks a tensor the
    delta needs or holds it in another dtype or shape, and after the work when a rebuilt file's size or
    SHA-256 differs from the recorded one (another base with the same shapes): ``out_dir`` is then left as
    it was. ``progress(nbytes, total)`` is called as bytes are written.
    """
    out = check_target(out_dir, overwrite, directory=True, inputs=[base, delta])
    with opened(delta) as values, open_source(base, api=hub_api, cache_dir=cache_dir) as source:
        plan = _plan(values)
        _check_base(values, source)
        total = sum(file.size for file, _ in plan)
        report = None if progress is None else (lambda nbytes: progress(nbytes, total))
        from concurrent.futures import ThreadPoolExecutor  # here, not at import: it imports logging

        with job(sum(info.numel for _, infos in plan for info in infos), START_UP), staging_dir(out) as staging, \
                ThreadPoolExecutor(1, "submask-rebuild-fsync") as syncer:
            synced = []  # each file's fsync runs while the next file is rebuilt
            for file, tensors in plan:
                with writing(out):
                    handle = open(staging / file.name, "wb")  # closed by _synced, or below on failure
                try:
                    with writing(out):
                        digest = write_file(handle, file, tensors, values, source, report)
                        handle.flush()
                    size = os.fstat(handle.fileno()).st_size
                except BaseException:
                    handle.close()
                    raise
                if (size, digest) != (file.size, file.sha256):
                    handle.close()
                    raise MismatchError(
                        f"{out / file.name}: the rebuilt file does not match the delta ({size} bytes, SHA-256 "
                        f"{digest[:16]}..., recorded {file.size} bytes, {file.sha256[:16]}...): {source.label} is "
                        f"not the base {values.label} was built against{_recorded_base(values)}; nothing was "
                        "written")
                synced.append(syncer.submit(_synced, handle))
            with writing(out):
                for done in synced:
                    done.result()
                replace_dir(staging, out, overwrite)
        tensors = [info for _, infos in plan for info in infos]
        counts = values.mask.counts
    return AppliedModel(out, len(tensors), sum(info.numel for info in tensors),
                        sum(counts[info.name] for info in tensors))


def _synced(handle: BinaryIO) -> None:
    """fsync a written file, then close it (closed even when fsync fails)."""
    with handle:
        os.fsync(handle.fileno())


def apply_delta(base: Mapping[str, Any], delta: Delta | str | os.PathLike[str]) -> dict[str, Any]:
    """The finetuned state dict: ``base`` (torch tensors or numpy arrays) with ``delta``'s values scattered in.

    Holds the delta's tensors, in its order (a base tensor the finetuned model lacks is left out); each is
    a new tensor of the base's kind (torch if the base holds torch tensors) in the values' dtype, on the
    base tensor's device (tensors stored whole: on the CPU). MismatchError when ``base`` lacks a tensor the
    delta needs, or holds it in another dtype or shape.

    >>> finetuned = submask.apply_delta(model.state_dict(), "rl.smask")   # doctest: +SKIP
    """
    label = "the delta" if isinstance(delta, Delta) else os.fspath(delta)
    if not isinstance(delta, Delta):
        delta = load_delta(delta, base=base)
    bare = [name for name in delta.mask if name not in delta.values]
    if bare:
        raise UsageError(f"{label}: {len(bare)} tensor(s) carry no values (e.g. {bare[:3]}); build it with "
                         "values=True (--values), or use apply_to_state_dict with the finetuned state dict")
    values = DeltaValues(delta, label)
    _check_base(values, _Shapes(base))
    uses_torch = any(not isinstance(value, np.ndarray) for value in base.values())
    result = {}
    for name, bits in delta.mask.items():
        data, dtype = delta.values[name].data, DTYPES[delta.values[name].dtype]
        if bits.count == bits.numel:
            result[name] = _as_tensor(data.view(dtype.raw).reshape(bits.shape), dtype, uses_torch)
        else:
            result[name] = _scattered(base[name], bits, data.view(dtype.raw), dtype)
    return result


def _plan(values: DeltaValues) -> list[tuple[CheckpointFile, list[TensorInfo]]]:
    """Each file to write with its tensors in byte order (none for a text file), checked against the delta."""
    if values.checkpoint is None:
        raise UsageError(f"{values.label}: holds no checkpoint layout (built without --values, or from a state "
                         "dict), so it cannot rebuild files; pass the finetuned checkpoint too: apply BASE "
                         "FINETUNED MASK -o DIR")
    shapes = values.mask.shapes  # once: a Mask builds the dict on each access
    held = {name: (dtype, shapes[name]) for name in shapes if (dtype := values.dtype(name)) is not None}
    return list(zip(values.checkpoint, check_layout(values.checkpoint, held, values.label)))


def _recorded_base(values: DeltaValues) -> str:
    base = values.metadata.provenance.get("base")
    if not isinstance(base, dict) or not base.get("source"):
        return ""
    revision = f"@{base['revision']}" if base.get("revision") else ""
    return f" ({base['source']}{revision})"


# -- the base ---------------------------------------------------------------------------------------------------

@dataclass
class _Shapes:
    """A state dict's tensors as a source's ``tensors`` would list them (name -> dtype and shape)."""

    state: Mapping[str, Any]
    label: str = "the base state dict"

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return {name: TensorInfo(name, dtype_of_array(value.dtype, f"{self.label}, tensor {name!r}: "),
                                 tuple(int(d) for d in value.shape)) for name, value in self.state.items()}


def _check_base(values: DeltaValues, base: Source | _Shapes) -> None:
    """MismatchError unless ``base`` holds, in the delta's dtype and shape, every tensor the delta only
    partly stores (the tensors it stores whole need nothing from the base)."""
    shapes, tensors = values.mask.shapes, base.tensors  # once: a Mask builds the dict on each access
    needed = [name for name, count in values.mask.counts.items()
              if count < math.prod(shapes[name]) or values.coded_against_base(name)]
    missing = [name for name in needed if name not in tensors]
    different = [f"{name} {values.dtype(name)} {list(shapes[name])} vs {tensors[name].dtype.name} "
                 f"{list(tensors[name].shape)}" for name in needed if name in tensors
                 and (tensors[name].dtype.name, tensors[name].shape) != (values.dtype(name), shapes[name])]
    if missing or different:
        raise mismatch(values.label, base.label, f"Pass the base the delta was built against"
                       f"{_recorded_base(values)}.", only_left=missing, different=different)


# -- in memory --------------------------------------------------------------------------------------------------

def _scattered(base_value: Any, bits: TensorMask, raw_values: np.ndarray, dtype: DType) -> Any:
    """A copy of ``base_value`` with ``raw_values`` at the set positions of ``bits`` (same kind and device)."""
    if isinstance(base_value, np.ndarray):
        out = base_value.copy()
        out.reshape(-1).view(dtype.raw)[bits.to_numpy().reshape(-1)] = raw_values
        return out
    import torch

    out = base_value.detach().clone()
    flat = out.reshape(-1).view(getattr(torch, dtype.signed.name))
    flat[bits.to_torch(out.device).reshape(-1)] = torch.from_numpy(raw_values.view(dtype.signed)).to(out.device)
    return out


def _as_tensor(raw: np.ndarray, dtype: DType, uses_torch: bool) -> Any:
    """Raw values as a tensor of ``dtype``: torch when the base holds torch tensors, else numpy (raw unsigned
    ints where numpy has no such dtype, e.g. bf16)."""
    if not uses_torch:
        return raw.copy().view(dtype.numpy_name or dtype.raw)
    import torch

    return torch.from_numpy(raw.view(dtype.signed).copy()).view(getattr(torch, dtype.torch_name))


__all__ = ["DeltaLike", "apply_delta", "rebuild"]
