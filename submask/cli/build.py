"""``submask build``: the update mask of two checkpoints (calls ``submask.build_mask``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..builder import build_mask
from ..builder.criteria import CRITERIA
from ..format.reader import INDEX_SUFFIX, read_index
from ..metadata import CheckpointFile
from ..names import NameMap
from .hub import hub_options
from .names import names_option
from .output import echo_json, format_table, json_option, overwrite_option, percent, progress_option, show_progress

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


if TYPE_CHECKING:  # ParamType is generic in click 8.5's types; older releases cannot subscript it at run time
    _ParamType = click.ParamType[int]
else:
    _ParamType = click.ParamType


class ByteSize(_ParamType):
    """A size such as 2GB, 500MB, 1GiB or 1048576 (bytes)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        unit = match.group(2).upper() if match else None
        if not match or unit not in _UNITS or float(match.group(1)) <= 0:
            self.fail(f"{value!r} is not a size like 2GB, 500MB or 1GiB", param, ctx)
        return int(float(match.group(1)) * _UNITS[unit])


@click.command()
@click.argument("base")
@click.argument("finetuned")
@click.option("-o", "--output", required=True, help="The .smask file to write (checked before the work).")
@click.option("--criterion", type=click.Choice(CRITERIA),
              help="exact (bitwise), atol, rtol, min_abs, or isclose_bf16 (the RL-subnetworks paper's rule: "
                   "torch.isclose(delta, 0, atol=1e-5 or --atol) on a bf16 delta); default: the one whose "
                   "tolerance is given, else exact.")
@click.option("--atol", type=float, help="Absolute tolerance: unchanged iff |w' - w| <= ATOL.")
@click.option("--rtol", type=float, help="Relative tolerance: unchanged iff |w' - w| <= RTOL * max(|w|, |w'|).")
@click.option("--min-abs", type=float, help="Magnitude mask: set iff |w' - w| >= MIN_ABS.")
@click.option("--top-k", help="Magnitude mask: the largest |w' - w| changes, this share (0.05 or 5%) of each tensor "
                              "(or of the model with --global); ties to the lower index.")
@click.option("--global", "global_top_k", is_flag=True, help="--top-k over the whole model instead of per tensor.")
@click.option("--include", multiple=True, help="Only tensors whose names match this glob ('re:...' for a regex); "
                                               "repeatable.")
@click.option("--intersect", is_flag=True, help="Compare only the tensors both checkpoints have alike.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--workers", type=click.IntRange(min=1), help="CPU threads (default: all cores).")
@click.option("--max-shard-size", type=ByteSize(), help="Split the mask into shards of about this size (e.g. 2GB).")
@click.option("--no-ladder", is_flag=True, help="Skip the changed counts at the tolerance ladder 0, 1e-8 ... 1e-4.")
@click.option("--values", is_flag=True, help="Write a delta: also store the changed values and the finetuned files' "
                                             "layout, so that `submask apply BASE DELTA -o DIR` rebuilds them byte "
                                             "for byte (exact criterion only).")
@click.option("--hash", "hash_files", is_flag=True,
              help="Record the SHA-256 of local checkpoint files in the provenance (Hub files carry theirs); the "
                   "build then takes at least as long as hashing them.")
@names_option("both checkpoints (and so of the mask)")
@overwrite_option
@progress_option
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@hub_options("base", "finetuned", bare=True)
def build(base: str, finetuned: str, output: str, criterion: str | None, atol: float | None, rtol: float | None,
          min_abs: float | None, top_k: str | None, global_top_k: bool, include: tuple[str, ...], intersect: bool,
          device: str, workers: int | None, max_shard_size: int | None,
          no_ladder: bool, values: bool, hash_files: bool, names: NameMap | None, overwrite: bool,
          progress: bool | None, as_json: bool, quiet: bool) -> None:
    """Build the update mask of FINETUNED against BASE: a bit is set where a value changed.

    BASE and FINETUNED are .safetensors or torch.save (.bin, .pt) files, model directories of either (sharded
    with an index or not) or Hub models hf://org/name[@revision][/folder] (or org/name[@revision]).
    The density is the fraction of values that changed. With --values the
    output is a delta, shown beside the size of the finetuned checkpoint it rebuilds.
    """
    if global_top_k and top_k is None:
        raise click.UsageError("--global goes with --top-k")
    built = build_mask(base, finetuned, output, criterion=criterion, atol=atol, rtol=rtol, include=include or None,
                      intersect=intersect, device=device, workers=workers, max_shard_bytes=max_shard_size,
                      progress=show_progress(progress, quiet or as_json), ladder=not no_ladder, overwrite=overwrite,
                      values=values, hash=hash_files, names=names, min_abs=min_abs, top_k=top_k,
                      top_k_scope="global" if global_top_k else "tensor")
    stats, path = built.stats, built.path
    numel = stats["numel"]
    ladder = stats.get("ladder", {})
    rungs = [{"atol": tol, "count": count, "density": count / numel if numel else 0.0}
             for tol, count in zip(ladder.get("atol", []), ladder.get("changed", {}).get("__all__", []))]
    summary = {"path": str(path), "tensors": built.tensors, "count": built.count, "numel": numel,
               "density": built.density, "ladder": rungs,
               "skipped": stats.get("skipped", {})}
    if values:
        summary["delta"] = _delta_sizes(built.path, built.metadata.checkpoint)  # type: ignore[arg-type]
        summary["whole"] = stats.get("whole", [])
    if as_json:
        echo_json(summary)
        return
    if quiet:
        return
    click.echo(f"wrote {path}: {summary['tensors']} tensors, {built.count:,} of {numel:,} values changed "
               f"(density {percent(summary['density']):.4g}%)")
    if rungs:
        click.echo(format_table(["atol", "count", "density %"],
                                [["exact" if r["atol"] == 0 else f"{r['atol']:g}", r["count"], percent(r["density"])]
                                 for r in rungs]))
    if values:
        delta, whole = summary["delta"], summary["whole"]
        click.echo(f"delta: {delta['size']:,} bytes for a finetuned checkpoint of {delta['finetuned_size']:,} "
                   f"bytes ({percent(delta['ratio']):.4g}%)" if delta["finetuned_size"] else
                   f"delta: {delta['size']:,} bytes (no checkpoint files recorded)")
        if whole:
            click.echo(f"stored whole (not in the base alike): {len(whole)} tensor(s): {', '.join(whole[:5])}"
                       f"{', ...' if len(whole) > 5 else ''}")
    for kind, skipped in summary["skipped"].items():
        click.echo(f"skipped {len(skipped)} tensor(s), {kind.replace('_', ' ')}: {', '.join(skipped[:5])}"
                   f"{', ...' if len(skipped) > 5 else ''}")


def _delta_sizes(path: Path, checkpoint: list[CheckpointFile] | None) -> dict[str, int | float | None]:
    """The bytes written (a sharded delta: its shards and index) beside the finetuned files it rebuilds."""
    size = path.stat().st_size
    if path.name.endswith(INDEX_SUFFIX):
        size += sum((path.parent / shard).stat().st_size for shard in set(read_index(path)["weight_map"].values()))
    finetuned = sum(file.size for file in checkpoint) if checkpoint else None
    return {"size": size, "finetuned_size": finetuned, "ratio": size / finetuned if finetuned else None}
