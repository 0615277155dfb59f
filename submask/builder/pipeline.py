"""The streaming build: match tensors, compare them chunk by chunk on worker threads, write tensor by tensor.

Each tensor is cut along its flat (C order) element order into chunks of a multiple of 8 elements, so each
chunk packs to whole bytes at a known offset of the tensor's packed bits. Worker threads read both chunks
into per-thread buffers (files are never memory-mapped, see ``safetensors_file``; tensors already on a
torch device stay there), compare them and pack the bits, then encode each finished tensor (the compiled
kernel, numpy and zstd release the GIL, so all of it overlaps); one more thread writes the encoded tensors
in order while the next ones are compared. Memory holds the chunks in flight plus the packed bits of the
tensors being finished (2 of them, or more within PENDING_BYTES), never a whole checkpoint (a build with
values also holds each tensor's changed values until it is written: ``values``; the writer, the payloads
up to ``format.writer.SPILL_BYTES``). Each checkpoint file is checked for changes between tensors (at most
every CHECK_SECONDS) and before the mask is committed, so a build never returns a mask of a file rewritten
meanwhile.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..align import mismatch
from ..built import BuiltMask, ChangeCounts
from ..checkpoints.dtypes import DTYPES, DType
from ..checkpoints.safetensors_file import TensorInfo
from ..checkpoints.sources import RenamedSource, Source, open_source
from ..delta import Delta
from ..errors import MismatchError, UsageError
from ..format import MaskWriter
from ..format.diffs import Differences
from ..format.values import TensorValues
from ..format.writer import check_mask_target
from ..metadata import MaskMetadata, model_fingerprint
from ..names import Names
from ..packed import clear_padding, packed_nbytes
from ..workers import Tasks, thread_pool
from .backends import Backend, select_backend
from .criteria import LADDER_ATOL, Criterion
from .magnitude import criterion_json, parse_fraction, stream_top_k
from .sinks import CountsSink, FileSink, MemorySink, Sink
from .values import (
    check_values_build,
    chunk_differences,
    chunk_values,
    delta_tensors,
    record_checkpoint,
    takes_differences,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

MAX_CHUNK_BYTES = 4 * 1024 * 1024  # per side: read into a buffer, a chunk is compared while still in cache
# Checkpoints read on the CPU too small to give each worker CHUNKS_PER_WORKER chunks get smaller ones, down to
# MIN_CHUNK_BYTES: the workers then start and finish together (at 2 x 18 MB, 8 chunks of up to 4 MiB for 2
# workers left one idle for much of a build: ~0.8x the speed of 1 MiB chunks with the ladder)
CHUNKS_PER_WORKER = 8
MIN_CHUNK_BYTES = 1024 * 1024
READ_BUDGET_BYTES = 256 * 1024 * 1024  # default bound on chunk bytes in flight (both checkpoints)
# Both sides already on a torch device: nothing is read into host memory, and larger chunks on fewer threads
# amortise each chunk's kernel launches and the copy back of its counts.
DEVICE_CHUNK_BYTES = 256 * 1024 * 1024
DEVICE_WORKERS = 4
# Finished tensors being encoded or waiting for the writer thread: up to PENDING_WRITES of them, more while
# their bits and values take at most PENDING_BYTES (a large tensor's encoding then never stalls the compares
# of the small ones after it).
PENDING_WRITES = 2
PENDING_BYTES = 128 * 1024 * 1024
# Between tensors the checkpoint files are checked for changes at most this often (the check before the mask is
# committed is always made): a check stats every file, ~4 syscalls of ~30 us here, once per tensor cost a build of
# 72 tensors ~13 ms of the thread that hands out the chunks
CHECK_SECONDS = 0.02
FLOAT64 = DTYPES["F64"]

Pattern = str | re.Pattern[str]


@dataclass
class _TensorJob:
    info: TensorInfo  # the base's tensor (the finetuned one when ``whole``)
    finetuned_dtype: DType  # the base's dtype, or another float dtype (compared by value)
    chunk_bytes: int
    values: bool = False  # keep the changed values, chunk by chunk (``pieces``, in chunk order)
    whole: bool = False  # every element is stored: the finetuned side alone is read
    coded: bool = False  # values kept as differences (``pieces``; ``base_pieces``: their keys), see ``values``
    bits: bool = True  # keep the packed bits (False: counts only, ``count_changes``)
    packed: np.ndarray = field(init=False)
    pieces: list[np.ndarray | None] = field(init=False)
    base_pieces: list[np.ndarray | None] = field(init=False)  # the base's values there (not when ``whole``)
    ones: int = 0
    ladder: np.ndarray = field(default_factory=lambda: np.zeros(len(LADDER_ATOL), dtype=np.int64))

    def __post_init__(self) -> None:
        self.packed = np.empty(packed_nbytes(self.info.numel) if self.bits else 0, dtype=np.uint8)
        if self.whole:
            self.packed.fill(0xFF)
            clear_padding(self.packed, self.info.numel)
        self.pieces = [None] * len(self.chunks) if self.values else []
        self.base_pieces = [None] * len(self.chunks) if self.values and not self.whole else []

    def take_values(self) -> TensorValues | Differences | None:
        """The tensor's value bytes, joined from its chunks, or its differences (the chunks are released)."""
        if not self.values:
            return None
        values: TensorValues | Differences
        if self.coded:
            pieces, keys = cast(list[np.ndarray], self.pieces), cast(list[np.ndarray], self.base_pieces)
            values = Differences(self.finetuned_dtype.name, pieces, keys)
        else:
            values = TensorValues(self.finetuned_dtype.name, _joined(self.pieces),
                                  _joined(self.base_pieces) if self.base_pieces else None)
        self.pieces, self.base_pieces = [], []
        return values

    def held_bytes(self) -> int:
        """What the tensor holds until it is written: its packed bits and the values taken."""
        return self.packed.nbytes + sum(piece.nbytes for pieces in (self.pieces, self.base_pieces)
                                        for piece in pieces if piece is not None)

    @property
    def chunks(self) -> list[tuple[int, int]]:
        itemsize = max(self.info.dtype.itemsize, self.finetuned_dtype.itemsize)
        numel, step = self.info.numel, chunk_elements(self.chunk_bytes, itemsize)
        return [(start, min(start + step, numel)) for start in range(0, numel, step)]


