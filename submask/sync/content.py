"""What a patch holds, below the ``Patch`` class that the byte layer and the receiver must not import: its
tensors, the hash of its content, and the fields the byte layer reads and writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from ..errors import FormatError, where
from .state import chained, content_digest

if TYPE_CHECKING:
    from .values import Differences


@dataclass(frozen=True)
class PatchTensor:
    """One tensor of a patch: its ``shape`` and safetensors ``dtype``, the flat ``positions`` that changed (int64,
    ascending; None for every entry, in a snapshot) and their new ``values`` (raw little-endian bytes, uint8).

    ``previous`` holds the parent state's value bytes there, where the values coding uses them (``sync.values``);
    ``pending``, in a patch just read, holds the values coded against the receiver's previous ones (then
    ``values`` is empty: ``apply_to`` decodes them from the receiver's weights)."""

    shape: tuple[int, ...]
    dtype: str
    positions: np.ndarray | None
    values: np.ndarray
    previous: np.ndarray | None = field(default=None, repr=False, compare=False)
    pending: Differences | None = field(default=None, repr=False, compare=False)

    @property
    def count(self) -> int:
        """How many entries the tensor writes."""
        return math.prod(self.shape) if self.positions is None else self.positions.size


def digest_of(tensors: dict[str, PatchTensor]) -> str:
    """The hash of a patch's tensors (``state.content_digest``)."""
    return content_digest((name, t.dtype, t.shape, t.positions, t.values) for name, t in tensors.items())


class PatchFields(NamedTuple):
    """A patch's fields, as ``Patch`` takes them (what reading its bytes gives)."""

    parent: str | None
    fingerprint: str
    step: int
    tensors: dict[str, PatchTensor]
    state: str | None
    model: str | None


class PatchLike(Protocol):
    """What the byte layer and the receiver read of a patch."""

    @property
    def parent(self) -> str | None: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def step(self) -> int: ...
    @property
    def tensors(self) -> dict[str, PatchTensor]: ...
    @property
    def state(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...


def check_chain(parent: str | None, fingerprint: str, tensors: dict[str, PatchTensor], source: object = None) -> None:
    """FormatError unless a patch's parent and content hash to its fingerprint (nothing to check in a snapshot)."""
    if parent is not None and chained(parent, digest_of(tensors)) != fingerprint:
        raise FormatError(f"{where(source)}the patch's content does not hash to its fingerprint; the patch is "
                          "corrupt or was edited")
