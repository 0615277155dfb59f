"""The .smask file format: header, container, reader and writer (specified in FORMAT.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..mask import Mask
from .header import MaskMetadata, TensorEntry, model_fingerprint
from .reader import MaskFile, resolve_mask_path
from .writer import MaskWriter


def open(path: str | os.PathLike[str], *, max_bits: int | None = None) -> MaskFile:  # noqa: A001 - as safe_open
    """Open a mask lazily: metadata and entries now, each tensor decoded when indexed.

    ``max_bits`` guards untrusted files: a mask of more bits in all raises LimitError before any decoding.
    """
    return MaskFile(resolve_mask_path(path), max_bits=max_bits)


def load(path: str | os.PathLike[str], *, max_bits: int | None = None) -> Mask:
    """Read a whole mask into memory, verifying every tensor's checksum (``max_bits``: as in ``open``)."""
    with open(path, max_bits=max_bits) as mask_file:
        return mask_file.load()


def save(mask: Mask, path: str | os.PathLike[str], *, encoding: str | Mapping[str, str] = "auto",
         max_shard_bytes: int | None = None) -> None:
    """Write ``mask`` atomically; ``encoding`` is "auto", an encoding id, or a per-tensor mapping of ids."""
    with MaskWriter(path, mask.metadata, max_shard_bytes=max_shard_bytes) as writer:
        for name, tensor in mask.items():
            chosen = encoding if isinstance(encoding, str) else encoding.get(name, "auto")
            writer.add(name, tensor, chosen)


__all__ = ["MaskFile", "MaskMetadata", "MaskWriter", "TensorEntry", "load", "model_fingerprint", "open", "save"]
