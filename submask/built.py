"""What the functions that make a mask or a model return: the mask in memory or the file written, with what it
holds; the model dir written.

``build_mask`` and ``combine_files`` return a ``BuiltMask``, so a caller (the CLI included) never reopens a
file it just wrote to learn its counts or stats; ``apply_mask`` returns an ``AppliedModel``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .mask import Mask
from .metadata import MaskMetadata

if TYPE_CHECKING:
    from .delta import Delta


@dataclass(frozen=True)
class BuiltMask:
    """A mask just made: ``mask`` when kept in memory (``delta`` too, for a build with values), ``path`` when
    written (a sharded mask's index), and in both cases its ``metadata`` and counts. A written one is
    ``os.PathLike``: ``submask.load(built)`` reads it.

    >>> built = submask.build_mask("base/", "rl/", "rl.smask")          # doctest: +SKIP
    >>> built.path, built.density, built.stats["ladder"]["atol"]        # doctest: +SKIP
    """

    metadata: MaskMetadata
    tensors: int
    ones: int
    numel: int
    path: Path | None = None
    mask: Mask | None = None
    delta: "Delta | None" = None

    @property
    def stats(self) -> dict[str, Any]:
        """The statistics recorded in the metadata (a build's: changed, numel, ladder, backend, ...)."""
        return self.metadata.stats

    @property
    def density(self) -> float:
        """Fraction of elements set; 0.0 over no elements."""
        return self.ones / self.numel if self.numel else 0.0

    def __fspath__(self) -> str:
        if self.path is None:
            raise UsageError("this mask was kept in memory (out=None), not written: use .mask")
        return os.fspath(self.path)


@dataclass(frozen=True)
class ChangeCounts:
    """What ``count_changes`` counted, per tensor: elements (``numel``), changed elements under the criterion
    (``changed``) and, with the ladder, changed elements at each tolerance of ``LADDER_ATOL`` (``ladder``);
    ``backend`` is where they were compared."""

    numel: dict[str, int]
    changed: dict[str, int]
    ladder: dict[str, list[int]] | None
    backend: str


@dataclass(frozen=True)
class AppliedModel:
    """What ``apply_mask`` wrote: the model dir, and how many values came from the finetuned model (or delta)."""

    path: Path
    tensors: int
    numel: int
    from_finetuned: int
