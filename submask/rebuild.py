"""Base + delta: the finetuned checkpoint again, byte for byte (FORMAT.md, "Values and checkpoint layout").

``rebuild`` (what ``apply_mask(base, delta, out_dir)`` calls) writes every file the delta's checkpoint layout
lists: a safetensors file is its recorded header, then its tensors in byte order, each the base tensor with
the delta's values scattered in at the mask's set positions (a tensor whose mask is full is the values
alone), chunk by chunk (``CHUNK_ELEMENTS`` elements; values arrive block by block), hashed while written;
the index is its recorded text. Each file's size and SHA-256 must equal the recorded ones before the
directory appears (atomically): a wrong base is refused and leaves nothing. No other file is written: a
config or tokenizer is not part of the delta, so nothing vouches for it.

``apply_delta`` does the same in memory: base state dict + delta -> the finetuned state dict.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import numpy as np

from .accel import Kernel, job
from .align import mismatch
from .atomic import check_target, replace_dir, staging_dir, writing
from .builder.values import chunk_values
from .built import AppliedModel
from .checkpoints.dtypes import DTYPES, DType, dtype_of_array
from .checkpoints.safetensors_file import TensorInfo
from .checkpoints.sources import CHUNK_ELEMENTS, Source, open_source
from .delta import Delta
from .errors import FormatError, MismatchError, UsageError
from .format import MaskFile
from .format.diffs import apply_block
from .format.layout import check_layout
from .format.values import is_diff
from .io import load_delta
from .io import open as open_mask_file
from .mask import TensorMask
from .metadata import CheckpointFile
from .packed import popcount, unpack
from .safetensors_header import LENGTH

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor


IN_FLIGHT = 2  # chunks being hashed and written while the next is filled in
POSITIONS_MAX = CHUNK_ELEMENTS  # a tensor with at most this many set bits (32 MiB of positions) is scattered by them
POSITIONS_MAX_DENSITY = 1 / 2  # ... when at most this dense: denser, packed bits win (measured crossover ~0.6)
DeltaLike = Delta | MaskFile | str | os.PathLike[str]
"""A delta in memory, an open .smask file with values, or the path or hf:// URL of one."""


def rebuild(base: Any, delta: DeltaLike, out_dir: str | os.PathLike[str], *, overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None, hub_api: Any = None,
            cache_dir: str | os.PathLike[str] | None = None) -> AppliedModel:
    """Write the finetuned checkpoint's files that ``delta`` records, from ``base`` and its values.

    ``base`` is whatever ``build_mask`` reads (a .safetensors file, a model dir, a Hub repo id
    ``org/name@revision``, a state dict); ``delta`` a .smask file (or hf:// URL) built with values, an
    open one, or a ``Delta``. MismatchError, before anything is written, when ``base`` lacks a tensor the
    delta needs or holds it in another dtype or shape, and after the work when a rebuilt file's size or
    SHA-256 differs from the recorded one (another base with the same shapes): ``out_dir`` is then left as
    it was. ``progress(nbytes, total)`` is called as bytes are written.
    """
    out = check_target(out_dir, overwrite, directory=True, inputs=[base, delta])
    with _opened(delta) as values, open_source(base, api=hub_api, cache_dir=cache_dir) as source:
        plan = _plan(values)
        _check_base(values, source)
        total = sum(file.size for file, _ in plan)
        report = None if progress is None else (lambda nbytes: progress(nbytes, total))
        with job(sum(info.numel for _, infos in plan for info in infos)), staging_dir(out) as staging:
            for file, tensors in plan:
                with writing(out), open(staging / file.name, "wb") as handle:
                    digest = _write_file(handle, file, tensors, values, source, report)
                    handle.flush()
                    os.fsync(handle.fileno())
                size = (staging / file.name).stat().st_size
                if (size, digest) != (file.size, file.sha256):
                    raise MismatchError(
                        f"{out / file.name}: the rebuilt file does not match the delta ({size} bytes, SHA-256 "
                        f"{digest[:16]}..., recorded {file.size} bytes, {file.sha256[:16]}...): {source.label} is "
                        f"not the base {values.label} was built against{_recorded_base(values)}; nothing was "
                        "written")
            with writing(out):
                replace_dir(staging, out, overwrite)
        tensors = [info for _, infos in plan for info in infos]
        counts = values.mask.counts
    return AppliedModel(out, len(tensors), sum(info.numel for info in tensors),
                        sum(counts[info.name] for info in tensors))


