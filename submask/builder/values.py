"""What a build with values (a delta) adds to a mask: the finetuned values where it is set, and the layout of
the finetuned checkpoint's files (FORMAT.md, "Values and checkpoint layout").

Value bytes are taken in the compare pass, from the chunk already read: ``chunk_values`` keeps a chunk's
changed elements. Tensors the base lacks, or holds in another dtype or shape, are stored whole
(``delta_tensors``). ``record_checkpoint`` describes the finetuned files from what the source parsed when it
opened them (header text, size) and the SHA-256 its hash thread computed (or the Hub's LFS SHA-256).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np

from ..accel import Kernel
from ..checkpoints.dtypes import DType
from ..checkpoints.layout import laid_out_tensors
from ..checkpoints.pickled import PickleSource
from ..checkpoints.safetensors_file import TensorInfo
from ..checkpoints.sources import INDEX, ShardedSource, Source
from ..errors import MismatchError, SourceError, UsageError
from ..format import diffs
from ..metadata import CheckpointFile
from ..packed import popcount, unpack
from .criteria import Criterion


def check_values_build(criterion: Criterion, include: object, names: object = None) -> None:
    """Values rebuild bytes only under the bitwise criterion, only when every tensor is kept under its own name."""
    if criterion.name != "exact":
        raise UsageError(f"values=True (--values) stores the finetuned values where they differ bitwise, so the "
                         f"criterion must be 'exact', not {criterion.name!r}: a tolerance would lose updates")
    if include is not None:
        raise UsageError("values=True (--values) records the whole finetuned checkpoint; include= (--include) "
                         "would leave tensors out: drop it")
    if names is not None:
        raise UsageError("values=True (--values) rebuilds the finetuned files under the names they hold; drop the "
                         "name mapping (names=, --strip-prefix, --add-prefix, --rename)")


def delta_tensors(base: Source, finetuned: Source) -> tuple[list[TensorInfo], list[str], dict[str, list[str]]]:
    """Every finetuned tensor in its order, the names stored whole (the base lacks them or holds them in
    another dtype or shape), and the base's tensors the finetuned checkpoint lacks (``skipped["base_only"]``)."""
    if isinstance(finetuned, PickleSource):
        raise SourceError(f"{finetuned.label}: a torch.save (pickle) checkpoint cannot be rebuilt byte for byte from "
                          "its tensors, which a delta (values=True, --values) promises; save the finetuned model with "
                          "safetensors first (save_pretrained(), or safetensors.torch.save_file(model.state_dict(), "
                          "...)) and build the delta from that, or build without --values")
    if not finetuned.tensors:
        raise MismatchError(f"{finetuned.label} holds no tensor to store")
    whole = [name for name, info in finetuned.tensors.items() if base.tensors.get(name) != info]
    base_only = [name for name in base.tensors if name not in finetuned.tensors]
    return list(finetuned.tensors.values()), whole, {"base_only": base_only} if base_only else {}


def chunk_values(chunk: Any, packed: np.ndarray | None) -> np.ndarray:
    """The value bytes (uint8) of one chunk's elements whose bits are set in ``packed`` (all when None), copied
    out of the chunk (a reused read buffer, or a torch view on its device)."""
    if isinstance(chunk, np.ndarray):
        if packed is None:
            return chunk.copy().view(np.uint8)
        gather = _gather.compiled
        if gather is None:
            return chunk[unpack(packed, chunk.size)].view(np.uint8)
        count = popcount(packed)
        taken = np.empty(count + 1, dtype=chunk.dtype)  # one slot more: the kernel stores before it counts
        gather(packed, chunk, taken)
        return taken[:count].view(np.uint8)
    if packed is not None:
        import torch

        chunk = chunk[torch.from_numpy(unpack(packed, chunk.numel())).to(chunk.device)]
    return chunk.cpu().numpy().view(np.uint8).copy()


