"""The streaming build: match tensors, compare them chunk by chunk on worker threads, write tensor by tensor.

Each tensor is cut along its flat (C order) element order into chunks of a multiple of 8 elements, so each
chunk packs to whole bytes at a known offset of the tensor's packed bits. Worker threads read both chunks
(files are memory-mapped, so a hot page cache costs no copy), compare them and pack the bits, then encode
each finished tensor (the compiled kernel, numpy and zstd release the GIL, so all of it overlaps); one more
thread writes the encoded tensors in order while the next ones are compared. Memory holds the chunks in
flight plus the packed bits of the tensors being finished, never a whole checkpoint.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from ..errors import MismatchError
from ..format import MaskMetadata, MaskWriter, model_fingerprint
from ..format.writer import check_mask_target
from ..format.tensors import encode_tensor
from ..mask import Mask, TensorMask
from ..packed import packed_nbytes
from .backends import Backend, select_backend
from .criteria import LADDER_ATOL, Criterion
from .safetensors_file import TensorInfo
from .sources import Source, open_source

MAX_CHUNK_BYTES = 32 * 1024 * 1024
READ_BUDGET_BYTES = 256 * 1024 * 1024  # default bound on chunk bytes in flight (both checkpoints)
PENDING_WRITES = 2  # finished tensors being encoded or waiting for the writer thread
SHOWN = 10  # names listed per kind of mismatch in error messages

Pattern = str | re.Pattern[str]


class _Sink(Protocol):
    """Where finished tensors go: ``prepare`` runs on a worker thread, ``commit`` in order on the writer."""

    def prepare(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int) -> Any: ...

    def commit(self, prepared: Any) -> None: ...


class _MemorySink:
    """Collects tensor masks into an in-memory Mask (the ``out=None`` case)."""

    def __init__(self, metadata: MaskMetadata):
        self.mask = Mask({}, metadata)

    def prepare(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int) -> tuple[str, TensorMask]:
        return name, TensorMask(shape, packed, ones)

    def commit(self, prepared: tuple[str, TensorMask]) -> None:
        self.mask.tensors[prepared[0]] = prepared[1]

    def __enter__(self) -> "_MemorySink":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _FileSink:
    """Encodes on the workers and appends to a MaskWriter."""

    def __init__(self, writer: MaskWriter):
        self.writer = writer

    def prepare(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int) -> Any:
        return encode_tensor(name, shape, packed, ones)

    def commit(self, prepared: Any) -> None:
        self.writer.add_encoded(*prepared)

    def __enter__(self) -> "_FileSink":
        self.writer.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.writer.__exit__(*exc)


@dataclass
class _TensorJob:
    info: TensorInfo
    chunk_bytes: int
    packed: np.ndarray = field(init=False)
    ones: int = 0
    ladder: np.ndarray = field(default_factory=lambda: np.zeros(len(LADDER_ATOL), dtype=np.int64))

    def __post_init__(self) -> None:
        self.packed = np.empty(packed_nbytes(self.info.numel), dtype=np.uint8)

    @property
    def chunks(self) -> list[tuple[int, int]]:
        numel, step = self.info.numel, chunk_elements(self.chunk_bytes, self.info.dtype.itemsize)
        return [(start, min(start + step, numel)) for start in range(0, numel, step)]


def build_mask(base: Any, finetuned: Any, out: str | os.PathLike[str] | None = None, *,
               criterion: str | None = None, atol: float | None = None, rtol: float | None = None,
               include: Pattern | Sequence[Pattern] | None = None, intersect: bool = False,
               device: str | Backend = "auto", workers: int | None = None, chunk_bytes: int | None = None,
               max_shard_bytes: int | None = None, progress: bool = False, ladder: bool = True,
               hub_api: Any = None, cache_dir: str | os.PathLike[str] | None = None,
               overwrite: bool = False) -> Mask | Path:
    """Build the update mask of ``finetuned`` against ``base``: a bit is set where the value changed.

    ``base`` and ``finetuned`` are each a .safetensors file, a model directory, a Hub repo id
    (``org/name[@revision]``), a state dict or an ``nn.Module``. ``criterion`` is "exact" (bitwise), "atol"
    or "rtol" (see ``submask.build.criteria``; by default the one whose tolerance is given, else exact).
    ``include`` keeps tensors whose names match a glob (or a regex written ``"re:..."``), or any of several;
    ``intersect`` compares only the tensors both sides have with equal shape and dtype, instead of raising
    MismatchError. Also records the changed counts at the tolerance ladder ``LADDER_ATOL`` unless ``ladder``
    is False. ``device`` is "auto", "cpu" or "cuda[:N]"; ``workers`` threads (default: CPU count) compare
    chunks of at most ``chunk_bytes`` per checkpoint. ``hub_api`` (an ``HfApi``) and ``cache_dir`` apply to
    Hub repo ids.

    Returns the Mask when ``out`` is None. Otherwise streams it to ``out`` tensor by tensor (atomically: an
    error or Ctrl-C leaves no file), split into shards of ``max_shard_bytes`` if given, and returns the path
    to open: ``out``, or ``out + ".index.json"`` when it was sharded. An existing ``out`` is refused
    (OutputError, before any work) unless ``overwrite``; so is ``out`` naming an input checkpoint.

    >>> mask = build_mask("base/model.safetensors", "rl/model.safetensors", atol=1e-5)   # doctest: +SKIP
    >>> mask.metadata.stats["ladder"]["changed"]["__all__"]                              # doctest: +SKIP
    """
    if out is not None:
        check_mask_target(out, overwrite, inputs=[base, finetuned])
    chosen = Criterion.make(criterion, atol, rtol)
    backend = select_backend(device)
    workers = max(1, workers or os.cpu_count() or 1)
    with open_source(base, api=hub_api, cache_dir=cache_dir) as source_a, \
            open_source(finetuned, api=hub_api, cache_dir=cache_dir) as source_b:
        infos, skipped = match_tensors(source_a, source_b, include, intersect)
        metadata = MaskMetadata(
            kind="update", criterion=chosen.to_json(),
            provenance={"base": source_a.provenance, "finetuned": source_b.provenance},
            model={"fingerprint": model_fingerprint({i.name: i.shape for i in infos}),
                   "dtypes": _dtype_summary(infos)})
        sink = _MemorySink(metadata) if out is None else _FileSink(MaskWriter(
            out, metadata, max_shard_bytes=max_shard_bytes, overwrite=overwrite))
        with sink:
            run = _Run(source_a, source_b, backend, chosen, ladder, workers, chunk_bytes, progress)
            metadata.stats = run.stream(infos, sink)
            metadata.stats["backend"] = backend.name
            if skipped:
                metadata.stats["skipped"] = skipped
    if isinstance(sink, _MemorySink):
        return sink.mask
    return sink.writer.index_path or sink.writer.path


def match_tensors(base: Source, finetuned: Source, include: Pattern | Sequence[Pattern] | None = None,
                  intersect: bool = False) -> tuple[list[TensorInfo], dict[str, list[str]]]:
    """The tensors to compare (in the base's order) and, with ``intersect``, the names left out by kind."""
    keep = _name_filter(include)
    a = {name: info for name, info in base.tensors.items() if keep(name)}
    b = {name: info for name, info in finetuned.tensors.items() if keep(name)}
    if include is not None and not a and not b:
        raise MismatchError(f"--include {include!r} matches no tensor of {base.label} or {finetuned.label}")
    mismatched = [name for name in a if name in b and a[name] != b[name]]
    skipped = {"base_only": [name for name in a if name not in b],
               "finetuned_only": [name for name in b if name not in a], "mismatched": mismatched}
    skipped = {kind: names for kind, names in skipped.items() if names}
    if skipped and not intersect:
        def describe(name: str) -> str:
            if name not in mismatched:
                return name
            return f"{name}: {a[name].dtype.name} {list(a[name].shape)} vs {b[name].dtype.name} {list(b[name].shape)}"

        details = "; ".join(f"{len(names)} {kind.replace('_', ' ')}: {', '.join(map(describe, names[:SHOWN]))}"
                            f"{', ...' if len(names) > SHOWN else ''}" for kind, names in skipped.items())
        raise MismatchError(f"{base.label} (base) and {finetuned.label} (finetuned) do not have the same tensors "
                            f"({details}); pass intersect=True (--intersect) to compare only the tensors both have "
                            "alike, or include= (--include) to pick tensors by name")
    infos = [info for name, info in a.items() if b.get(name) == info]
    if not infos:
        raise MismatchError(f"{base.label} and {finetuned.label} have no tensor in common to compare")
    return infos, skipped


def _name_filter(include: Pattern | Sequence[Pattern] | None) -> Callable[[str], bool]:
    if include is None:
        return lambda name: True
    patterns = [include] if isinstance(include, (str, re.Pattern)) else list(include)
    compiled = [p if isinstance(p, re.Pattern) else re.compile(p[3:]) if p.startswith("re:")
                else re.compile(fnmatch.translate(p)) for p in patterns]
    return lambda name: any(p.search(name) for p in compiled)


def _dtype_summary(infos: list[TensorInfo]) -> dict[str, int]:
    summary: dict[str, int] = {}
    for info in infos:
        summary[info.dtype.name] = summary.get(info.dtype.name, 0) + 1
    return summary


class _Run:
    """One build's threads and counters."""

    def __init__(self, source_a: Source, source_b: Source, backend: Backend, criterion: Criterion, ladder: bool,
                 workers: int, chunk_bytes: int | None, progress: bool):
        self.sources, self.backend, self.criterion, self.ladder = (source_a, source_b), backend, criterion, ladder
        self.workers, self.depth = workers, workers + 1
        self.chunk_bytes = max(8 * 8, chunk_bytes or min(MAX_CHUNK_BYTES, READ_BUDGET_BYTES // (2 * self.depth)))
        self.progress = progress

    def stream(self, infos: list[TensorInfo], sink: _Sink) -> dict[str, Any]:
        """Compare every tensor, hand each finished one to ``sink`` in order, and return the build stats."""
        stats: dict[str, Any] = {"changed": 0, "numel": 0, "dtypes": {}}
        ladders: dict[str, list[int]] = {}
        pending: deque[tuple[_TensorJob, Future, bool]] = deque()
        writes: deque[Future] = deque()
        bar = tqdm(total=2 * sum(i.nbytes for i in infos), unit="B", unit_scale=True, unit_divisor=1024,
                   desc="build", file=sys.stderr, disable=not self.progress, dynamic_ncols=True)
        pool, writer = ThreadPoolExecutor(self.workers, "submask-build"), ThreadPoolExecutor(1, "submask-write")

        def finish(job: _TensorJob) -> None:
            while len(writes) >= PENDING_WRITES:
                writes.popleft().result()
            prepared = pool.submit(sink.prepare, job.info.name, job.info.shape, job.packed, job.ones)
            writes.append(writer.submit(lambda: sink.commit(prepared.result())))
            stats["changed"] += job.ones
            stats["numel"] += job.info.numel
            stats["dtypes"][job.info.name] = job.info.dtype.name
            ladders[job.info.name] = job.ladder.tolist()

        def collect() -> None:
            job, future, last = pending.popleft()
            ones, counts, nbytes = future.result()
            job.ones += ones
            if counts is not None:
                job.ladder += counts
            bar.update(2 * nbytes)
            if last:
                finish(job)

        try:
            for info in infos:
                job = _TensorJob(info, self.chunk_bytes)
                chunks = job.chunks
                if not chunks:
                    finish(job)
                for k, (start, stop) in enumerate(chunks):
                    while len(pending) >= self.depth:
                        collect()
                    pending.append((job, pool.submit(self._compare, job, start, stop), k == len(chunks) - 1))
            while pending:
                collect()
            while writes:
                writes.popleft().result()
        finally:
            bar.close()
            pool.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True, cancel_futures=True)
        if self.ladder:
            total = [sum(counts[k] for counts in ladders.values()) for k in range(len(LADDER_ATOL))]
            stats["ladder"] = {"atol": list(LADDER_ATOL), "changed": {"__all__": total, **ladders}}
        return stats

    def _compare(self, job: _TensorJob, start: int, stop: int) -> tuple[int, list[int] | None, int]:
        """Worker: view one chunk of both sides, compare, and place its packed bits; returns counts."""
        name, dtype = job.info.name, job.info.dtype
        a, b = (source.view(name, start, stop) for source in self.sources)
        result = self.backend.compare(a, b, dtype, self.criterion, self.ladder)
        job.packed[start // 8: start // 8 + result.packed.size] = result.packed
        return result.ones, result.ladder, (stop - start) * dtype.itemsize


def chunk_elements(chunk_bytes: int, itemsize: int) -> int:
    """Elements per chunk: as many as fit in ``chunk_bytes``, a multiple of 8 so chunks pack to whole bytes."""
    return max(8, chunk_bytes // itemsize // 8 * 8)