def apply_delta(base: Mapping[str, Any], delta: Delta | str | os.PathLike[str]) -> dict[str, Any]:
    """The finetuned state dict: ``base`` (torch tensors or numpy arrays) with ``delta``'s values scattered in.

    Holds the delta's tensors, in its order (a base tensor the finetuned model lacks is left out); each is
    a new tensor of the base's kind (torch if the base holds torch tensors) in the values' dtype, on the
    base tensor's device (tensors stored whole: on the CPU). MismatchError when ``base`` lacks a tensor the
    delta needs, or holds it in another dtype or shape.

    >>> finetuned = submask.apply_delta(model.state_dict(), "rl.smask")   # doctest: +SKIP
    """
    label = "the delta" if isinstance(delta, Delta) else os.fspath(delta)
    if not isinstance(delta, Delta):
        delta = load_delta(delta, base=base)
    bare = [name for name in delta.mask if name not in delta.values]
    if bare:
        raise UsageError(f"{label}: {len(bare)} tensor(s) carry no values (e.g. {bare[:3]}); build it with "
                         "values=True (--values), or use apply_to_state_dict with the finetuned state dict")
    values = _DeltaValues(delta, label)
    _check_base(values, _Shapes(base))
    uses_torch = any(not isinstance(value, np.ndarray) for value in base.values())
    result = {}
    for name, bits in delta.mask.items():
        data, dtype = delta.values[name].data, DTYPES[delta.values[name].dtype]
        if bits.count == bits.numel:
            result[name] = _as_tensor(data.view(dtype.raw).reshape(bits.shape), dtype, uses_torch)
        else:
            result[name] = _scattered(base[name], bits, data.view(dtype.raw), dtype)
    return result


# -- the delta, however it was given ----------------------------------------------------------------------------

@dataclass
class _DeltaValues:
    """A delta's masks, values and layout behind one face, whether in memory or in a file."""

    source: Delta | MaskFile
    label: str

    @property
    def mask(self) -> Any:
        return self.source.mask if isinstance(self.source, Delta) else self.source

    @property
    def checkpoint(self) -> list[CheckpointFile] | None:
        return self.source.checkpoint if isinstance(self.source, Delta) else self.source.metadata.checkpoint

    @property
    def metadata(self) -> Any:
        return self.source.mask.metadata if isinstance(self.source, Delta) else self.source.metadata

    def dtype(self, name: str) -> str | None:
        """The values' dtype name of tensor ``name``, None if it has no values."""
        if isinstance(self.source, Delta):
            held = self.source.values.get(name)
            return None if held is None else held.dtype
        entry = self.source.entries.get(name)
        return None if entry is None or entry.values is None else entry.values.dtype

    def bits(self, name: str) -> TensorMask | np.ndarray:
        """Tensor ``name``'s mask, verified: its set positions (int64, ascending) where the file lists them and
        they are few (scattering by them is far cheaper than by the bits), else its packed bits."""
        source = self.source
        if isinstance(source, MaskFile):
            entry = source.entries[name]
            if entry.ones <= min(POSITIONS_MAX, entry.bits * POSITIONS_MAX_DENSITY):
                positions = source.positions(name)
                if positions is not None:
                    return positions
        return self.mask[name]

    def coded_against_base(self, name: str) -> bool:
        """Whether tensor ``name``'s values are coded against the base (which must then hold it)."""
        if isinstance(self.source, Delta):
            return False
        entry = self.source.entries[name].values
        return entry is not None and is_diff(entry)

    def differences(self, name: str) -> tuple[int, Iterator[np.ndarray]] | None:
        """Tensor ``name``'s values when coded against the base: (block_elements, the blocks of stored
        differences, CRC-32 checked at the end); None when they are stored as they are."""
        if isinstance(self.source, Delta):
            return None
        return self.source.difference_blocks(name)

    def blocks(self, name: str) -> Iterator[np.ndarray]:
        """Tensor ``name``'s value bytes, a block at a time (checked against their CRC-32 at the end)."""
        if isinstance(self.source, Delta):
            return iter([self.source.values[name].data])
        return self.source.value_blocks(name)


