"""The .smask file format: header, container, reader and writer (specified in FORMAT.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..mask import Mask
from .header import MaskMetadata, TensorEntry, model_fingerprint
from .reader import MaskFile, resolve_mask_path
from .writer import MaskWriter


def open(path: str | os.PathLike[str]) -> MaskFile:  # noqa: A001 - mirrors safetensors.safe_open / builtins.open
    """Open a mask lazily: metadata and entries now, each tensor decoded when indexed."""
    return MaskFile(resolve_mask_path(path))


def load(path: str | os.PathLike[str]) -> Mask:
    """Read a whole mask into memory, verifying every tensor's checksum."""
    with open(path) as mask_file:
        return mask_file.load()


def save(mask: Mask, path: str | os.PathLike[str], *, encoding: str | Mapping[str, str] = "auto",
         max_shard_bytes: int | None = None, overwrite: bool = False) -> None:
    """Write ``mask`` atomically; ``encoding`` is "auto", an encoding id, or a per-tensor mapping of ids.

    An existing file at ``path`` is replaced only with ``overwrite=True`` (OutputError otherwise).
    """
    with MaskWriter(path, mask.metadata, max_shard_bytes=max_shard_bytes, overwrite=overwrite) as writer:
        for name, tensor in mask.items():
            chosen = encoding if isinstance(encoding, str) else encoding.get(name, "auto")
            writer.add(name, tensor, chosen)


__all__ = ["MaskFile", "MaskMetadata", "MaskWriter", "TensorEntry", "load", "model_fingerprint", "open", "save"]
