"""How a patch's values are coded: the one place that picks the values encoding of FORMAT.md §12.

Today the 1.2 ``planes`` encoding of the new values alone. A coding against the previous values (those of the
parent state at the same positions: the sender gathers them in ``diff`` when ``CODED_AGAINST_PREVIOUS`` is set,
the receiver reads them from its own weights in ``apply_to``, after the parent check and before writing) is a
change to this module only: set the flag, code ``previous`` in ``encode_patch_values``, and have
``decode_patch_values`` return a function of the receiver's previous value bytes for such an encoding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..format.header import ValuesEntry
from ..format.values import Payload, TensorValues, encode_tensor_values, read_values
from ..metadata import VALUES_MINOR

#: whether ``encode_patch_values`` is given the previous values (costs the sender a gather per changed tensor)
CODED_AGAINST_PREVIOUS = False

#: the values of a tensor, or how to get them from the receiver's previous value bytes at the same positions
Decoded = TensorValues | Callable[[np.ndarray], TensorValues]


def encode_patch_values(name: str, values: TensorValues, previous: np.ndarray | None) -> tuple[ValuesEntry, bytes]:
    """A tensor's new values, encoded: (its values record, payload). ``previous``: the parent state's value bytes
    at the same positions, when ``CODED_AGAINST_PREVIOUS`` (None otherwise, and in a snapshot)."""
    return encode_tensor_values(name, values, values.count)


def decode_patch_values(entry: ValuesEntry, payload: Payload, count: int, source: object, name: str) -> Decoded:
    """A tensor's new values from their record and payload, every check made (CRC-32 included), or for an
    encoding against the previous values, the function of those that decodes and checks them."""
    return read_values(entry, payload, count, source, name)


def values_minor(entry: ValuesEntry) -> int:
    """The format minor version that a file with this values record declares at least."""
    return VALUES_MINOR