@contextlib.contextmanager
def _opened(delta: DeltaLike) -> Iterator[_DeltaValues]:
    if isinstance(delta, (Delta, MaskFile)):
        yield _DeltaValues(delta, str(getattr(delta, "path", "the delta")))
        return
    with open_mask_file(delta) as mask_file:
        yield _DeltaValues(mask_file, os.fspath(delta))


def _plan(values: _DeltaValues) -> list[tuple[CheckpointFile, list[TensorInfo]]]:
    """Each file to write with its tensors in byte order (none for a text file), checked against the delta."""
    if values.checkpoint is None:
        raise UsageError(f"{values.label}: holds no checkpoint layout (built without --values, or from a state "
                         "dict), so it cannot rebuild files; pass the finetuned checkpoint too: apply BASE "
                         "FINETUNED MASK -o DIR")
    shapes = values.mask.shapes  # once: a Mask builds the dict on each access
    held = {name: (dtype, shapes[name]) for name in shapes if (dtype := values.dtype(name)) is not None}
    return list(zip(values.checkpoint, check_layout(values.checkpoint, held, values.label)))


def _recorded_base(values: _DeltaValues) -> str:
    base = values.metadata.provenance.get("base")
    if not isinstance(base, dict) or not base.get("source"):
        return ""
    revision = f"@{base['revision']}" if base.get("revision") else ""
    return f" ({base['source']}{revision})"


# -- the base ---------------------------------------------------------------------------------------------------

@dataclass
class _Shapes:
    """A state dict's tensors as a source's ``tensors`` would list them (name -> dtype and shape)."""

    state: Mapping[str, Any]
    label: str = "the base state dict"

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return {name: TensorInfo(name, dtype_of_array(value.dtype, f"{self.label}, tensor {name!r}: "),
                                 tuple(int(d) for d in value.shape)) for name, value in self.state.items()}


def _check_base(values: _DeltaValues, base: Source | _Shapes) -> None:
    """MismatchError unless ``base`` holds, in the delta's dtype and shape, every tensor the delta only
    partly stores (the tensors it stores whole need nothing from the base)."""
    shapes, tensors = values.mask.shapes, base.tensors  # once: a Mask builds the dict on each access
    needed = [name for name, count in values.mask.counts.items()
              if count < math.prod(shapes[name]) or values.coded_against_base(name)]
    missing = [name for name in needed if name not in tensors]
    different = [f"{name} {values.dtype(name)} {list(shapes[name])} vs {tensors[name].dtype.name} "
                 f"{list(tensors[name].shape)}" for name in needed if name in tensors
                 and (tensors[name].dtype.name, tensors[name].shape) != (values.dtype(name), shapes[name])]
    if missing or different:
        raise mismatch(values.label, base.label, f"Pass the base the delta was built against"
                       f"{_recorded_base(values)}.", only_left=missing, different=different)


# -- writing ----------------------------------------------------------------------------------------------------

