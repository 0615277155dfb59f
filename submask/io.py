"""The one front door for masks: every kind of mask input becomes something to read here.

``open_mask`` (and ``open`` / ``load`` on top of it) accept, as zarr's ``make_store`` accepts store-likes:

- a ``Mask`` (in memory; used as it is);
- a ``BuiltMask`` (what ``build_mask`` and ``combine_files`` return): its mask in memory, else its file;
- an open ``MaskFile`` (used as it is; the caller closes it);
- the path of a ``.smask`` file, of a sharded mask's index ``NAME.smask.index.json``, or the path a sharded
  mask was saved under (``NAME.smask``, when only ``NAME.smask.index.json`` exists);
- an ``hf://[datasets/|spaces/]ORG/NAME[@REVISION]/path.smask`` URL: downloaded through huggingface_hub's
  cache at the commit the revision names now, and verified (Hub options such as ``endpoint`` and ``token``
  pass through to ``submask.hub.pull_mask``).

>>> with submask.open("rl.smask") as f:                          # doctest: +SKIP
...     f.entries["model.layers.0.mlp.up_proj.weight"].ones
>>> mask = submask.load("hf://org/model@v1.0/masks/rl.smask")     # doctest: +SKIP
>>> mask.metadata.extra["source"]["commit"]                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from .built import BuiltMask
from .delta import Delta
from .errors import MismatchError, UsageError
from .format import MaskFile, local_mask_path
from .format.values import TensorValues, is_diff
from .hub.paths import is_hub_url
from .limits import check_allocation
from .mask import Mask
from .names import Names

MaskLike = Mask | MaskFile | BuiltMask | str | os.PathLike[str]
"""A mask in memory, an open .smask file, a built one, or the path or hf:// URL of one (read lazily)."""
Shapes = Mapping[str, tuple[int, ...]]


@contextlib.contextmanager
def open_mask(mask: MaskLike, *, max_bits: int | None = None, names: Names | None = None,
              **hub_options: Any) -> Iterator[Mask | MaskFile]:
    """Yield ``mask`` as a name -> TensorMask mapping with ``shapes``, ``counts`` and ``metadata``; a path or
    URL is opened lazily and closed when the block ends. ``names`` (``submask.names.NameMap``) renames its
    tensors."""
    if isinstance(mask, BuiltMask):
        mask = mask.source
    if isinstance(mask, (Mask, MaskFile)):
        yield _renamed(mask, names)
        return
    with open(mask, max_bits=max_bits, **hub_options) as mask_file:
        yield _renamed(mask_file, names)


def _renamed(mask: Mask | MaskFile, names: Names | None) -> Mask | MaskFile:
    if names is None:
        return mask
    return mask.rename(names) if isinstance(mask, Mask) else mask.renamed(names)


def open(path: str | os.PathLike[str], *, max_bits: int | None = None,  # noqa: A001 - as safetensors.safe_open
         **hub_options: Any) -> MaskFile:
    """Open a mask file lazily: metadata and entries now, each tensor decoded when indexed.

    ``max_bits`` guards untrusted files: a mask of more bits in all raises LimitError before any decoding.
    """
    local = _local(path, hub_options)[0]
    with _shown_as(path, local):
        return MaskFile(local, max_bits=max_bits)


def load(path: str | os.PathLike[str], *, max_bits: int | None = None, expect_model: Shapes | None = None,
         **hub_options: Any) -> Mask:
    """Read a whole mask into memory, verifying every tensor's checksum.

    From an hf:// URL, ``mask.metadata.extra["source"]`` records the repo, path and commit it came from.
    ``expect_model`` (parameter name -> shape) checks that the mask fits that model (MismatchError otherwise).
    """
    local, source = _local(path, hub_options)
    with _shown_as(path, local), MaskFile(local, max_bits=max_bits) as mask_file:
        mask = mask_file.load()
    if source is not None:
        mask.metadata.extra["source"] = source
    if expect_model is not None:
        mask.check_model(expect_model, what=f"the model given for {os.fspath(path)}")
    return mask