def takes_differences(dtype: DType) -> bool:
    """Whether ``chunk_differences`` codes chunks of ``dtype`` (at most 32 bits, with numba)."""
    return dtype.itemsize <= 4 and _gather.compiled is not None and diffs.zigzag_kernel.compiled is not None


def chunk_differences(base: np.ndarray, chunk: np.ndarray, packed: np.ndarray, dtype: DType,
                      staging: threading.local) -> tuple[np.ndarray, np.ndarray]:
    """The stored differences and the base's exponent fields (``diffs.zigzag_kernel``) of one chunk's elements
    whose bits are set in ``packed``: both sides gathered into this thread's ``staging`` buffers, coded while
    still in cache, and only the result kept (``itemsize + 1`` bytes a value, where the values of both sides
    took twice the itemsize). Raw numpy chunks of a dtype ``takes_differences``."""
    count = popcount(packed)
    buffers = getattr(staging, "gathered", None)
    if buffers is None or buffers[0].size <= count or buffers[0].dtype != chunk.dtype:
        buffers = staging.gathered = (np.empty(chunk.size + 1, chunk.dtype), np.empty(chunk.size + 1, chunk.dtype))
    new, old = buffers
    _gather.compiled(packed, chunk, new)
    _gather.compiled(packed, base, old)
    zigzag, keys = np.empty(count, chunk.dtype), np.empty(count, np.uint8)
    diffs.zigzag_kernel.compiled(new[:count], old[:count], zigzag, keys,
                                 *diffs.kernel_args(dtype.name, dtype.itemsize)[:3])
    return zigzag, keys


@Kernel
def _gather(packed, chunk, out):  # pragma: no cover - compiled by numba
    """``out[k] = chunk[i]`` for the k-th set bit ``i`` of ``packed`` (MSB first): numpy's boolean indexing
    without unpacking the bits, branch-free (set bits are as good as random): every element of a byte with a
    set bit is stored at ``out[k]``, and ``k`` moves on past the chosen ones, so ``out`` needs one slot more
    than there are set bits."""
    k = 0
    for j in range(packed.size):
        byte = packed[j]
        if byte:
            for bit in range(8):
                out[k] = chunk[8 * j + bit]
                k += (byte >> (7 - bit)) & 1
    return k


def record_checkpoint(source: Source) -> list[CheckpointFile] | None:
    """The finetuned checkpoint's files as a delta records them, or None for a state dict or module.

    Called once the build has read every tensor and hashed the local files: each file's exact header text,
    size and SHA-256, then the index (when sharded) as text. SourceError if a file cannot be rebuilt from
    its header and tensor values (gaps between tensors, trailing bytes, tensors its index does not list).
    """
    if not isinstance(source, ShardedSource):
        return None
    files = []
    for shard, recorded in source.provenance["files"].items():
        opened = source.file(shard)
        header = opened.raw_header[8:].decode("utf-8")

        def fail(problem: str, path: object = opened.path) -> SourceError:
            return SourceError(f"{path}: cannot be recorded for a byte-exact rebuild: the file {problem}; "
                               "save it again with safetensors, or build without --values")

        unlisted = [info.name for info in laid_out_tensors(header, opened.size, fail)
                    if info.name not in source.tensors]
        if unlisted:
            raise fail(f"holds tensor(s) its index does not list (e.g. {unlisted[:3]})")
        files.append(CheckpointFile(shard, opened.size, recorded.get("sha256") or opened.sha256(), header=header))
    if source.index is not None:
        files.append(CheckpointFile(INDEX, len(source.index), hashlib.sha256(source.index).hexdigest(),
                                    text=_index_text(source)))
    return files


def _index_text(source: ShardedSource) -> str:
    try:
        return source.index.decode("utf-8")  # type: ignore[union-attr]
    except UnicodeDecodeError:
        raise SourceError(f"{source.label}: {INDEX} is not UTF-8 text; save it again, or build without "
                          "--values") from None
