"""How a patch's values are coded: the one place that picks the values encoding of FORMAT.md §12.

Today the 1.2 ``planes`` encoding. A coding of the new values as differences from the old ones (the parent
state's values at the same positions, which the sender had before its diff and the receiver holds before it
applies) changes these two functions and what their callers pass as ``old``.
"""

from __future__ import annotations

from ..format.header import ValuesEntry
from ..format.values import Payload, TensorValues, encode_tensor_values, read_values


def encode_patch_values(name: str, values: TensorValues) -> tuple[ValuesEntry, bytes]:
    """A tensor's new values, encoded: (its values record, payload)."""
    return encode_tensor_values(name, values, values.count)


def decode_patch_values(entry: ValuesEntry, payload: Payload, count: int, source: object,
                        name: str) -> TensorValues:
    """A tensor's new values from their record and payload, every check made (CRC-32 included)."""
    return read_values(entry, payload, count, source, name)
