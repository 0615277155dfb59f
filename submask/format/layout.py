"""A delta's checkpoint layout against its tensor entries (FORMAT.md §12.3): what `validate` and every rebuilder
check before anything is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import FormatError
from ..metadata import CheckpointFile

if TYPE_CHECKING:
    from ..checkpoints.safetensors_file import TensorInfo


def check_layout(files: Sequence[CheckpointFile], values: Mapping[str, tuple[str, tuple[int, ...]]],
                 label: str) -> list[list[TensorInfo]]:
    """Per file of the layout, the tensors its recorded safetensors header lists in byte order ([] for a text
    file). ``values`` maps each tensor with values to its values' dtype name and its shape. FormatError, naming
    ``label``, unless every listed tensor has values of the listed dtype and shape and no tensor is listed by two
    files. Values of tensors no file lists are allowed: a rebuild leaves them out."""
    from ..checkpoints.layout import laid_out_tensors  # here: a mask without a layout (most) needs no checkpoints

    listed: dict[str, str] = {}
    plan: list[list[TensorInfo]] = []
    for file in files:
        if file.header is None:
            plan.append([])
            continue

        def fail(problem: str, name: str = file.name) -> FormatError:
            return FormatError(f"{label}: the recorded header of {name} {problem}; the delta is corrupt")

        tensors = laid_out_tensors(file.header, file.size, fail)
        for info in tensors:
            if info.name not in values:
                raise FormatError(f"{label}: {file.name} lists tensor {info.name!r}, which has no values in the "
                                  "delta; the delta is corrupt (build it again with --values)")
            dtype, shape = values[info.name]
            if (dtype, shape) != (info.dtype.name, info.shape):
                raise FormatError(f"{label}: tensor {info.name!r} is {dtype} {list(shape)} in the delta but "
                                  f"{info.dtype.name} {list(info.shape)} in {file.name}; the delta is corrupt")
            if info.name in listed:
                raise FormatError(f"{label}: tensor {info.name!r} is listed by both {listed[info.name]} and "
                                  f"{file.name}; the delta is corrupt")
            listed[info.name] = file.name
        plan.append(tensors)
    return plan
