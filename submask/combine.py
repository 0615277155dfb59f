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

from .accel import job
from .align import aligned_names
from .built import BuiltMask
from .compare import tensor_progress
from .format import MaskFile, MaskWriter
from .format.writer import check_mask_target
from .io import open_mask
from .metadata import combined_metadata
from .packed import apply_op, check_op, popcount


def combine_files(op: str, inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *,
                  common: bool = False, progress: bool = False, overwrite: bool = False) -> BuiltMask:
    """Write ``op`` ("and", "or", "xor", "diff", "not") of mask files to ``output``, tensor by tensor.

    The result's metadata records the operation and each input's path, content fingerprint and provenance.
    An existing ``output`` is refused (OutputError, before any work) unless ``overwrite``; so is an input.
    Returns a ``BuiltMask`` whose ``path`` is the file written, with its counts.
    """
    check_op(op, len(inputs))
    check_mask_target(output, overwrite, inputs=inputs)
    with ExitStack() as stack:
        files = [stack.enter_context(open_mask(path)) for path in inputs]
        labels = [os.fspath(path) for path in inputs]
        names = aligned_names([f.shapes for f in files], common=common,
                              labels=labels)
        described = [{"path": label, "fingerprint": content_fingerprint(f), "provenance": f.metadata.provenance}
                     for label, f in zip(labels, files)]
        metadata = combined_metadata(op, [f.metadata for f in files], described)
        stack.enter_context(job(len(files) * sum(files[0].entries[name].bits for name in names)))
        count = numel = 0
        with MaskWriter(output, metadata, overwrite=overwrite) as writer:
            for name in tensor_progress(names, progress, f"submask {op}"):
                tensors = [f[name] for f in files]
                packed = apply_op(op, [t.packed for t in tensors], tensors[0].numel)
                count += writer.add_packed(name, tensors[0].shape, packed, popcount(packed)).ones
                numel += tensors[0].numel
    return BuiltMask(metadata, len(names), count, numel, path=Path(output))


def content_fingerprint(mask_file: MaskFile) -> str:
    """Identity of a mask's content, from its header: "sha256:" over names, shapes, counts and CRC-32s."""
    lines = "".join(f"{e.name}\t{','.join(map(str, e.shape))}\t{e.ones}\t{e.crc32}\n"
                    for e in sorted(mask_file.entries.values(), key=lambda e: e.name))
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()
