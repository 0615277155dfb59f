"""Do these line up? Name and shape checks between masks, models and checkpoints, with one message style.

Every check takes plain ``name -> shape`` mappings (or objects with ``.shapes``: ``Mask``, ``MaskFile``), so
this module needs no file or network layer. A failed check raises MismatchError saying what is missing or
reshaped, with a few examples, and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .errors import MismatchError
from .metadata import MaskMetadata, model_fingerprint
from .names import hint

Shapes = Mapping[str, tuple[int, ...]]
SHOWN = 3  # examples named per kind of mismatch


class HasShapes(Protocol):
    """A mask (``Mask`` or ``MaskFile``): tensor shapes and metadata, readable without decoding bits."""

    @property
    def shapes(self) -> Shapes: ...

    @property
    def metadata(self) -> MaskMetadata: ...


def mismatch(left_name: str, right_name: str, remedy: str, *, only_left: Sequence[str] = (),
             only_right: Sequence[str] = (), different: Sequence[str] = ()) -> MismatchError:
    """The one way a mismatch is told: how many tensors only one side has and how many differ, a few of each
    (``different`` as "name left vs right"), then what to do, and the name mapping that fixes it when the two
    sides' names differ by a prefix or segment (``names.hint``)."""
    if only_left and only_right:
        remedy += hint(only_left, only_right, right_name)
    problems = [f"{len(items)} {what}, e.g. {_examples(items)}" for what, items in (
        (f"missing from {right_name}", only_left), (f"missing from {left_name}", only_right),
        ("with other shapes or dtypes", different)) if items]
    return MismatchError(f"{left_name} does not fit {right_name}: {'; '.join(problems)}. {remedy}")


def _examples(items: Sequence[str]) -> str:
    return repr(list(items[:SHOWN]))[:-1] + (", ...]" if len(items) > SHOWN else "]")


def describe(mask: Any) -> str:
    """How messages name a mask: its file path, else "the mask"."""
    path = getattr(mask, "path", None)
    return str(path) if isinstance(path, (str, os.PathLike)) else "the mask"


def check_same_tensors(left: Shapes, right: Shapes, left_name: str, right_name: str, remedy: str) -> None:
    """Raise MismatchError listing the names in ``left`` missing from ``right`` and the shapes that differ."""
    missing = [name for name in left if name not in right]
    wrong = [f"{name} {tuple(left[name])} vs {tuple(right[name])}"
             for name in left if name in right and tuple(right[name]) != tuple(left[name])]
    if missing or wrong:
        fix = hint(left, right, right_name) if missing else ""
        raise mismatch(left_name, right_name, remedy + fix, only_left=missing, different=wrong)


def check_same_model(left: Shapes, right: Shapes, left_name: str, right_name: str) -> None:
    """Raise MismatchError unless ``left`` and ``right`` hold the same tensor names with the same shapes."""
    remedy = "Both must come from the same architecture."
    check_same_tensors(left, right, left_name, right_name, remedy)
    check_same_tensors(right, left, right_name, left_name, remedy)


def check_fit(mask: HasShapes, shapes: Shapes, what: str) -> None:
    """Raise MismatchError unless every tensor of ``mask`` exists in ``shapes`` with the same shape."""
    check_same_tensors(mask.shapes, shapes, describe(mask), what, "Is it a mask for another model?")


def check_model(mask: HasShapes, shapes: Shapes, what: str = "the model") -> None:
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


def aligned_names(shapes: Sequence[Mapping[str, tuple[int, ...]]], *, common: bool = False,
                  labels: Sequence[str] | None = None) -> list[str]:
    """Tensor names to process for masks with these name->shape maps, in the first mask's order.

    Every mask must have the same tensors with the same shapes, else MismatchError; with ``common=True``
    only the tensors present in all of them are kept (shapes must still agree).
    """
    labels = list(labels) if labels is not None else [f"mask {i + 1}" for i in range(len(shapes))]
    first = shapes[0]
    shared = [name for name in first if all(name in other for other in shapes[1:])]
    if not common:
        for label, other in zip(labels[1:], shapes[1:]):
            missing = [n for n in first if n not in other]
            extra = [n for n in other if n not in first]
            if missing or extra:
                raise mismatch(labels[0], label, "The masks have different tensors: pass common=True (--common) "
                               "to use only the tensors both have.", only_left=missing, only_right=extra)
    for label, other in zip(labels[1:], shapes[1:]):
        wrong = [f"{name} {tuple(first[name])} vs {tuple(other[name])}" for name in shared
                 if tuple(other[name]) != tuple(first[name])]
        if wrong:
            raise mismatch(labels[0], label, "These masks are for different models.", different=wrong)
    return shared
