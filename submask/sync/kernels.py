"""The receiver's loops over a patch's changed entries, in the tensor's own memory: decode the new values from the
previous ones at their positions (``decode_at``) and write values at positions (``write_at``).

On a CPU tensor with numba, each runs as one compiled pass over a numpy view of the tensor's storage: the
gather of the previous values and the ``diff-planes`` transform (FORMAT.md §12.4) block by block, then the
scatter, with no torch indexing and no temporary of the tensor's size. Elsewhere (other devices, no numba,
8-byte values) torch's indexing and ``diffs.apply_block`` do the same, with identical results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..accel import Kernel
from ..format.diffs import UNSIGNED, Scratch, apply_block, decode_kernel, kernel_args
from .state import bits, host_bytes, itemsize
from .values import Differences

if TYPE_CHECKING:
    import torch


def host_view(tensor: torch.Tensor) -> np.ndarray | None:
    """A flat numpy view of a contiguous CPU tensor's elements as unsigned integers of their width (its memory,
    not a copy), for ``decode_at`` and ``write_at``; None for a tensor elsewhere."""
    if not tensor.is_cpu:
        return None
    return bits(tensor).numpy().reshape(-1).view(UNSIGNED[tensor.element_size()])


def decode_at(tensor: torch.Tensor, view: np.ndarray | None, positions: np.ndarray | None,
              differences: Differences) -> np.ndarray:
    """The new values (raw bytes, uint8) coded by ``differences`` against ``tensor``'s values at ``positions``
    (int64, ascending; None: every entry), which it reads and does not change. ``view``: ``host_view(tensor)``."""
    size = itemsize(differences.dtype)
    unsigned = UNSIGNED[size]
    stored = differences.stored.view(unsigned)
    kernel = _gather_decode.compiled if view is not None and positions is not None and size <= 4 else None
    out = np.empty(stored.size, unsigned)
    if kernel is not None:
        kernel(view, positions, stored, differences.counts, out, *kernel_args(differences.dtype, size))
        return out.view(np.uint8)
    import torch

    if positions is None:  # every entry: the previous values are the tensor itself (no index array to gather by)
        previous = view if view is not None else host_bytes(bits(tensor).view(-1)).view(unsigned)
    else:
        previous = (view[positions] if view is not None else
                    host_bytes(bits(tensor).view(-1)[torch.from_numpy(positions).to(tensor.device)]).view(unsigned))
    done, scratch = 0, Scratch()  # the numpy transform's arrays, reused from block to block
    for count in differences.counts.tolist():
        apply_block(stored[done : done + count], previous[done : done + count], differences.dtype,
                    out[done : done + count], scratch)
        done += count
    return out.view(np.uint8)


def write_at(tensor: torch.Tensor, view: np.ndarray | None, positions: np.ndarray | None,
             values: np.ndarray) -> None:
    """Write ``values`` (raw bytes, uint8) into ``tensor`` in place at ``positions`` (None: every entry).
    ``view``: ``host_view(tensor)``."""
    import torch

    kernel = _scatter.compiled if view is not None and positions is not None else None
    if view is not None and kernel is not None:
        kernel(view, positions, values.view(view.dtype))
        torch.autograd.graph.increment_version(tensor)  # as torch's own in-place writes do
        return
    target = bits(tensor).view(-1)
    source = torch.from_numpy(values).view(target.dtype).to(target.device)
    with torch.no_grad():
        if positions is None:
            target.copy_(source)
        else:
            target[torch.from_numpy(positions).to(target.device)] = source


@Kernel
def _gather_decode(flat: np.ndarray, positions: np.ndarray, stored: np.ndarray, counts: np.ndarray, out: np.ndarray,
                   mantissa: int, exponent_bits: int, value_bits: int,
                   slots: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """Per block: the previous values at the block's positions, then ``diffs.decode_kernel``."""
    done = 0
    for k in range(counts.size):
        count = counts[k]
        base = np.empty(count, out.dtype)
        for i in range(count):
            base[i] = flat[positions[done + i]]
        slots[:] = 0
        decode_kernel(stored[done : done + count], base, out[done : done + count], mantissa, exponent_bits,
                      value_bits, slots)
        done += count


@Kernel
def _scatter(flat: np.ndarray, positions: np.ndarray, values: np.ndarray) -> None:  # pragma: no cover - numba
    """``flat[positions] = values``."""
    for i in range(positions.size):
        flat[positions[i]] = values[i]


__all__ = ["decode_at", "host_view", "write_at"]
