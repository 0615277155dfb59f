"""One step of a weight sync in memory: the entries that changed, their new values, and the fingerprints of the
state it applies to and the state it produces.

>>> patch = sync.diff()                          # sender, after optimizer.step()      # doctest: +SKIP
>>> data = patch.to_bytes()                      # a .smask delta (FORMAT.md §13)      # doctest: +SKIP
>>> submask.Patch.from_bytes(data).apply_to(model)   # receiver, in place            # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MismatchError, UsageError
from .content import PatchTensor, digest_of
from .receiver import apply_patch
from .state import itemsize
from .wire import patch_from_bytes, patch_to_bytes


@dataclass(frozen=True)
class Patch:
    """The changes of one sync step (``WeightSync.diff``), or a whole state (``WeightSync.snapshot``).

    ``parent`` is the fingerprint of the state the patch applies to (None for a snapshot: any state of the
    model's layout), ``fingerprint`` that of the state it produces, ``step`` the sender's step count there, and
    ``state`` (on a snapshot and every ``check_every`` steps) the full fingerprint of that state, which a
    receiver checks after applying. ``tensors`` holds only the tensors with changes.
    """

    parent: str | None
    fingerprint: str
    step: int
    tensors: dict[str, PatchTensor] = field(default_factory=dict)
    state: str | None = None
    model: str | None = None  # the model fingerprint (names and shapes, FORMAT.md §4.1) of the whole layout

    def __post_init__(self) -> None:
        for name, tensor in self.tensors.items():
            if tensor.pending is None and tensor.values.size != tensor.count * itemsize(tensor.dtype):
                raise MismatchError(f"patch step {self.step}: tensor {name!r} has {tensor.values.size} value bytes "
                                    f"of {tensor.dtype} for {tensor.count} entries")
            if tensor.positions is not None and not _ascending_within(tensor.positions, math.prod(tensor.shape)):
                raise UsageError(f"patch step {self.step}: tensor {name!r}'s positions must be int64 flat indices "
                                 f"in ascending order below its {math.prod(tensor.shape)} entries (apply_to writes "
                                 "at them in place); build them with e.g. np.flatnonzero")

    @property
    def count(self) -> int:
        """Entries the patch writes."""
        return sum(tensor.count for tensor in self.tensors.values())

    @property
    def is_snapshot(self) -> bool:
        return self.parent is None

    def content_digest(self) -> str:
        """The hash of the patch's content that its fingerprint chains onto its parent's."""
        return digest_of(self.tensors)

    def to_bytes(self) -> bytes:
        """The patch as a .smask delta in memory (FORMAT.md §12, §13)."""
        return patch_to_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, source: object = None) -> Patch:
        """Read a patch from ``to_bytes``'s output, checking every checksum and that its content hashes to its
        fingerprint; FormatError (naming ``source``, e.g. the file it came from) when it does not."""
        return cls(*patch_from_bytes(data, source))

    def apply_to(self, target: Any) -> None:
        """Write the patch's values in place into ``target`` (a module or state dict: pass the same object at every
        step), after checking that ``target`` holds the patch's parent state; MismatchError, with nothing
        written, for a patch of another state (out of order, applied twice, or after a receiver restart
        without ``WeightSync.resume``)."""
        apply_patch(self, target)


def _ascending_within(positions: np.ndarray, numel: int) -> bool:
    """Whether ``positions`` are int64, strictly ascending and in [0, numel): what makes the receiver's in-place
    writes safe (``sync.kernels``)."""
    if positions.dtype != np.int64 or positions.ndim != 1:
        return False
    return not positions.size or (0 <= positions[0] and positions[-1] < numel
                                  and bool((positions[1:] > positions[:-1]).all()))