def _joined(pieces: list[Any]) -> np.ndarray:
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces or [np.empty(0, np.uint8)])


def build_mask(base: Any, finetuned: Any, out: str | os.PathLike[str] | None = None, *,
               criterion: str | None = None, atol: float | None = None, rtol: float | None = None,
               include: Pattern | Sequence[Pattern] | None = None, intersect: bool = False,
               device: str | Backend = "auto", workers: int | None = None, chunk_bytes: int | None = None,
               max_shard_bytes: int | None = None, progress: bool = False, ladder: bool = True,
               hub_api: Any = None, cache_dir: str | os.PathLike[str] | None = None,
               hash: bool = False, overwrite: bool = False, values: bool = False,
               names: Names | None = None, min_abs: float | None = None, top_k: float | str | None = None,
               top_k_scope: str = "tensor") -> BuiltMask:
    """Build the update mask of ``finetuned`` against ``base``: a bit is set where the value changed.

    ``base`` and ``finetuned`` are each a .safetensors file, a model directory, a Hub repo id
    (``org/name[@revision]``), a state dict or an ``nn.Module``. ``criterion`` is "exact" (bitwise), "atol"
    or "rtol" (see ``submask.builder.criteria``; by default the one whose tolerance is given, else exact).
    ``include`` keeps tensors whose names match a glob (or a regex written ``"re:..."``), or any of several;
    ``intersect`` compares only the tensors both sides have with equal shape and comparable dtypes, instead of
    raising MismatchError. Tensors stored in two float dtypes (a bf16 base, an fp32 finetune) are compared by
    value: both are widened to float64 (exactly), "exact" means the same float64 value (same bits: ``+0.0``
    vs ``-0.0`` is changed; every NaN is one value, so NaN vs NaN is unchanged) and the tolerances apply as
    defined; the metadata records it (``criterion["cross_dtype"]``, and ``stats["cross_dtype"]`` per tensor). Also
    records the changed counts at the tolerance ladder ``LADDER_ATOL`` unless ``ladder`` is False.

    ``device`` is "auto", "cpu", "cuda[:N]" or a Backend. "auto" compares state dicts and modules whose
    tensors live on a GPU (or another torch device) there, with no copy to the host but the packed bits,
    mixed placements included; everything else, files included, on the CPU, which is faster for files
    (``submask.builder.backends`` says why). The backend used is recorded as ``stats["backend"]``.
    ``workers`` threads (default: CPU count) compare chunks of at most ``chunk_bytes`` per checkpoint.
    ``hub_api`` (an ``HfApi``) and ``cache_dir`` apply to Hub repo ids. With ``hash``, local checkpoint files
    are hashed (SHA-256, recorded in the provenance beside size and mtime; Hub files carry their LFS
    SHA-256 anyway) on one more thread while the build reads them, before the final check that they did
    not change: the build then takes at least as long as hashing the files.

    With ``values`` the result is a delta: each tensor also stores the finetuned values where its mask is set
    (taken in the same pass), tensors the base lacks or holds in another dtype or shape are stored whole
    (``stats["whole"]``), and when ``finetuned`` is a file, directory or Hub repo its files' layout and
    SHA-256 are recorded (local files are hashed as with ``hash``), so that ``apply_mask(base, delta, out)``
    rebuilds them byte for byte. Needs the exact criterion and every tensor (no ``include``).

    Masks for merging: ``min_abs`` sets the bits where ``|w' - w| >= min_abs`` (criterion "min_abs");
    ``top_k`` (a fraction such as 0.05 or "5%") sets the largest ``|w' - w|`` changes, that share of each
    tensor (``top_k_scope="tensor"``) or of the whole model (``"global"``), ties broken by position
    (``submask.builder.magnitude`` gives the rules, also recorded in the criterion). ``criterion=
    "isclose_bf16"`` applies the RL-subnetworks paper's rule (``submask.builder.criteria``).

    ``names`` (``submask.names.NameMap``) maps both checkpoints' tensor names to the mask's (a DDP or PEFT
    checkpoint beside a plain one); ``include`` sees the mapped names. Not with ``values`` (a delta rebuilds
    files under the names they hold).

    Returns a ``BuiltMask`` with the metadata (stats included) and counts, and the mask itself (``.mask``; with
    ``values`` also ``.delta``) when ``out`` is None. Otherwise the mask is streamed to ``out`` tensor by
    tensor (atomically: an error or Ctrl-C leaves no file), split into shards of ``max_shard_bytes`` if given,
    and ``.path`` is the file to open:
    ``out``, or ``out + ".index.json"`` when it was sharded. An existing ``out`` is refused
    (OutputError, before any work) unless ``overwrite``; so is ``out`` naming an input checkpoint.

    >>> built = build_mask("base/model.safetensors", "rl/model.safetensors", atol=1e-5)  # doctest: +SKIP
    >>> built.stats["ladder"]["changed"]["__all__"], built.mask["lm_head.weight"]        # doctest: +SKIP
    """
    if out is not None:
        check_mask_target(out, overwrite, inputs=[base, finetuned])
    chosen = Criterion.make(criterion, atol, rtol, min_abs)
    fraction = None if top_k is None else parse_fraction(top_k)
    if fraction is not None and (values or chosen.name != "exact"):
        raise UsageError("top_k (--top-k) is a criterion of its own: drop criterion, atol, rtol, min_abs and values")
    if values:
        check_values_build(chosen, include, names)
    with _opened(base, finetuned, device, hub_api, cache_dir, names) as (source_a, source_b, backend):
        if values:
            infos, whole, skipped = delta_tensors(source_a, source_b)
        else:
            (infos, skipped), whole = match_tensors(source_a, source_b, include, intersect), []
        metadata = MaskMetadata(
            kind="update", criterion=criterion_json(fraction, top_k_scope) if fraction else chosen.to_json(),
            provenance={"base": source_a.provenance, "finetuned": source_b.provenance},
            model={"fingerprint": model_fingerprint({i.name: i.shape for i in infos}),
                   "dtypes": _dtype_summary(infos)})
        sink = MemorySink(metadata) if out is None else FileSink(MaskWriter(
            out, metadata, max_shard_bytes=max_shard_bytes, overwrite=overwrite))
        from concurrent.futures import ThreadPoolExecutor  # here: it imports logging, 15 ms of every command line

        with sink, ThreadPoolExecutor(1, "submask-hash") as hasher:
            hashed = [hasher.submit(source.hash_files) for source in (source_a, source_b)
                      if hash or (values and source is source_b)]
            run = _Run(source_a, source_b, backend, chosen, ladder, workers, chunk_bytes, progress)
            if fraction is None:
                metadata.stats = run.stream(infos, sink, whole if values else None)
            else:
                metadata.stats = stream_top_k(source_a, source_b, infos, fraction, top_k_scope, sink)
            for future in hashed:
                future.result()
            if values:
                metadata.checkpoint = record_checkpoint(source_b)
                metadata.stats["whole"] = whole
            run.check_unchanged()  # before the mask is committed: never a mask of a changed file
            metadata.stats["backend"] = backend.name
            if "cross_dtype" in metadata.stats:
                assert metadata.criterion is not None  # set when the metadata was made, above
                metadata.criterion["cross_dtype"] = "float64 values"
            if skipped:
                metadata.stats["skipped"] = skipped
    counts = {"metadata": metadata, "tensors": len(infos), "count": metadata.stats["changed"],
              "numel": metadata.stats["numel"]}
    if isinstance(sink, MemorySink):
        delta = Delta(sink.mask, sink.values, metadata.checkpoint) if values else None
        return BuiltMask(mask=sink.mask, delta=delta, **counts)
    return BuiltMask(path=sink.writer.index_path or sink.writer.path, **counts)


