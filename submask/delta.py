"""A delta in memory: a mask, the finetuned values at its set positions, and the checkpoint layout they rebuild.

``submask.save(delta, path)`` writes it as one .smask file of version 1.2 (FORMAT.md §12) and
``submask.load_delta(path)`` reads it back; ``submask.load`` of the same file gives its mask alone.

>>> delta = submask.load_delta("rl.smask")                            # doctest: +SKIP
>>> delta.values["w"].dtype, delta.values["w"].count                  # doctest: +SKIP
('BF16', 1234)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import MismatchError
from .format.values import TensorValues
from .mask import Mask
from .metadata import CheckpointFile


@dataclass(frozen=True)
class Delta:
    """``mask`` (where the finetune differs), ``values`` (tensor name -> its values at the mask's set positions;
    tensors without an entry carry none) and ``checkpoint`` (the finetuned files' layout, or None)."""

    mask: Mask
    values: dict[str, TensorValues] = field(default_factory=dict)
    checkpoint: list[CheckpointFile] | None = None

    def __post_init__(self) -> None:
        for name, values in self.values.items():
            if name not in self.mask:
                raise MismatchError(f"values for tensor {name!r}, which the mask does not hold")
            if values.count != self.mask[name].count:
                raise MismatchError(f"tensor {name!r}: {values.count} values of {values.dtype}, but its mask has "
                                    f"{self.mask[name].count} set positions")