def _write_file(handle: BinaryIO, file: CheckpointFile, tensors: list[TensorInfo], values: _DeltaValues,
                base: Source, progress: Callable[[int], None] | None) -> str:
    """Write one file; return the SHA-256 of what was written.

    Chunks are hashed and written on one thread and a tensor's value blocks decoded ahead on another, while the
    next chunk is read and filled in (hashlib, zstd, file I/O and the compiled scatter release the GIL),
    through ``IN_FLIGHT + 1`` rotating buffers. (Decoding the next tensor's mask ahead on a third thread
    measured no faster on 2 cores.)
    """
    digest = hashlib.sha256()

    def sink(view: memoryview) -> None:
        digest.update(view)
        handle.write(view)

    from concurrent.futures import ThreadPoolExecutor  # here, not at import: it imports logging

    with ThreadPoolExecutor(1, "submask-rebuild-write") as writer, \
            ThreadPoolExecutor(1, "submask-rebuild-values") as decoder:
        pending: deque[Future[None]] = deque()

        def emit(data: Any) -> None:
            view = memoryview(data).cast("B")
            while len(pending) >= IN_FLIGHT:  # so the buffer filled next is no longer being written
                pending.popleft().result()
            pending.append(writer.submit(sink, view))
            if progress is not None:
                progress(view.nbytes)

        if file.header is None:
            emit(file.text.encode("utf-8"))  # type: ignore[union-attr]
        else:
            header = file.header.encode("utf-8")
            emit(LENGTH.pack(len(header)) + header)
            buffers = itertools.cycle([np.empty(CHUNK_ELEMENTS * 8, np.uint8) for _ in range(IN_FLIGHT + 1)])
            coded = {info.name: values.differences(info.name) for info in tensors}
            # one stream of every coded tensor's blocks, decoded ahead across tensors
            blocks = _ahead(itertools.chain.from_iterable(found[1] for found in coded.values() if found), decoder)
            for info in tensors:
                differences = coded[info.name]
                if differences is not None:
                    chunks = _diff_chunks(info, values.bits(info.name), blocks, base, buffers, differences[0],
                                          values.label)
                else:
                    stream = _ValueStream(_ahead(values.blocks(info.name), decoder), values.label, info.name)
                    chunks = _tensor_chunks(info, values.bits(info.name), stream, base, buffers)
                for chunk in chunks:
                    emit(chunk)
            if next(blocks, None) is not None:  # also runs the last tensor's end checks (CRC-32)
                raise FormatError(f"{values.label}: {file.name}: more difference blocks than its tensors' elements "
                                  "take; the delta is corrupt")
        while pending:
            pending.popleft().result()
    return digest.hexdigest()