def count_changes(base: Any, finetuned: Any, *, criterion: str | None = None, atol: float | None = None,
                  rtol: float | None = None, include: Pattern | Sequence[Pattern] | None = None,
                  intersect: bool = False, device: str | Backend = "auto", workers: int | None = None,
                  chunk_bytes: int | None = None, ladder: bool = True,
                  names: Names | None = None) -> ChangeCounts:
    """What ``build_mask(base, finetuned)`` would count, without the mask: per tensor, the elements and the
    changed ones, and (with ``ladder``) the changed ones at each tolerance of ``LADDER_ATOL``. No bits are
    kept, nor copied back from a GPU (``UpdateTracker.density`` calls this during training). Arguments as
    ``build_mask``'s (``names`` included).
    """
    chosen = Criterion.make(criterion, atol, rtol)
    with _opened(base, finetuned, device, names=names) as (source_a, source_b, backend):
        infos, _ = match_tensors(source_a, source_b, include, intersect)
        run = _Run(source_a, source_b, backend, chosen, ladder, workers, chunk_bytes, progress=False, bits=False)
        sink = CountsSink()
        stats = run.stream(infos, sink)
        run.check_unchanged()
    ladders = stats["ladder"]["changed"] if ladder else None
    return ChangeCounts(numel={info.name: info.numel for info in infos}, changed=sink.changed,
                        ladder={info.name: ladders[info.name] for info in infos} if ladders else None,
                        backend=backend.name)