def load_delta(path: str | os.PathLike[str], *, max_bits: int | None = None, base: Mapping[str, Any] | None = None,
               **hub_options: Any) -> Delta:
    """Read a delta (a mask with values, FORMAT.md §12) into memory, verifying every checksum; options as ``load``.

    A mask without values loads as a Delta with no values. Values coded against the base (format 1.3,
    FORMAT.md §12.4) need ``base``, the base state dict (numpy arrays or torch tensors by name).
    """
    local, source = _local(path, hub_options)
    with _shown_as(path, local), MaskFile(local, max_bits=max_bits) as mask_file:
        mask = mask_file.load()
        check_allocation(sum(entry.values.size for entry in mask_file.entries.values() if entry.values is not None),
                         f"{local}: the delta's values")
        # a tensor with a values entry decodes to values (None is only for a tensor without)
        values = {name: cast(TensorValues, mask_file.values(name, _base_values(base, name, mask[name], entry.values)))
                  for name, entry in mask_file.entries.items() if entry.values is not None}
        checkpoint = mask_file.metadata.checkpoint
    if source is not None:
        mask.metadata.extra["source"] = source
    return Delta(mask, values, checkpoint)


def _base_values(base: Mapping[str, Any] | None, name: str, bits: Any, entry: Any) -> np.ndarray | None:
    """The base's value bytes at a tensor's set positions, when its values are coded against the base."""
    if base is None or not is_diff(entry):
        return None
    value = base.get(name)
    if value is None or math.prod(getattr(value, "shape", ())) != bits.numel:
        raise MismatchError(f"the base lacks tensor {name!r} of shape {list(bits.shape)}, which the delta codes "
                            "against it; pass the base the delta was built against")
    if not isinstance(value, np.ndarray):  # a torch tensor: its bytes, whatever its dtype (bf16 too)
        import torch

        value = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8).reshape(bits.numel, -1)
    return np.ascontiguousarray(raw[bits.to_numpy().reshape(-1)]).reshape(-1)


def save(mask: Mask | Delta, path: str | os.PathLike[str], *, encoding: str | Mapping[str, str] = "auto",
         max_shard_bytes: int | None = None, overwrite: bool = False) -> None:
    """Write ``mask`` (or a ``Delta``: its mask, values and checkpoint layout) atomically; ``encoding`` is "auto",
    an encoding id, or a per-tensor mapping of ids.

    An existing file at ``path`` is replaced only with ``overwrite=True`` (OutputError otherwise).
    """
    from .format.writer import MaskWriter  # here: opening a mask needs no writer (nor its atomic-write helpers)

    delta = mask if isinstance(mask, Delta) else Delta(mask, checkpoint=mask.metadata.checkpoint)
    metadata = replace(delta.mask.metadata, checkpoint=delta.checkpoint)
    with MaskWriter(path, metadata, max_shard_bytes=max_shard_bytes, overwrite=overwrite) as writer:
        for name, tensor in delta.mask.items():
            chosen = encoding if isinstance(encoding, str) else encoding.get(name, "auto")
            writer.add(name, tensor, chosen, values=delta.values.get(name))


def _shown_as(path: str | os.PathLike[str], local: os.PathLike[str]) -> contextlib.AbstractContextManager[None]:
    """Errors about a mask pulled from an hf:// URL name that URL, not the cache file."""
    if not is_hub_url(os.fspath(path)):
        return contextlib.nullcontext()
    from .hub.pull import shown_as

    return shown_as(os.fspath(path), Path(local))


def _local(path: str | os.PathLike[str], hub_options: dict[str, Any]) -> tuple[os.PathLike[str], dict[str, Any] | None]:
    """The local file to open for ``path`` and, for an hf:// URL, where it came from."""
    text = os.fspath(path)
    if is_hub_url(text):
        from .hub.pull import pull_url

        pulled = pull_url(text, verify=False, **hub_options)  # the reader checks every tensor it decodes
        return pulled.local_path, pulled.source
    if hub_options:
        raise UsageError(f"{text}: {sorted(hub_options)} apply to hf:// URLs only; this is a local path")
    return local_mask_path(text), None


__all__ = ["MaskLike", "load", "load_delta", "open", "open_mask", "save"]
