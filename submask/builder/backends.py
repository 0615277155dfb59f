"""Where chunks are compared: numpy on the CPU, or torch on a device (CUDA), behind one ``compare``.

A backend takes one chunk of both checkpoints (raw unsigned ints of the same dtype) and returns the packed
changed-bits of the chunk, their count and, on request, the tolerance-ladder counts; ``widen`` turns a
chunk of any float dtype into float64 bits, so two float dtypes compare by value. Both backends apply the
definitions of ``criteria`` (they pass their array module to it; the torch backend counts the ladder's rungs
itself, by the rule of ``criteria.ladder_changed``, so the counts stay on the device), so they build
identical masks.

The torch backend works on any torch device and also takes chunks that are torch tensors already (a state
dict or module on a GPU is compared where it is: only the packed bits and counts come back to the host).

How ``select_backend("auto")`` chooses: tensors that live on a torch device other than the CPU go to their
device (the first such source's); everything else, checkpoint files included, is compared on the CPU.
Files go to the CPU because reading them is the bottleneck and the CPU backend compares faster than a
copy to the GPU and back (issue 13 measured 7.7 GB/s on 16 cores against 3.7 for the CUDA path on an
H200); ``device="cuda"`` still forces the GPU.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checkpoints.dtypes import DType, decode
from ..errors import UsageError
from ..packed import popcount
from .criteria import LADDER_ATOL, Criterion, ladder_changed, unchanged_within
from .kernels import fused_compare

DECODE_BLOCK = 1 << 16  # elements decoded at a time for tolerances and the ladder: temporaries stay in cache


@dataclass
class ChunkResult:
    """Packed changed-bits of a chunk (MSB first; None when not asked for), how many are set, and ladder counts
    (or None)."""

    packed: np.ndarray | None
    ones: int
    ladder: list[int] | None


class Backend:
    """Compares chunks; ``name`` is recorded in the mask's metadata. ``takes_tensors``: chunks may be torch
    tensors (raw signed-int views) instead of numpy arrays."""

    name: str
    takes_tensors = False

    def compare(self, a: np.ndarray, b: np.ndarray, dtype: DType, criterion: Criterion,
                ladder: bool, bits: bool = True) -> ChunkResult:
        """Compare one chunk of both sides; with ``bits`` False only the counts are needed (a backend may
        still return the packed bits when they cost nothing extra)."""
        raise NotImplementedError

    def staging(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer a worker thread reads its chunks into (pinned host memory for a GPU)."""
        return np.empty(nbytes, dtype=np.uint8)

    def widen(self, raw: Any, dtype: DType) -> Any:
        """Raw elements of a float ``dtype`` as the bits of their float64 values: exact for every float dtype,
        and every NaN becomes the one NaN (payloads and NaN signs do not survive a conversion alike everywhere)."""
        raise NotImplementedError


class NumpyBackend(Backend):
    """The CPU: one fused compiled pass per chunk (``kernels``) with numba, else numpy; both release the
    GIL, so worker threads compare in parallel, and both give identical results."""

    name = "cpu"

    def __init__(self) -> None:
        self._local = threading.local()

    def _changed_buffer(self, size: int) -> np.ndarray:
        buffer = getattr(self._local, "changed", None)
        if buffer is None or buffer.size < size:
            buffer = self._local.changed = np.empty(size, dtype=np.bool_)
        return buffer[:size]

    def compare(self, a: np.ndarray, b: np.ndarray, dtype: DType, criterion: Criterion,
                ladder: bool, bits: bool = True) -> ChunkResult:
        fused = fused_compare(a, b, dtype, criterion, ladder)
        if fused is not None:
            return ChunkResult(*fused)
        changed = np.not_equal(a, b, out=self._changed_buffer(a.size))
        counts = [0] * len(LADDER_ATOL) if ladder else None
        if criterion.name != "exact" or ladder:
            # Decode only the elements whose bytes differ, a cache-sized block at a time.
            for start in range(0, a.size, DECODE_BLOCK):
                block = changed[start:start + DECODE_BLOCK]
                where = np.flatnonzero(block)
                if not where.size:
                    continue
                x = decode(a[start:start + DECODE_BLOCK][where], dtype)
                y = decode(b[start:start + DECODE_BLOCK][where], dtype)
                if counts is not None:
                    counts = [total + part for total, part in zip(counts, ladder_changed(x, y, np))]
                if criterion.name != "exact":
                    block[where[unchanged_within(x, y, criterion, np)]] = False
        packed = np.packbits(changed)
        return ChunkResult(packed, popcount(packed), counts)

    def widen(self, raw: np.ndarray, dtype: DType) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # signalling NaNs
            values = decode(raw, dtype)
        values[np.isnan(values)] = np.nan
        return values.view(np.uint64)