@contextmanager
def _opened(base: Any, finetuned: Any, device: str | Backend, hub_api: Any = None,
            cache_dir: str | os.PathLike[str] | None = None,
            names: Names | None = None) -> Iterator[tuple[Source, Source, Backend]]:
    """Both checkpoints opened (under the names ``names`` gives them), and the backend that compares them."""
    with open_source(base, api=hub_api, cache_dir=cache_dir) as source_a, \
            open_source(finetuned, api=hub_api, cache_dir=cache_dir) as source_b:
        if names is not None:
            source_a, source_b = RenamedSource(source_a, names), RenamedSource(source_b, names)
        yield source_a, source_b, select_backend(device, source_b.resident or source_a.resident)


def match_tensors(base: Source, finetuned: Source, include: Pattern | Sequence[Pattern] | None = None,
                  intersect: bool = False) -> tuple[list[TensorInfo], dict[str, list[str]]]:
    """The tensors to compare (in the base's order) and, with ``intersect``, the names left out by kind."""
    keep = _name_filter(include)
    a = {name: info for name, info in base.tensors.items() if keep(name)}
    b = {name: info for name, info in finetuned.tensors.items() if keep(name)}
    if include is not None and not a and not b:
        raise MismatchError(f"--include {include!r} matches no tensor of {base.label} or {finetuned.label}")
    mismatched = [name for name in a if name in b and not comparable(a[name], b[name])]
    skipped = {"base_only": [name for name in a if name not in b],
               "finetuned_only": [name for name in b if name not in a], "mismatched": mismatched}
    skipped = {kind: names for kind, names in skipped.items() if names}
    if skipped and not intersect:
        raise mismatch(f"{base.label} (base)", f"{finetuned.label} (finetuned)",
                       "Pass intersect=True (--intersect) to compare only the tensors both have alike, or include= "
                       "(--include) to pick tensors by name.", only_left=skipped.get("base_only", []),
                       only_right=skipped.get("finetuned_only", []),
                       different=[f"{name} {a[name].dtype.name} {list(a[name].shape)} vs {b[name].dtype.name} "
                                  f"{list(b[name].shape)}" for name in mismatched])
    infos = [info for name, info in a.items() if name in b and comparable(info, b[name])]
    if not infos:
        raise MismatchError(f"{base.label} and {finetuned.label} have no tensor in common to compare")
    return infos, skipped


