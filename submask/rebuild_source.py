"""A delta behind one face for a rebuild, whether it is in memory (``Delta``) or in a .smask file: its masks,
value blocks (or differences against the base) and checkpoint layout."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoints.sources import CHUNK_ELEMENTS
from .delta import Delta
from .format import MaskFile
from .format.values import is_diff
from .io import open as open_mask_file
from .mask import TensorMask
from .metadata import CheckpointFile

POSITIONS_MAX = CHUNK_ELEMENTS  # a tensor with at most this many set bits (32 MiB of positions) is scattered by them
POSITIONS_MAX_DENSITY = 1 / 2  # ... when at most this dense: denser, packed bits win (measured crossover ~0.6)
DeltaLike = Delta | MaskFile | str | os.PathLike[str]
"""A delta in memory, an open .smask file with values, or the path or hf:// URL of one."""


@dataclass
class DeltaValues:
    """A delta's masks, values and layout behind one face, whether in memory or in a file."""

    source: Delta | MaskFile
    label: str

    @property
    def mask(self) -> Any:
        return self.source.mask if isinstance(self.source, Delta) else self.source

    @property
    def checkpoint(self) -> list[CheckpointFile] | None:
        return self.source.checkpoint if isinstance(self.source, Delta) else self.source.metadata.checkpoint

    @property
    def metadata(self) -> Any:
        return self.source.mask.metadata if isinstance(self.source, Delta) else self.source.metadata

    def dtype(self, name: str) -> str | None:
        """The values' dtype name of tensor ``name``, None if it has no values."""
        if isinstance(self.source, Delta):
            held = self.source.values.get(name)
            return None if held is None else held.dtype
        entry = self.source.entries.get(name)
        return None if entry is None or entry.values is None else entry.values.dtype

    def bits(self, name: str) -> TensorMask | np.ndarray:
        """Tensor ``name``'s mask, verified: its set positions (int64, ascending) where the file lists them and
        they are few (scattering by them is far cheaper than by the bits), else its packed bits."""
        source = self.source
        if isinstance(source, MaskFile):
            entry = source.entries[name]
            if entry.ones <= min(POSITIONS_MAX, entry.bits * POSITIONS_MAX_DENSITY):
                positions = source.positions(name)
                if positions is not None:
                    return positions
        return self.mask[name]

    def coded_against_base(self, name: str) -> bool:
        """Whether tensor ``name``'s values are coded against the base (which must then hold it)."""
        if isinstance(self.source, Delta):
            return False
        entry = self.source.entries[name].values
        return entry is not None and is_diff(entry)

    def differences(self, name: str) -> tuple[int, Iterator[np.ndarray]] | None:
        """Tensor ``name``'s values when coded against the base: (block_elements, the blocks of stored
        differences, CRC-32 checked at the end); None when they are stored as they are."""
        if isinstance(self.source, Delta):
            return None
        return self.source.difference_blocks(name)

    def blocks(self, name: str) -> Iterator[np.ndarray]:
        """Tensor ``name``'s value bytes, a block at a time (checked against their CRC-32 at the end)."""
        if isinstance(self.source, Delta):
            return iter([self.source.values[name].data])
        return self.source.value_blocks(name)


@contextlib.contextmanager
def opened(delta: DeltaLike) -> Iterator[DeltaValues]:
    if isinstance(delta, (Delta, MaskFile)):
        yield DeltaValues(delta, str(getattr(delta, "path", "the delta")))
        return
    with open_mask_file(delta) as mask_file:
        yield DeltaValues(mask_file, os.fspath(delta))
