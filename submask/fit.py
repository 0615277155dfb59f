"""Masks given as a ``Mask``, an open ``MaskFile`` or a path, and the check that a mask fits a model."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Union

from .errors import MismatchError
from .format import MaskFile, model_fingerprint, open as open_mask_file
from .mask import Mask

MaskLike = Union[Mask, MaskFile, str, os.PathLike]
"""A mask in memory, an open .smask file, or the path of one (read lazily, one tensor at a time)."""


@contextlib.contextmanager
def open_mask(mask: MaskLike) -> Iterator[Mask | MaskFile]:
    """Yield ``mask`` as a name -> TensorMask mapping; a path is opened lazily and closed afterwards."""
    if isinstance(mask, (Mask, MaskFile)):
        yield mask
        return
    with open_mask_file(mask) as mask_file:
        yield mask_file


def mask_shapes(mask: Mask | MaskFile) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a mask, without decoding any bits."""
    if isinstance(mask, MaskFile):
        return {name: entry.shape for name, entry in mask.entries.items()}
    return mask.shapes


def mask_counts(mask: Mask | MaskFile) -> dict[str, int]:
    """Tensor name -> number of set bits of a mask, without decoding any bits of a MaskFile."""
    if isinstance(mask, MaskFile):
        return {name: entry.ones for name, entry in mask.entries.items()}
    return {name: tensor.count for name, tensor in mask.items()}


def describe(mask: Mask | MaskFile) -> str:
    return str(mask.path) if isinstance(mask, MaskFile) else "the mask"


def check_same_tensors(left: Mapping[str, tuple[int, ...]], right: Mapping[str, tuple[int, ...]],
                       left_name: str, right_name: str, remedy: str) -> None:
    """Raise MismatchError listing the names in ``left`` missing from ``right`` and the shapes that differ."""
    missing = [name for name in left if name not in right]
    wrong = [f"{name} {tuple(left[name])} vs {tuple(right[name])}"
             for name in left if name in right and tuple(right[name]) != tuple(left[name])]
    if missing or wrong:
        problems = ([f"{len(missing)} tensor(s) of {left_name} missing from {right_name}, e.g. {missing[:3]}"]
                    if missing else []) + ([f"{len(wrong)} with other shapes, e.g. {wrong[:3]}"] if wrong else [])
        raise MismatchError(f"{left_name} does not fit {right_name}: {'; '.join(problems)}. {remedy}")


def check_same_model(left: Mapping[str, tuple[int, ...]], right: Mapping[str, tuple[int, ...]],
                     left_name: str, right_name: str) -> None:
    """Raise MismatchError unless ``left`` and ``right`` hold the same tensor names with the same shapes."""
    remedy = "Both must come from the same architecture."
    check_same_tensors(left, right, left_name, right_name, remedy)
    check_same_tensors(right, left, right_name, left_name, remedy)


def check_fit(mask: Mask | MaskFile, shapes: Mapping[str, tuple[int, ...]], what: str) -> None:
    """Raise MismatchError unless every tensor of ``mask`` exists in ``shapes`` with the same shape."""
    check_same_tensors(mask_shapes(mask), shapes, describe(mask), what, "Is it a mask for another model?")


def check_model(mask: Mask | MaskFile, shapes: Mapping[str, tuple[int, ...]], what: str = "the model") -> None:
    """``check_fit``, and the model fingerprint the mask records (if any) must match ``shapes`` too.

    Reads headers only for a MaskFile. A matching fingerprint settles it without comparing names.
    """
    recorded = (mask.metadata.model or {}).get("fingerprint")
    if recorded and recorded == model_fingerprint(shapes):
        return
    check_fit(mask, shapes, what)
    if recorded:
        raise MismatchError(f"{describe(mask)} was made for a model with fingerprint {recorded}, but {what} has "
                            f"{model_fingerprint(shapes)} (other parameter names or shapes); "
                            "it is probably a mask for another model")
