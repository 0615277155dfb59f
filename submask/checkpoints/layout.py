"""A checkpoint file's layout: what a delta records so that base + delta rebuilds the file byte for byte.

A safetensors file is its header (u64 LE length, then the JSON text exactly as written, trailing spaces
included) followed by every tensor's bytes in ``data_offsets`` order; when those offsets tile the data
exactly and the file ends with the last tensor, the header text alone says where every byte goes (FORMAT.md,
"Values and checkpoint layout"). ``laid_out_tensors`` checks that and lists the tensors in byte order, for
the build (which records the layout) and for ``rebuild`` (which follows it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import SourceError
from ..safetensors_header import LENGTH, parse_header
from .dtypes import dtype_named
from .safetensors_file import TensorInfo

Fail = Callable[[str], Exception]


def laid_out_tensors(header: str, size: int, fail: Fail) -> list[TensorInfo]:
    """The tensors of a safetensors file with this ``header`` text and ``size``, in the order of their bytes.

    ``fail(problem)`` makes the exception to raise when the offsets leave a gap, overlap, disagree with a
    dtype and shape, or the file holds bytes past the last tensor: such a file cannot be rebuilt from its
    header and tensor values alone.
    """
    data_start = LENGTH.size + len(header.encode("utf-8"))
    _, entries = parse_header(header.encode("utf-8"), fail)
    placed = []
    for name, entry in entries.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise fail(f"has an invalid entry for tensor {name!r}")
        try:
            dtype = dtype_named(entry.get("dtype"))
        except SourceError as exc:
            raise fail(f"gives tensor {name!r} an unsupported dtype ({exc})") from None
        info = TensorInfo(name, dtype, tuple(shape))
        if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
            raise fail(f"gives tensor {name!r} data_offsets {offsets} that do not fit its dtype and shape")
        placed.append((offsets[0], offsets[1], info))
    placed.sort(key=lambda item: (item[0], item[1]))
    end = 0
    for begin, stop, info in placed:
        if begin != end:
            raise fail(f"does not lay its tensors end to end (tensor {info.name!r} starts at data byte {begin}, "
                       f"the previous one ends at {end})")
        end = stop
    if data_start + end != size:
        raise fail(f"is {size} bytes, but its header and tensors make {data_start + end}")
    return [info for _, _, info in placed]
