"""Masks written by other tools, read into a ``Mask``: one reader per format, each tensor read and packed in turn.

Values must be exactly 0 or 1 (bool, integer or float tensors); anything else is refused, never rounded.
Pickles are loaded with ``weights_only=True`` only (``checkpoints.pickled.load_pickle``).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..align import mismatch
from ..errors import FormatError, MismatchError, UsageError
from ..mask import Mask, TensorMask
from ..metadata import MaskMetadata
from ..names import Names, hint, mapped
from ..packed import pack
from ..sniff import head

Shapes = Mapping[str, tuple[int, ...]]
#: safetensors metadata key under which an exported mask keeps its submask metadata (JSON text)
METADATA_KEY = "submask.metadata"
SHIRA_SUFFIX = ".shira_indices"
PEFT_PREFIX = "base_model.model."
ADAPTER_FILE, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"


def bits_of(value: Any, name: str, path: object) -> TensorMask:
    """A 0/1 tensor or array (bool, integer or float; torch or numpy) as a TensorMask; FormatError otherwise."""
    if type(value).__module__.startswith("torch"):
        import torch

        if value.dtype != torch.bool:
            bad = value[(value != 0) & (value != 1)]
            if bad.numel():
                raise _not_binary(name, path, bad.reshape(-1)[0].item(), int(bad.numel()))
        return TensorMask.from_torch(value)
    array = np.asarray(value)
    if array.dtype != np.bool_:
        if array.dtype.kind not in "biuf":
            raise FormatError(f"{path}, tensor {name!r}: dtype {array.dtype} is not a mask (bool, integer or float "
                              "0/1)")
        bad = array[(array != 0) & (array != 1)]
        if bad.size:
            raise _not_binary(name, path, bad.reshape(-1)[0].item(), int(bad.size))
    return TensorMask(array.shape, pack(array != 0))


def _not_binary(name: str, path: object, example: object, count: int) -> FormatError:
    return FormatError(f"{path}, tensor {name!r}: {count} value(s) other than 0 and 1 (e.g. {example!r}); a mask "
                       "holds 0/1 only, and submask does not round: threshold it yourself (scores > t) and save again")


def _mask(items: Iterator[tuple[str, Any]], path: object, names: Names | None,
          metadata: MaskMetadata | None = None) -> Mask:
    tensors = {name: bits_of(value, name, path) for name, value in items}
    mask = Mask(tensors, metadata or MaskMetadata(kind="mask", provenance={"converted_from": str(path)}))
    return mask if names is None else mask.rename(names)


def read_torch(path: Path, names: Names | None = None) -> Mask:
    """A ``torch.save`` dict of 0/1 tensors (loaded with ``weights_only=True``, memory-mapped)."""
    from ..checkpoints.pickled import load_pickle

    return _mask(iter(load_pickle(path).items()), path, names)


def read_npz(path: Path, names: Names | None = None) -> Mask:
    """An ``np.savez`` archive of 0/1 (bool) arrays; each array is read when its turn comes."""
    with np.load(path, allow_pickle=False) as archive:
        return _mask(((key, archive[key]) for key in archive.files), path, names)


def read_safetensors(path: Path, names: Names | None = None) -> Mask:
    """A safetensors file of bool or 0/1 tensors; metadata an earlier export kept is restored."""
    from safetensors import safe_open

    from .. import strict_json

    with safe_open(path, framework="pt") as handle:
        kept = (handle.metadata() or {}).get(METADATA_KEY)
        metadata = MaskMetadata.from_json(strict_json.loads(kept), path) if kept else None
        return _mask(((key, handle.get_tensor(key)) for key in handle.keys()), path, names, metadata)


def read_tall(path: Path, like: Shapes | None, key: str | None = None, names: Names | None = None) -> Mask:
    """TALL-masks' layout: one flat ``np.packbits`` vector (uint8) over the parameters of ``like`` in sorted name
    order, in a ``.npy`` file, or one of several in an ``.npz`` or torch.save dict (``key`` picks it)."""
    if like is None:
        raise UsageError(f"{path}: a TALL-masks vector holds bits, not names or shapes; pass the model (or a mask of "
                         "it) it was made for: --like MODEL_OR_MASK (like= in Python)")
    packed = _tall_vector(path, key)
    order = sorted(like)
    total = sum(math.prod(like[name]) for name in order)
    if packed.size != (total + 7) // 8:
        raise MismatchError(f"{path}: {packed.size:,} bytes hold up to {8 * packed.size:,} bits, but the "
                            f"{len(order)} tensors of --like have {total:,} elements (needing {(total + 7) // 8:,} "
                            "bytes); is it a mask of another model, or of only some of its tensors?")
    if total % 8 and packed[-1] & ((1 << (8 - total % 8)) - 1):
        raise FormatError(f"{path}: bits are set past the last of {total:,} elements; this is not a TALL-masks "
                          "vector for the model given by --like")
    tensors, offset = {}, 0
    for name in order:
        numel = math.prod(like[name])
        first, shift = divmod(offset, 8)
        bits = np.unpackbits(packed[first:(offset + numel + 7) // 8 + 1])[shift:shift + numel]
        tensors[name] = TensorMask(tuple(like[name]), pack(bits))
        offset += numel
    mask = Mask(tensors, MaskMetadata(kind="mask", provenance={"converted_from": str(path), "format": "tall"}))
    return mask if names is None else mask.rename(names)


def _tall_vector(path: Path, key: str | None) -> np.ndarray:
    if head(path).startswith(b"\x93NUMPY"):
        vector = np.load(path, allow_pickle=False)
        if key is not None:
            raise UsageError(f"{path}: a .npy file holds one vector; drop --key")
    else:
        vectors = _vectors(path)
        if key is None and len(vectors) != 1:
            raise UsageError(f"{path}: holds {len(vectors)} vectors ({sorted(vectors)[:8]}); pick one with --key")
        if key is not None and key not in vectors:
            raise UsageError(f"{path}: no vector {key!r}; it holds {sorted(vectors)[:8]}")
        vector = vectors[key if key is not None else next(iter(vectors))]
    vector = np.asarray(vector)
    if vector.dtype != np.uint8 or vector.ndim != 1:
        raise FormatError(f"{path}: a TALL-masks vector is 1-D uint8 (np.packbits), got {vector.dtype} of shape "
                          f"{vector.shape}")
    return vector


def _vectors(path: Path) -> dict[str, Any]:
    """The arrays of an .npz, or the tensors of a torch.save dict, as numpy arrays."""
    if _is_npz(path):
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    from ..checkpoints.pickled import load_pickle

    return {k: v.numpy() for k, v in load_pickle(path).items()}


def _is_npz(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return all(name.endswith(".npy") for name in archive.namelist())


def read_shira(path: Path, like: Shapes | None, names: Names | None = None) -> Mask:
    """A PEFT SHiRA adapter (a directory with ``adapter_config.json``, or its ``adapter_model.safetensors``):
    each layer's ``shira_indices`` (rows and columns of the trained entries) become the mask of its weight.

    Mask names are the base model's (PEFT's ``base_model.model.`` prefix removed, ``.weight`` added), then
    ``names`` applies; shapes come from ``like`` (the adapter does not record them).
    """
    from safetensors import safe_open

    file = path / ADAPTER_FILE if path.is_dir() else path
    if like is None:
        raise UsageError(f"{path}: a SHiRA adapter holds indices, not the shapes of the layers; pass the base model "
                         "(or a mask of it): --like MODEL_OR_MASK (like= in Python)")
    with safe_open(file, framework="np") as handle:
        keys = [k for k in handle.keys() if k.endswith(SHIRA_SUFFIX)]
        if not keys:
            raise FormatError(f"{file}: no '*{SHIRA_SUFFIX}' tensors; this is not a PEFT SHiRA adapter")
        layer_names = {k: k[:-len(SHIRA_SUFFIX)].removeprefix(PEFT_PREFIX) + ".weight" for k in keys}
        targets = mapped(layer_names.values(), names, str(file))
        missing = [targets[n] for n in layer_names.values() if targets[n] not in like]
        if missing:
            raise mismatch(str(file), "the model given by --like", "Pass the base model the adapter was trained "
                           "on, or map the names." + hint(like, list(targets.values()), "the adapter"),
                           only_left=missing)
        tensors = {}
        for k in keys:
            name = targets[layer_names[k]]
            tensors[name] = _from_rows_cols(handle.get_tensor(k), tuple(like[name]), file, k)
    return Mask(tensors, MaskMetadata(kind="mask", provenance={"converted_from": str(path), "format": "shira"}))


def _from_rows_cols(indices: np.ndarray, shape: tuple[int, ...], path: object, key: str) -> TensorMask:
    if len(shape) != 2 or indices.ndim != 2 or indices.shape[0] != 2:
        raise FormatError(f"{path}, tensor {key!r}: SHiRA indices must be 2 x n (rows, columns) for a 2-D weight; "
                          f"got {indices.shape} for a weight of shape {shape}")
    rows, cols = indices.astype(np.int64)
    if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0] or cols.max() >= shape[1]):
        raise MismatchError(f"{path}, tensor {key!r}: indices fall outside the weight's shape {shape}; is --like "
                            "the base model of this adapter?")
    return TensorMask.from_indices(rows * shape[1] + cols, shape)


#: Format name -> reader(path, like, key, names)
READERS: dict[str, Callable[[Path, Shapes | None, str | None, Names | None], Mask]] = {
    "torch": lambda p, like, key, names: read_torch(p, names),
    "npz": lambda p, like, key, names: read_npz(p, names),
    "safetensors": lambda p, like, key, names: read_safetensors(p, names),
    "tall": read_tall,
    "shira": lambda p, like, key, names: read_shira(p, like, names),
}