class TorchBackend(Backend):
    """torch on ``device``: compare as signed integer views, decode, and pack bits there.

    On CUDA, each worker thread reads into its own pinned staging buffer and works on its own stream, so
    one thread's file reads overlap the others' host-to-device copies, kernels and copies back; a chunk's
    work ends when its packed bits reach the host, before its buffer is read into again. A chunk that
    already lives on another device of the same type (a model spread over several GPUs) is compared there.

    A chunk costs few passes and host syncs (what bounds a GPU): the compare, a count and the packing over
    the chunk, and one copy back of the count, the ladder counts and the packed bits together (one sync).
    A tolerance or the ladder adds a ``nonzero`` (a second sync, which sizes the gather) and passes over
    the changed elements only, which also give the count: decoding every element instead moves about twice
    the bytes at 25% changed (on the CPU it ran at 0.4x the speed at 25% changed, 0.1x at 1%, 1.2-1.6x at
    100%).
    """

    takes_tensors = True

    def __init__(self, device: str = "cuda"):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.name = str(self.device)
        self._local = threading.local()

    def staging(self, nbytes: int) -> np.ndarray:
        if self.device.type != "cuda":
            return super().staging(nbytes)
        return self.torch.empty(nbytes, dtype=self.torch.uint8, pin_memory=True).numpy()

    def _device_for(self, *chunks: Any) -> Any:
        """Where to compare chunks: on the device of the first that lives on a device of this backend's type
        (so a model spread over several GPUs is compared on each), else on this backend's device."""
        for chunk in chunks:
            if not isinstance(chunk, np.ndarray) and chunk.device.type == self.device.type:
                return chunk.device
        return self.device

    def _stream(self, device: Any) -> Any:
        """This thread's stream on ``device`` (CUDA), ordered after the caller's pending work there; a no-op
        context elsewhere."""
        if device.type != "cuda":
            return contextlib.nullcontext()
        cuda = self.torch.cuda
        streams = getattr(self._local, "streams", None)
        if streams is None:
            streams = self._local.streams = {}
        stream = streams.get(device)
        if stream is None:
            stream = streams[device] = cuda.Stream(device)
        stream.wait_stream(cuda.current_stream(device))  # device-resident inputs may still be in the making
        return cuda.stream(stream)

    def compare(self, a: Any, b: Any, dtype: DType, criterion: Criterion, ladder: bool,
                bits: bool = True) -> ChunkResult:
        device = self._device_for(b, a)
        with self._stream(device):
            return self._compare(a, b, dtype, criterion, ladder, bits, device)

    def _compare(self, a: Any, b: Any, dtype: DType, criterion: Criterion, ladder: bool, bits: bool,
                 device: Any) -> ChunkResult:
        torch = self.torch
        ta, tb = self._tensor(a, dtype, device), self._tensor(b, dtype, device)
        numel = ta.numel()
        # What comes back, in one copy: the count and the ladder counts (int64), then the packed bits.
        reply = torch.empty(8 * _COUNTS + (-(-numel // 8) if bits else 0), dtype=torch.uint8, device=device)
        counts = reply[:8 * _COUNTS].view(torch.int64)
        changed = torch.empty(-(-numel // 8) * 8, dtype=torch.bool, device=device)
        changed[numel:] = False  # a tensor's last chunk packs to a partial byte, padded with zeros
        torch.ne(ta, tb, out=changed[:numel])
        if criterion.name == "exact" and not ladder:
            counts[0] = self._count(changed)
        else:
            where = changed[:numel].nonzero().squeeze(1)
            narrow = criterion.name == "exact" and dtype.name in _FLOAT32_LADDER
            to, rungs = (torch.float32, _FLOAT32_RUNGS) if narrow else (torch.float64, LADDER_ATOL[1:])
            x, y = self._decode(ta[where], dtype, to), self._decode(tb[where], dtype, to)
            delta = (y - x).abs_()
            if ladder:  # as criteria.ladder_changed: NaN is within no tolerance
                counts[1] = where.numel()
                counts[2:] = where.numel() - torch.stack([self._count(delta <= rung) for rung in rungs])
            counts[0] = where.numel()  # the count comes from the changed elements, not another pass over all
            if criterion.name != "exact":
                within = unchanged_within(x, y, criterion, torch, delta)
                changed[where] = ~within  # index_put: no sync
                counts[0] -= self._count(within)
        if bits:
            pack_bits(changed, reply[8 * _COUNTS:])
        host = reply.cpu().numpy()
        tallies = host[:8 * _COUNTS].view(np.int64).tolist()
        return ChunkResult(host[8 * _COUNTS:] if bits else None, tallies[0], tallies[1:] if ladder else None)

    def _count(self, flags: Any) -> Any:
        """How many of the bools ``flags`` are set, as a device scalar: torch's CPU sum of bools is ~20x slower
        than its count_nonzero, which on CUDA is a compare and a sum (an extra pass)."""
        return self.torch.count_nonzero(flags) if flags.device.type == "cpu" else flags.sum()

    def widen(self, raw: Any, dtype: DType) -> Any:
        device = self._device_for(raw)
        with self._stream(device):
            values = self._decode(self._tensor(raw, dtype, device), dtype)
            return values.masked_fill(values.isnan(), float("nan")).view(self.torch.int64)  # F64 may be the caller's

    def _tensor(self, raw: Any, dtype: DType, device: Any) -> Any:
        """A chunk (numpy raw elements, or a torch signed-int view on any device) as a signed view on
        ``device``; numpy chunks may be read-only (a caller's array), which this backend never writes."""
        if isinstance(raw, np.ndarray):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                raw = self.torch.from_numpy(raw.view(dtype.signed))
        # Asynchronous from pinned staging buffers: the chunk's work ends with a copy back, before reuse.
        return raw.to(device, non_blocking=True)

    def _decode(self, raw: Any, dtype: DType, to: Any = None) -> Any:
        """float64 values of signed-int views, as ``dtypes.decode`` defines them; floats may go ``to`` another
        torch float dtype that holds them exactly."""
        torch = self.torch
        if dtype.kind == "bool" or dtype.name == "U8":
            return raw.view(torch.uint8).to(torch.float64)
        if dtype.name.startswith("U"):  # torch has little support for uint16/32/64: widen by hand
            wide = raw.to(torch.int64)
            if dtype.itemsize < 8:
                return (wide & ((1 << 8 * dtype.itemsize) - 1)).to(torch.float64)
            # Two exact 32-bit halves, one rounding in the sum: as numpy's uint64 -> float64 (not float64 of
            # the int64 plus 2^64, which rounds twice).
            return ((wide >> 32) & 0xFFFFFFFF).to(torch.float64) * 2.0**32 + (wide & 0xFFFFFFFF).to(torch.float64)
        return raw.view(getattr(torch, dtype.torch_name)).to(to or torch.float64)


# An exact build decodes only for the ladder, and for floats of at most 11 significant bits float32 (24)
# puts every |y - x| on the same side of every rung as float64, at half the bytes: y - x is exact in float32
# unless the exponents differ by 13 or more, and then |y - x| is within 2^-12 of the larger magnitude, so the
# two roundings can straddle a rung only for pairs whose larger magnitude is that close to it (the tests
# compare both on every such pair). Compared in float32 against the largest float32 at or below each rung.
_FLOAT32_LADDER = frozenset({"BF16", "F16", "F8_E4M3", "F8_E5M2"})


def _float32_at_or_below(value: float) -> float:
    nearest = np.float32(value)
    return float(nearest if float(nearest) <= value else np.nextafter(nearest, np.float32(-np.inf)))


_FLOAT32_RUNGS = [_float32_at_or_below(rung) for rung in LADDER_ATOL[1:]]
_COUNTS = 1 + len(LADDER_ATOL)  # int64 counts a chunk's reply starts with: the changed bits, then the ladder
# Times a little-endian word of 8 bools (0/1 bytes, first flag lowest): the 8 partial products land on bits
# 63 down to 56 (first flag highest) without carries, so the top byte is the packed byte, MSB first. As a
# signed int64: torch multiplies int64 modulo 2^64. (Little-endian, as GPUs, x86 and ARM are.)
_MSB_FIRST = 0x8040201008040201 - (1 << 64)


def pack_bits(flags: Any, out: Any) -> None:
    """Pack a torch bool tensor whose length is a multiple of 8 into ``out`` (uint8), MSB first, as
    ``np.packbits``: one multiply per 8 flags and one strided copy of the words' top bytes."""
    import torch

    words = flags.view(torch.int64) * _MSB_FIRST
    out.copy_(words.view(torch.uint8)[7::8])


def select_backend(device: str | Backend = "auto", resident: str | None = None) -> Backend:
    """The backend for ``device``: "cpu", "cuda" (or "cuda:N"), "auto", or a Backend instance.

    ``resident`` is the torch device the inputs already live on (None for files, numpy arrays and CPU
    tensors); "auto" compares there, and on the CPU otherwise (see the module docstring for why).
    """
    if isinstance(device, Backend):
        return device
    if device == "auto":
        return NumpyBackend() if resident is None else TorchBackend(resident)
    if device == "cpu":
        return NumpyBackend()
    if device.startswith("cuda"):
        if not _cuda_available():
            raise UsageError(f"device {device!r} asked for, but torch sees no CUDA device; use device='cpu'")
        return TorchBackend(device)
    raise UsageError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