def comparable(base: TensorInfo, finetuned: TensorInfo) -> bool:
    """Same name and shape, and the same dtype or two float dtypes (compared by value)."""
    return base.name == finetuned.name and base.shape == finetuned.shape and (
        base.dtype == finetuned.dtype or base.dtype.kind == finetuned.dtype.kind == "float")


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
                 workers: int | None, chunk_bytes: int | None, progress: bool, bits: bool = True):
        self.sources, self.backend, self.criterion, self.ladder = (source_a, source_b), backend, criterion, ladder
        self.bits = bits  # False: counts only, no packed bits kept
        workers = max(1, workers or os.cpu_count() or 1)
        on_device = backend.takes_tensors and source_a.resident is not None and source_b.resident is not None
        if on_device:
            workers = min(workers, DEVICE_WORKERS)
        self.workers, self.depth = workers, workers + 1
        self.chunk_bytes = max(8 * 8, chunk_bytes or (DEVICE_CHUNK_BYTES if on_device else
                                                      min(MAX_CHUNK_BYTES, READ_BUDGET_BYTES // (2 * self.depth))))
        self.fit_chunks = chunk_bytes is None and not backend.takes_tensors  # ``_fit_chunks``
        self.progress = progress
        self._buffers = threading.local()

    def stream(self, infos: list[TensorInfo], sink: Sink, whole: list[str] | None = None) -> dict[str, Any]:
        """Compare every tensor, hand each finished one to ``sink`` in order, and return the build stats.

        With ``whole`` (the names stored whole) each tensor's changed values go to the sink too.
        """
        self._fit_chunks(sum(info.nbytes for info in infos))
        stats: dict[str, Any] = {"changed": 0, "numel": 0, "dtypes": {}}
        ladders: dict[str, list[int]] = {}
        pending: deque[tuple[_TensorJob, Future[tuple[int, list[int] | None, int]], bool]] = deque()
        writes: deque[tuple[Future[None], int]] = deque()  # and the bytes each holds
        finetuned, stored_whole = self.sources[1].tensors, set(whole or ())
        bar = _progress_bar(sum(i.numel * finetuned[i.name].dtype.itemsize + (0 if i.name in stored_whole else i.nbytes)
                                for i in infos)) if self.progress else _NoBar()
        # kept threads: starting them cost a small build ~1.5 ms of CPU (~5% at 2 x 18 MB)
        pool, writer, tasks = thread_pool(self.workers, "build"), thread_pool(1, "write"), Tasks()
        checked = time.monotonic()

        def finish(job: _TensorJob) -> None:
            nonlocal checked
            if time.monotonic() - checked >= CHECK_SECONDS:  # fail early, between tensors, once a file is rewritten
                self.check_unchanged()
                checked = time.monotonic()
            held = job.held_bytes()
            while len(writes) >= PENDING_WRITES and sum(nbytes for _, nbytes in writes) + held > PENDING_BYTES:
                writes.popleft()[0].result()
            if sink.inline:  # nothing to encode: no hand-off to the threads
                sink.commit(sink.prepare(job.info.name, job.info.shape, job.packed, job.ones, job.take_values()))
            else:
                prepared = tasks.submit(pool, sink.prepare, job.info.name, job.info.shape, job.packed, job.ones,
                                        job.take_values())
                writes.append((tasks.submit(writer, lambda: sink.commit(prepared.result())), held))
            stats["changed"] += job.ones
            stats["numel"] += job.info.numel
            stats["dtypes"][job.info.name] = job.info.dtype.name
            if job.finetuned_dtype != job.info.dtype:
                stats.setdefault("cross_dtype", {})[job.info.name] = [job.info.dtype.name, job.finetuned_dtype.name]
            ladders[job.info.name] = job.ladder.tolist()

        def collect() -> None:
            job, future, last = pending.popleft()
            ones, counts, nbytes = future.result()
            job.ones += ones
            if counts is not None:
                job.ladder += counts
            bar.update(nbytes)
            if last:
                finish(job)

        try:
            for info in infos:
                job = _TensorJob(info, finetuned[info.name].dtype, self.chunk_bytes, values=whole is not None,
                                 whole=info.name in stored_whole, bits=self.bits)
                job.coded = job.values and not job.whole and sink.takes_differences \
                    and not self.backend.takes_tensors and takes_differences(info.dtype)
                chunks = job.chunks
                if not chunks:
                    finish(job)
                for k, (start, stop) in enumerate(chunks):
                    while len(pending) >= self.depth:
                        collect()
                    pending.append((job, tasks.submit(pool, self._compare, job, k, start, stop), k == len(chunks) - 1))
            while pending:
                collect()
            while writes:
                writes.popleft()[0].result()
        finally:
            bar.close()
            tasks.settle()
        if self.ladder:
            total = [sum(counts[k] for counts in ladders.values()) for k in range(len(LADDER_ATOL))]
            stats["ladder"] = {"atol": list(LADDER_ATOL), "changed": {"__all__": total, **ladders}}
        return stats

    def _fit_chunks(self, nbytes: int) -> None:
        """Halve the default chunks of a CPU build of ``nbytes`` (a side) until each worker gets CHUNKS_PER_WORKER
        of them, down to MIN_CHUNK_BYTES, and hand out twice as many at a time (the same bytes): a worker then
        waits less for the thread that hands them out."""
        while self.fit_chunks and self.chunk_bytes // 2 >= MIN_CHUNK_BYTES \
                and nbytes < CHUNKS_PER_WORKER * self.workers * self.chunk_bytes:
            self.chunk_bytes //= 2
            self.depth *= 2

    def _compare(self, job: _TensorJob, k: int, start: int, stop: int) -> tuple[int, list[int] | None, int]:
        """Worker: read chunk ``k`` of both sides, compare, and place its packed bits (and values); returns
        counts. A tensor stored whole reads its finetuned side only: every element counts as changed."""
        if job.whole:
            job.pieces[k] = chunk_values(self._read(1, job.info.name, start, stop), None)
            count = stop - start
            return count, [count] * len(LADDER_ATOL) if self.ladder else None, count * job.info.dtype.itemsize
        a, b = (self._read(side, job.info.name, start, stop) for side in range(2))
        base, dtype = a, job.info.dtype
        if job.finetuned_dtype != dtype:  # by value: float64 bits are equal iff the values are the same
            a, b, dtype = self.backend.widen(a, dtype), self.backend.widen(b, job.finetuned_dtype), FLOAT64
        result = self.backend.compare(a, b, dtype, self.criterion, self.ladder, bits=job.bits)
        if job.bits:
            packed = cast(np.ndarray, result.packed)  # compare gives packed bits when asked for them (bits=True)
            job.packed[start // 8: start // 8 + packed.size] = packed
        if job.coded:  # the same dtype on both sides: a delta stores a tensor whole when its dtype changed
            job.pieces[k], job.base_pieces[k] = chunk_differences(base, b, cast(np.ndarray, result.packed), dtype,
                                                                  self._buffers)
        elif job.values:
            job.pieces[k] = chunk_values(b, result.packed)
            job.base_pieces[k] = chunk_values(base, result.packed)
        return result.ones, result.ladder, (stop - start) * (job.info.dtype.itemsize + job.finetuned_dtype.itemsize)

    def check_unchanged(self) -> None:
        """Raise SourceError if either checkpoint changed since it was opened."""
        for source in self.sources:
            source.check_unchanged()

    def _read(self, side: int, name: str, start: int, stop: int) -> Any:
        """A chunk of side 0 (base) or 1: a torch view where the backend takes them (tensors stay on their
        device), else numpy, read into this thread's staging buffer for that side (made on first use)."""
        source = self.sources[side]
        chunk = source.read_tensor(name, start, stop) if self.backend.takes_tensors else None
        if chunk is not None:
            return chunk
        buffers = getattr(self._buffers, "by_side", None)
        if buffers is None:
            buffers = self._buffers.by_side = [None, None]
        if buffers[side] is None:
            buffers[side] = self.backend.staging(self.chunk_bytes)
        return source.read(name, start, stop, buffers[side])


class _NoBar:
    """What a build without ``progress`` updates: nothing (a disabled tqdm still costs ~2 ms a build)."""

    def update(self, nbytes: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm  # here, not at import: every command line would pay for it

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="build", file=sys.stderr,
                dynamic_ncols=True)


def chunk_elements(chunk_bytes: int, itemsize: int) -> int:
    """Elements per chunk: as many as fit in ``chunk_bytes``, a multiple of 8 so chunks pack to whole bytes."""
    return max(8, chunk_bytes // itemsize // 8 * 8)
