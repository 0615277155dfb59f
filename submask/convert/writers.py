"""Masks written for other tools: plain safetensors, a torch.save dict, an npz, a TALL-masks vector, or .smask.

Each writer returns what the target cannot hold (said to the user), and writes atomically: a failed write leaves
no file. Bits are unpacked one tensor at a time into the target's arrays, which the target's own library then
writes (safetensors, torch, numpy keep their whole file in memory).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, writing
from ..errors import UsageError
from ..io import save
from ..mask import Mask
from .readers import METADATA_KEY

DTYPES = ("bool", "uint8")
NO_METADATA = "the mask's metadata (kind, criterion, provenance, stats)"


def _arrays(mask: Mask, dtype: str) -> dict[str, np.ndarray]:
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return {name: tensor.to_numpy().astype(dtype, copy=False) for name, tensor in mask.items()}


def write_safetensors(mask: Mask, path: Path, dtype: str) -> list[str]:
    """bool (or uint8) tensors any safetensors reader loads; the submask metadata rides in ``__metadata__``."""
    from safetensors.numpy import save as save_bytes

    data = save_bytes(_arrays(mask, dtype), metadata={METADATA_KEY: json.dumps(mask.metadata.to_json())})
    with atomic_write(path) as handle:
        handle.write(data)
    return []


def write_torch(mask: Mask, path: Path, dtype: str) -> list[str]:
    """A ``torch.save`` dict of bool (or uint8) tensors, loadable with ``weights_only=True``."""
    import torch

    tensors = {name: torch.from_numpy(array) for name, array in _arrays(mask, dtype).items()}
    with atomic_write(path) as handle:
        torch.save(tensors, handle)
    return [NO_METADATA]


def write_npz(mask: Mask, path: Path, dtype: str) -> list[str]:
    """An ``np.savez_compressed`` archive of bool (or uint8) arrays, one per tensor."""
    with atomic_write(path) as handle:
        np.savez_compressed(handle, **_arrays(mask, dtype))  # type: ignore[arg-type]
    return [NO_METADATA]


def write_tall(mask: Mask, path: Path, dtype: str) -> list[str]:
    """TALL-masks' layout: one ``np.packbits`` vector over the tensors in sorted name order, as a ``.npy``."""
    if dtype != "bool":
        raise UsageError("a TALL-masks vector is packed bits; --dtype does not apply to it")
    order = sorted(mask)
    bits = np.concatenate([mask[name].to_numpy().reshape(-1) for name in order]) if order else np.zeros(0, bool)
    with atomic_write(path) as handle:
        np.save(handle, np.packbits(bits), allow_pickle=False)
    return [NO_METADATA, "the tensor names and shapes (reading it back needs --like)"]


def write_smask(mask: Mask, path: Path, dtype: str, overwrite: bool = True) -> list[str]:
    if dtype != "bool":
        raise UsageError("a .smask file stores bits; --dtype applies to safetensors, torch and npz exports only")
    with writing(path):
        save(mask, path, overwrite=overwrite)
    return []


#: Format name -> writer(mask, path, dtype) -> what the target could not hold
WRITERS: dict[str, Callable[[Mask, Path, str], list[str]]] = {
    "smask": write_smask, "safetensors": write_safetensors, "torch": write_torch, "npz": write_npz,
    "tall": write_tall,
}
