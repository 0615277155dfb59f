"""Combining mask files tensor by tensor (``submask combine``): and, or, xor, diff, not, streamed to a new file.

Each tensor of each input is decoded (and verified) once, combined on packed bits and written before the next
one is read, so memory holds one tensor's masks at a time. In-memory masks combine with ``&``, ``|``, ... or
``submask.algebra``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import cast

import numpy as np

from .accel import job
from .align import aligned_names
from .built import BuiltMask
from .compare import tensor_progress
from .errors import UsageError
from .format import MaskFile, MaskWriter
from .format.writer import check_mask_target
from .io import open_mask
from .limits import check_allocation
from .metadata import combined_metadata
from .names import Names
from .packed import apply_op, check_op, clear_padding, packed_nbytes, popcount

VOTE_BLOCK = 1 << 20  # bytes of packed bits counted at a time: 8 Mi positions, 16 MiB of votes


def combine_files(op: str, inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *,
                  common: bool = False, progress: bool = False, overwrite: bool = False,
                  names: Names | None = None, at_least: int | None = None) -> BuiltMask:
    """Write ``op`` ("and", "or", "xor", "diff", "not", "vote") of mask files to ``output``, tensor by tensor.

    "vote" sets a bit where at least ``at_least`` of the n inputs set it (TALL-masks' consensus: 1 is the union,
    n the intersection), counted in the same single pass.

    The result's metadata records the operation and each input's path, content fingerprint and provenance.
    An existing ``output`` is refused (OutputError, before any work) unless ``overwrite``; so is an input.
    Returns a ``BuiltMask`` whose ``path`` is the file written, with its counts. ``names``
    (``submask.names.NameMap``) renames every input's tensors before they are lined up, and the result's.
    """
    if (op == "vote") != (at_least is not None):
        raise UsageError("at_least (--at-least K) goes with op 'vote', and 'vote' needs it")
    if at_least is not None and not 1 <= at_least <= len(inputs):
        raise UsageError(f"at_least must lie in [1, {len(inputs)}] for {len(inputs)} masks, got {at_least}")
    if op != "vote":
        check_op(op, len(inputs))
    check_mask_target(output, overwrite, inputs=inputs)
    with ExitStack() as stack:
        # a path always opens as a MaskFile (open_mask yields a Mask only for a Mask passed in)
        files = [cast(MaskFile, stack.enter_context(open_mask(path, names=names))) for path in inputs]
        labels = [os.fspath(path) for path in inputs]
        tensor_names = aligned_names([f.shapes for f in files], common=common,
                                     labels=labels)
        described = [{"path": label, "fingerprint": content_fingerprint(f), "provenance": f.metadata.provenance}
                     for label, f in zip(labels, files)]
        metadata = combined_metadata(op, [f.metadata for f in files], described)
        if at_least is not None:
            metadata.provenance["combined"]["at_least"] = at_least
        stack.enter_context(job(len(files) * sum(files[0].entries[name].bits for name in tensor_names)))
        count = numel = 0
        with MaskWriter(output, metadata, overwrite=overwrite) as writer:
            for name in tensor_progress(tensor_names, progress, f"submask {op}"):
                nbytes = packed_nbytes(files[0].entries[name].bits)
                check_allocation((len(files) + 1) * nbytes, f"{labels[0]}, tensor {name!r}: {len(files)} inputs and "
                                 f"the result of {8 * nbytes:,} bits")
                tensors = [f[name] for f in files]
                packed = (vote([t.packed for t in tensors], tensors[0].numel, at_least) if at_least is not None
                          else apply_op(op, [t.packed for t in tensors], tensors[0].numel))
                count += writer.add_packed(name, tensors[0].shape, packed, popcount(packed)).ones
                numel += tensors[0].numel
    return BuiltMask(metadata, len(tensor_names), count, numel, path=Path(output))


def vote(packed: Sequence[np.ndarray], numel: int, at_least: int) -> np.ndarray:
    """Packed bits set where at least ``at_least`` of the packed inputs are set, a block of bytes at a time."""
    out = np.empty_like(packed[0])
    for start in range(0, out.size, VOTE_BLOCK):
        votes = np.zeros((min(VOTE_BLOCK, out.size - start)) * 8, dtype=np.uint16)
        for bits in packed:
            votes += np.unpackbits(bits[start:start + VOTE_BLOCK])
        out[start:start + VOTE_BLOCK] = np.packbits(votes >= at_least)
    return clear_padding(out, numel)


def content_fingerprint(mask_file: MaskFile) -> str:
    """Identity of a mask's content, from its header: "sha256:" over names, shapes, counts and CRC-32s."""
    lines = "".join(f"{e.name}\t{','.join(map(str, e.shape))}\t{e.ones}\t{e.crc32}\n"
                    for e in sorted(mask_file.entries.values(), key=lambda e: e.name))
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()
