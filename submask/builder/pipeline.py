"""Builds from two checkpoints: open them, match their tensors, stream them through a ``run.Run`` into a
mask, a delta or counts (``build_mask``, ``count_changes``).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..align import mismatch
from ..built import BuiltMask, ChangeCounts
from ..checkpoints.safetensors_file import TensorInfo
from ..checkpoints.sources import RenamedSource, Source, open_source
from ..delta import Delta
from ..errors import MismatchError, UsageError
from ..format import MaskWriter
from ..format.writer import check_mask_target
from ..metadata import MaskMetadata, model_fingerprint
from ..names import Names
from .backends import Backend, select_backend
from .criteria import Criterion
from .magnitude import criterion_json, parse_fraction, stream_top_k
from .run import Run
from .sinks import CountsSink, FileSink, MemorySink
from .values import check_values_build, delta_tensors, record_checkpoint

Pattern = str | re.Pattern[str]


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
            run = Run(source_a, source_b, backend, chosen, ladder, workers, chunk_bytes, progress)
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
        run = Run(source_a, source_b, backend, chosen, ladder, workers, chunk_bytes, progress=False, bits=False)
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