def _tensor_chunks(info: TensorInfo, bits: TensorMask | np.ndarray, stream: _ValueStream, base: Source,
                   buffers: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """One tensor's bytes, chunk by chunk: the values alone when every bit is set, else the base's chunk (read
    into the next of ``buffers``) with the values at the set positions (``bits``: packed, or the positions)."""
    positions = bits if isinstance(bits, np.ndarray) else None
    itemsize = info.dtype.itemsize
    whole = (bits.size if isinstance(bits, np.ndarray) else bits.count) == info.numel
    done = 0  # set positions before this chunk
    for start in range(0, info.numel, CHUNK_ELEMENTS):
        stop = min(start + CHUNK_ELEMENTS, info.numel)
        if whole:
            yield stream.take((stop - start) * itemsize)
            continue
        chunk = base.read(info.name, start, stop, next(buffers))
        if not chunk.flags.writeable:  # a source may hand back a read-only view instead of the buffer
            chunk = chunk.copy()
        if positions is None:
            packed = cast(TensorMask, bits).packed[start // 8: (stop + 7) // 8]  # not positions: a TensorMask
            _scatter_into(chunk, packed, stream.take(popcount(packed) * itemsize).view(info.dtype.raw))
        else:
            end = done + int(np.searchsorted(positions[done:], stop))
            chunk[positions[done:end] - start] = stream.take((end - done) * itemsize).view(info.dtype.raw)
            done = end
        yield chunk
    stream.finish()


def _diff_chunks(info: TensorInfo, bits: TensorMask | np.ndarray, blocks: Iterator[np.ndarray], base: Source,
                 buffers: Iterator[np.ndarray], block_elements: int, label: str) -> Iterator[np.ndarray]:
    """One tensor's bytes from values coded against the base (FORMAT.md §12.4): block ``k`` holds the values of
    elements ``[k * block_elements, (k + 1) * block_elements)``, so each is decoded from the base's chunk of
    those elements, which then takes the values at the set positions. ``blocks`` is shared by the file's
    tensors: this one takes its own blocks from it."""
    positions = bits if isinstance(bits, np.ndarray) else None
    raw, done = info.dtype.raw, 0
    for start in range(0, info.numel, block_elements):
        stop = min(start + block_elements, info.numel)
        buffer = next(buffers)
        if buffer.size < (stop - start) * info.dtype.itemsize:  # a writer's block larger than the default
            buffer = np.empty((stop - start) * info.dtype.itemsize, np.uint8)
        chunk = base.read(info.name, start, stop, buffer)
        if not chunk.flags.writeable:
            chunk = chunk.copy()
        if positions is None:
            packed = cast(TensorMask, bits).packed[start // 8: (stop + 7) // 8]  # not positions: a TensorMask
            taken = chunk_values(chunk, packed).view(raw)
        else:
            end = done + int(np.searchsorted(positions[done:], stop))
            where, done = positions[done:end] - start, end
            taken = chunk[where]
        block = next(blocks, None)
        if block is None or block.size != taken.nbytes:
            raise FormatError(f"{label}, tensor {info.name!r}: a block of {0 if block is None else block.size} "
                              f"difference bytes for {taken.size} set positions; the delta is corrupt")
        new = apply_block(block, taken, info.dtype.name).view(raw)
        if positions is None:
            _scatter_into(chunk, packed, new)
        else:
            chunk[where] = new
        yield chunk


def _scatter_into(chunk: np.ndarray, packed: np.ndarray, values: np.ndarray) -> None:
    """``chunk[unpack(packed)] = values``, compiled when numba runs."""
    scatter = _scatter.compiled
    if scatter is not None:
        scatter(packed, values, chunk)
    else:
        chunk[unpack(packed, chunk.size)] = values


@Kernel
def _scatter(packed, values, out):  # pragma: no cover - compiled by numba
    """``out[i] = values[k]`` for the k-th set bit ``i`` of ``packed`` (MSB first): numpy's boolean assignment,
    without unpacking the bits (a byte with no bit set costs one test)."""
    k, last = 0, values.size - 1
    for j in range(packed.size):
        byte = packed[j]
        if byte:
            for bit in range(8):  # branch-free (set bits are as good as random): each element is rewritten
                chosen = (byte >> (7 - bit)) & 1
                value, kept = values[min(k, last)], out[8 * j + bit]
                out[8 * j + bit] = value if chosen else kept
                k += chosen
    return k


def _ahead(blocks: Iterator[Any], thread: ThreadPoolExecutor) -> Iterator[Any]:
    """``blocks``, each decoded on ``thread`` while the one before is used (errors surface in order)."""
    future = thread.submit(next, blocks, None)
    while (block := future.result()) is not None:
        future = thread.submit(next, blocks, None)
        yield block


class _ValueStream:
    """A tensor's value bytes, taken in the amounts asked for, from blocks of another size."""

    def __init__(self, blocks: Iterator[np.ndarray], label: str, name: str):
        self._blocks, self._rest, self._at = blocks, np.empty(0, np.uint8), f"{label}, tensor {name!r}: "

    def take(self, nbytes: int) -> np.ndarray:
        parts = []
        while nbytes:
            if not self._rest.size:
                block = next(self._blocks, None)
                if block is None:
                    raise FormatError(f"{self._at}fewer values than set bits; the delta is corrupt")
                self._rest = block
            parts.append(self._rest[:nbytes])
            self._rest, nbytes = self._rest[nbytes:], nbytes - parts[-1].size
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else self._rest[:0]

    def finish(self) -> None:
        """Drain the blocks, so that their end checks (CRC-32) run; FormatError if values are left over."""
        left = self._rest.size + sum(block.size for block in self._blocks)
        if left:
            raise FormatError(f"{self._at}{left} value bytes more than set bits; the delta is corrupt")


# -- in memory --------------------------------------------------------------------------------------------------

def _scattered(base_value: Any, bits: TensorMask, raw_values: np.ndarray, dtype: DType) -> Any:
    """A copy of ``base_value`` with ``raw_values`` at the set positions of ``bits`` (same kind and device)."""
    if isinstance(base_value, np.ndarray):
        out = base_value.copy()
        out.reshape(-1).view(dtype.raw)[bits.to_numpy().reshape(-1)] = raw_values
        return out
    import torch

    out = base_value.detach().clone()
    flat = out.reshape(-1).view(getattr(torch, dtype.signed.name))
    flat[bits.to_torch(out.device).reshape(-1)] = torch.from_numpy(raw_values.view(dtype.signed)).to(out.device)
    return out


def _as_tensor(raw: np.ndarray, dtype: DType, uses_torch: bool) -> Any:
    """Raw values as a tensor of ``dtype``: torch when the base holds torch tensors, else numpy (raw unsigned
    ints where numpy has no such dtype, e.g. bf16)."""
    if not uses_torch:
        return raw.copy().view(dtype.numpy_name or dtype.raw)
    import torch

    return torch.from_numpy(raw.view(dtype.signed).copy()).view(getattr(torch, dtype.torch_name))


__all__ = ["DeltaLike", "apply_delta", "rebuild"]
