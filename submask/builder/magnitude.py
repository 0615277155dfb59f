"""Top-k magnitude masks (``build_mask(..., top_k=0.05)``): the largest ``|finetuned - base|`` changes, as TIES,
DARE and Breadcrumbs keep them.

Rules (recorded in the mask's ``criterion``):
- magnitudes are ``|w' - w|`` in float64 (values decoded exactly, as the ``atol`` criterion does); a NaN or
  infinite difference counts as the largest; only elements whose bytes differ are eligible, so a tensor with
  fewer changes than k sets all its changes and no more;
- k is ``floor(fraction * numel)`` of each tensor (``scope="tensor"``) or of the whole model (``"global"``);
- ties at the k-th magnitude are broken by position: the lower flat (C order) index first, and globally the
  earlier tensor (in the base checkpoint's order) first, so exactly ``min(k, changed)`` bits are set.

Per tensor, one tensor's magnitudes are in memory at a time. Globally, the k-th largest magnitude is found by
a radix select over the magnitudes' float64 bit patterns (non-negative floats order as their bits do): each
pass reads the checkpoints once and narrows the threshold by 16 bits, so memory stays one tensor's and a
histogram; a last pass writes the mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..checkpoints.dtypes import decode
from ..checkpoints.safetensors_file import TensorInfo
from ..checkpoints.sources import Source
from ..errors import UsageError
from ..packed import pack
from .sinks import Sink

SCOPES = ("tensor", "global")
RADIX_BITS = 16
TIE_RULE = "lower flat index first; globally, earlier tensor (base order) first"


def parse_fraction(value: float | str) -> float:
    """A top-k fraction from 0.05, "0.05" or "5%"; UsageError unless it lies in (0, 1]."""
    text = str(value).strip()
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"top-k must be a fraction such as 0.05 or a percentage such as 5%, got {value!r}") from None
    if not 0 < fraction <= 1:
        raise UsageError(f"top-k must lie in (0, 1] (or (0%, 100%]), got {value!r}")
    return fraction


def criterion_json(fraction: float, scope: str) -> dict[str, Any]:
    return {"name": "top_k", "atol": None, "rtol": None, "fraction": fraction, "scope": scope,
            "magnitude": "|finetuned - base| in float64; NaN/inf largest; unchanged bytes never set",
            "ties": TIE_RULE}


def keys(base: Source, finetuned: Source, info: TensorInfo) -> np.ndarray:
    """One tensor's magnitudes as sortable int64 keys: -1 where the bytes are equal (never eligible), else the
    float64 bit pattern of ``|w' - w|`` (NaN mapped to +inf, which every finite magnitude sorts below)."""
    buffer = np.empty(info.nbytes, np.uint8)
    a = base.read(info.name, 0, info.numel, buffer).copy()
    b = finetuned.read(info.name, 0, info.numel, buffer)
    changed = a != b
    out = np.full(info.numel, -1, dtype=np.int64)
    if info.dtype.kind == "bool":
        out[changed] = np.float64(1.0).view(np.int64)
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.abs(decode(b[changed], info.dtype) - decode(a[changed], info.dtype))
    delta[np.isnan(delta)] = np.inf
    out[changed] = delta.view(np.int64)
    return out


def select(key: np.ndarray, k: int) -> np.ndarray:
    """Bool array: the ``k`` largest eligible keys (>= 0), ties to the lower index."""
    chosen = np.zeros(key.size, dtype=bool)
    eligible = int(np.count_nonzero(key >= 0))
    k = min(k, eligible)
    if k == 0:
        return chosen
    threshold = np.partition(key, key.size - k)[key.size - k]
    chosen[key > threshold] = True
    ties = np.flatnonzero(key == threshold)[:k - int(np.count_nonzero(chosen))]
    chosen[ties] = True
    return chosen


def stream_top_k(base: Source, finetuned: Source, infos: list[TensorInfo], fraction: float, scope: str,
                 sink: Sink) -> dict[str, Any]:
    """Hand each tensor's top-k mask to ``sink`` in order; return the build stats (changed = set bits)."""
    if scope not in SCOPES:
        raise UsageError(f"top-k scope must be one of {list(SCOPES)}, got {scope!r}")
    other = [i.name for i in infos if finetuned.tensors[i.name].dtype != i.dtype]
    if other:
        raise UsageError(f"top-k ranks differences of tensors stored in one dtype; {other[0]!r} (and "
                         f"{len(other) - 1} more) differ in dtype between base and finetuned: convert one side")
    stats: dict[str, Any] = {"changed": 0, "numel": 0, "dtypes": {}}
    chosen_of: Iterator[tuple[TensorInfo, Any]]
    if scope == "tensor":
        chosen_of = ((info, select(keys(base, finetuned, info), math.floor(fraction * info.numel)))
                     for info in infos)
    else:
        chosen_of = _global(base, finetuned, infos, math.floor(fraction * sum(i.numel for i in infos)))
    for info, chosen in chosen_of:
        ones = int(np.count_nonzero(chosen))
        sink.commit(sink.prepare(info.name, info.shape, pack(chosen), ones, None))
        stats["changed"] += ones
        stats["numel"] += info.numel
        stats["dtypes"][info.name] = info.dtype.name
    return stats


def _global(base: Source, finetuned: Source, infos: list[TensorInfo], k: int) -> Iterator[tuple[TensorInfo, Any]]:
    """Each tensor with its part of the model-wide top ``k``: the threshold key found by radix select."""
    threshold, ties = _threshold(base, finetuned, infos, k)
    for info in infos:
        key = keys(base, finetuned, info)
        chosen = key > threshold
        if ties:
            tied = np.flatnonzero(key == threshold)[:ties]
            chosen[tied] = True
            ties -= tied.size
        yield info, chosen


def _threshold(base: Source, finetuned: Source, infos: list[TensorInfo], k: int) -> tuple[int, int]:
    """(T, t): the k-th largest eligible key T, and how many keys equal to T the top k takes (the first t in
    tensor and index order). (-1, 0) takes every eligible key when there are fewer than k; k = 0 takes none."""
    if k == 0:
        return int(np.iinfo(np.int64).max), 0
    prefix, known, needed = 0, 0, k  # T's top ``known`` bits; how many keys with that prefix are still to take
    while known < 64:
        shift = 64 - known - RADIX_BITS
        histogram = np.zeros(1 << RADIX_BITS, dtype=np.int64)
        for info in infos:
            key = keys(base, finetuned, info)
            key = key[key >= 0] if not known else key[(key >= 0) & ((key >> (64 - known)) == prefix)]
            histogram += np.bincount((key >> shift) & ((1 << RADIX_BITS) - 1), minlength=1 << RADIX_BITS)
        above = np.cumsum(histogram[::-1])  # above[j]: keys in the j + 1 highest buckets
        if above[-1] < needed:  # only on the first pass: fewer eligible keys than k
            return -1, 0
        j = int(np.searchsorted(above, needed))  # the bucket that holds the needed-th largest key
        needed -= int(above[j - 1]) if j else 0
        prefix, known = (prefix << RADIX_BITS) | ((1 << RADIX_BITS) - 1 - j), known + RADIX_BITS
    return prefix, needed
