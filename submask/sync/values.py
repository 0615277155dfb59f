"""How a patch's values are coded: the one place that picks the values encoding of FORMAT.md §12.

A patch codes each changed tensor's new values against the previous ones (the parent state's values at the
same positions): ``diff-planes`` (§12.4), where a move of a few ulps costs a few bits. The sender gathers the
previous values in ``diff``; the receiver reads them from its own weights in ``apply_to``, after the parent check
and before writing. A snapshot has nothing to code against and stores its values in ``planes`` (§12.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.diffs import block_counts, block_elements_of
from ..format.header import ValuesEntry
from ..format.payloads import Payload
from ..format.values import TensorValues, difference_blocks, encode_tensor_values, is_diff, read_values
from ..metadata import DIFF_MINOR, VALUES_MINOR

#: whether ``encode_patch_values`` is given the previous values (costs the sender a gather per changed tensor)
CODED_AGAINST_PREVIOUS = True


@dataclass(frozen=True)
class Differences:
    """A tensor's new values coded against the previous ones, as read and checked (records, sizes, CRC-32):
    the stored differences of its blocks back to back (uint8, FORMAT.md §12.4) and the values in each block.
    ``sync.kernels.decode_at`` turns them into the values from the receiver's weights."""

    dtype: str
    stored: np.ndarray
    counts: np.ndarray  # int64, one per block


def encode_patch_values(name: str, values: TensorValues, previous: np.ndarray | None, packed: np.ndarray | None,
                        numel: int) -> tuple[ValuesEntry, bytes]:
    """A tensor's new values, encoded: (its values record, payload). ``previous``: the parent state's value bytes
    at the same positions (None in a snapshot); ``packed``: the patch's mask bits of the tensor (None: all set)."""
    if previous is None:
        return encode_tensor_values(name, values, values.count)
    against = TensorValues(values.dtype, values.data, previous)
    return encode_tensor_values(name, against, values.count, packed=packed, numel=numel)


def decode_patch_values(entry: ValuesEntry, payload: Payload, count: int, source: object, name: str,
                        positions: np.ndarray | None, numel: int) -> TensorValues | Differences:
    """A tensor's new values from their record and payload, every check made (CRC-32 included), or for values
    coded against the previous ones, their stored differences, decompressed and checked here once (damage is
    found on arrival, before any parent check). ``positions``: the tensor's set positions in the patch (None:
    all)."""
    if not is_diff(entry):
        return read_values(entry, payload, count, source, name)
    block = block_elements_of(entry.encoding, f"{source}, tensor {name!r}: ")
    counts = (np.asarray(block_counts(numel, block), np.int64) if positions is None
              else np.bincount(positions // block, minlength=-(-numel // block)).astype(np.int64))
    blocks = list(difference_blocks(entry, payload, count, source, name, counts.tolist()))  # CRC-32 checked
    stored = np.concatenate(blocks) if blocks else np.empty(0, np.uint8)
    return Differences(entry.dtype, stored, counts)


def values_minor(entry: ValuesEntry) -> int:
    """The format minor version that a file with this values record declares at least."""
    return DIFF_MINOR if is_diff(entry) else VALUES_MINOR
