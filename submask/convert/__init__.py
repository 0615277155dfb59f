"""Masks from and for other tools (``submask convert``): the format detected from the file, or named.

Formats: ``smask`` (this project's), ``safetensors`` (bool or 0/1 tensors), ``torch`` (a ``torch.save`` dict of
0/1 tensors, loaded with ``weights_only=True``), ``npz`` (0/1 arrays), ``tall`` (TALL-masks: one packed bit
vector over the sorted parameter names; shapes from ``like``), ``shira`` (a PEFT SHiRA adapter, read only).

>>> submask.convert.convert("masks.pt", "masks.smask")                               # doctest: +SKIP
Converted(source='torch', target='smask', tensors=74, count=..., numel=..., dropped=[])
>>> submask.convert.convert("tall.npy", "tall.smask", like="org/model")               # doctest: +SKIP
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, UsageError
from ..mask import Mask
from ..names import Names
from ..sniff import foreign_kind, head
from .readers import ADAPTER_CONFIG, READERS, SHIRA_SUFFIX, Shapes
from .writers import WRITERS

SUFFIXES = {".smask": "smask", ".json": "smask", ".safetensors": "safetensors", ".pt": "torch", ".pth": "torch",
            ".bin": "torch", ".npz": "npz", ".npy": "tall"}
FORMATS = ("smask", *READERS)


@dataclass
class Converted:
    """What ``convert`` did: the formats, the counts of the mask, and what the target could not hold."""

    source: str
    target: str
    tensors: int
    count: int
    numel: int
    dropped: list[str] = field(default_factory=list)


def detect(path: str | os.PathLike[str]) -> str:
    """The format of a mask file (or SHiRA adapter directory), from its content; FormatError if none fits."""
    path = Path(path)
    if path.is_dir():
        if (path / ADAPTER_CONFIG).exists():
            return "shira"
        raise FormatError(f"{path}: a directory without {ADAPTER_CONFIG}; name a mask file")
    if path.name.endswith(".index.json"):
        return "smask"
    start = head(path)
    if start.startswith(b"\x93NUMPY"):
        return "tall"
    if start.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if start.startswith(b"\x80"):
        return "torch"
    kind = foreign_kind(start)
    if kind is not None:
        raise FormatError(f"{path}: {kind}; submask converts {', '.join(FORMATS)} (pass --from to name one)")
    return _safetensors_kind(path)


def _zip_kind(path: Path) -> str:
    """npz (numpy arrays) or torch (a torch.save archive); an npz of 1-D uint8 vectors not all 0/1 is TALL's."""
    with zipfile.ZipFile(path) as archive:
        if not all(name.endswith(".npy") for name in archive.namelist()):
            return "torch"
    with np.load(path, allow_pickle=False) as arrays:
        packed = all(arrays[k].dtype == np.uint8 and arrays[k].ndim == 1 for k in arrays.files)
        return "tall" if packed and any(int(arrays[k].max(initial=0)) > 1 for k in arrays.files) else "npz"


def _safetensors_kind(path: Path) -> str:
    from ..safetensors_header import header_length, parse_header

    size = path.stat().st_size
    def fail(problem: str) -> FormatError:
        return FormatError(f"{path}: the file {problem}; it is not a mask file submask can convert "
                           f"({', '.join(FORMATS)})")

    with open(path, "rb") as handle:
        length = header_length(handle.read(8), size, fail)
        metadata, tensors = parse_header(handle.read(length), fail)
    if "submask" in metadata:
        return "smask"
    return "shira" if any(name.endswith(SHIRA_SUFFIX) for name in tensors) else "safetensors"


def read(path: str | os.PathLike[str], source: str | None = None, *, like: Any = None, key: str | None = None,
         names: Names | None = None) -> tuple[str, Mask]:
    """(format, mask) of a mask file in any format ``FORMATS`` lists; ``source`` names the format, else it is
    detected. ``like`` (a model or mask: path, Hub id, state dict, module) gives the shapes TALL vectors and
    SHiRA adapters lack; ``key`` picks one vector of several; ``names`` maps the file's names to the mask's."""
    path = Path(path)
    fmt = source or detect(path)
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if fmt == "smask":
        from ..io import load

        mask = load(path)
        return fmt, mask if names is None else mask.rename(names)
    return fmt, READERS[fmt](path, None if like is None else shapes_of(like), key, names)


def shapes_of(like: Any) -> Shapes:
    """Tensor name -> shape of a mask (.smask) or a model (anything ``open_source`` reads)."""
    if isinstance(like, Mask):
        return like.shapes
    if isinstance(like, (str, os.PathLike)) and Path(like).is_file() and detect_safely(like) == "smask":
        from ..io import open as open_mask

        with open_mask(like) as mask_file:
            return mask_file.shapes
    from ..checkpoints.sources import open_source

    with open_source(like) as source:
        return {name: info.shape for name, info in source.tensors.items()}


def detect_safely(path: str | os.PathLike[str]) -> str | None:
    try:
        return detect(path)
    except FormatError:
        return None


def convert(source_path: str | os.PathLike[str], target_path: str | os.PathLike[str], *, source: str | None = None,
            target: str | None = None, like: Any = None, key: str | None = None, names: Names | None = None,
            dtype: str = "bool", overwrite: bool = False) -> Converted:
    """Read a mask in one format and write it in another (``target`` from the output's suffix if not given).

    The bits are the same in every format; ``Converted.dropped`` says what the target could not hold. An
    existing output is refused (OutputError, before any work) unless ``overwrite``.
    """
    from ..atomic import check_target

    out = check_target(target_path, overwrite, inputs=[source_path])
    chosen = target or SUFFIXES.get(out.suffix.lower())
    if chosen not in WRITERS:
        raise UsageError(f"{out}: cannot tell the output format from the suffix; pass --to ({', '.join(WRITERS)})")
    fmt, mask = read(source_path, source, like=like, key=key, names=names)
    dropped = WRITERS[chosen](mask, out, dtype)
    return Converted(fmt, chosen, len(mask), mask.count, mask.numel, dropped)


__all__ = ["FORMATS", "Converted", "convert", "detect", "read", "shapes_of"]
