"""What the functions that make a mask or a model return: the mask in memory or the file written, with what it
holds; the model dir written.

``build_mask`` and ``combine_files`` return a ``BuiltMask``, so a caller (the CLI included) never reopens a
file it just wrote to learn its counts or stats; a ``BuiltMask`` is accepted wherever a mask is
(``restrict(model, build_mask(a, b))``). ``apply_mask`` returns an ``AppliedModel``.
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
    written (a sharded mask's index), and in both cases its ``metadata``, ``count`` (set entries) and ``numel``
    (all entries). Every function that takes a mask takes it; a written one is also ``os.PathLike``.

    >>> built = submask.build_mask("base/", "rl/", "rl.smask")          # doctest: +SKIP
    >>> built.path, built.density, built.stats["ladder"]["atol"]        # doctest: +SKIP
    >>> submask.restrict(model, built)                                  # doctest: +SKIP
    """

    metadata: MaskMetadata
    tensors: int
    count: int
    numel: int
    path: Path | None = None
    mask: Mask | None = None
    delta: Delta | None = None

    @property
    def stats(self) -> dict[str, Any]:
        """The statistics recorded in the metadata (a build's: changed, numel, ladder, backend, ...)."""
        return self.metadata.stats

    @property
    def density(self) -> float:
        """count / numel; 0.0 over no elements."""
        return self.count / self.numel if self.numel else 0.0

    @property
    def source(self) -> Mask | Path:
        """What to read: the mask in memory, else the file written."""
        if self.mask is not None:
            return self.mask
        assert self.path is not None  # one of the two is always set
        return self.path

    def __fspath__(self) -> str:
        if self.path is None:
            raise UsageError("this mask was kept in memory (out=None), not written: pass the BuiltMask itself "
                             "where a mask is taken, or write it with submask.save(built.mask, path)")
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
    """What ``apply_mask`` wrote: the model dir, its ``numel`` values, and the ``count`` of them taken from the
    finetuned model (or the delta)."""

    path: Path
    tensors: int
    numel: int
    count: int

    @property
    def density(self) -> float:
        """count / numel: the share of values taken from the finetuned model; 0.0 over no values."""
        return self.count / self.numel if self.numel else 0.0
