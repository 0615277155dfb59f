"""``submask stats``, ``compare`` and ``combine``."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import click

from ..algebra import BINARY_OPS
from ..breakdown import GROUP_BY, density_breakdown
from ..compare import compare
from ..names import NameMap
from .hub import hub_options
from .names import names_option
from .output import (
    echo_json,
    format_table,
    json_option,
    overwrite_option,
    percent,
    progress_option,
    quiet_option,
    show_progress,
)

_common = click.option("--common", is_flag=True, help="Use only the tensors all masks have (else they must match).")
_no_verify = click.option("--no-verify", "no_verify", is_flag=True,
                          help="Skip the CRC-32 of each tensor (faster; counts and structure are still checked).")

# (column title, PairStats attribute) of the compare table; --json and --csv give every field
_PAIR_COLUMNS = (("|A and B|", "intersection"), ("A->B", "overlap_a"), ("B->A", "overlap_b"), ("Jaccard", "jaccard"),
                 ("x chance (stratified)", "jaccard_ratio"), ("x chance (global)", "global_jaccard_ratio"))
_PAIR_LEGEND = ("A->B: overlap |A and B| / |A|.  x chance (stratified): Jaccard / its chance value when each mask\n"
                "keeps its own count in every tensor.  x chance (global): Jaccard / its chance value at the\n"
                "whole-model densities (the paper's baseline).  --json or --csv give every value: chance_* fields\n"
                "are stratified, global_chance_* model-wide.")


@click.command()
@click.argument("path")
@click.option("--by", type=click.Choice(["layer", "module", "tensor"]), default="layer", show_default=True,
              help="Group densities by layer index, module type or tensor.")
@json_option
@hub_options("path")
@quiet_option
def stats(path: str, by: str, as_json: bool, quiet: bool) -> None:
    """Density (share of elements set) of a mask overall and per layer, module type or tensor (reads the header)."""
    groups = density_breakdown(path, by)
    if as_json:
        echo_json({"path": path, "by": by, "groups": {g: {"count": c.count, "numel": c.numel, "density": c.density}
                                                      for g, c in groups.items()}})
        return
    if quiet:
        return
    click.echo(format_table([by, "count", "numel", "density %"],
                            [[group, c.count, c.numel, percent(c.density)] for group, c in groups.items()]))


@click.command(name="compare")
@click.argument("paths", nargs=-1, required=True)
@click.option("--by", type=click.Choice(GROUP_BY), default="overall", show_default=True,
              help="Also break the comparison down by tensor, layer or module type.")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per pair and group (densities as fractions).")
@_common
@_no_verify
@names_option("every mask")
@progress_option
@quiet_option
@hub_options("paths")
def compare_command(paths: tuple[str, ...], by: str, as_json: bool, as_csv: bool, common: bool, no_verify: bool,
                    names: NameMap | None, progress: bool | None, quiet: bool) -> None:
    """Overlap and Jaccard of every pair of masks, against the values chance would give at their densities.

    overlap A->B is |A and B| / |A| (the share of A also in B). Each ratio names its baseline: "stratified"
    chance keeps each mask's count in every tensor (the chance_* fields of --json and --csv); "global" chance
    uses the whole-model densities, as the RL-subnetworks paper does (the global_chance_* fields).
    """
    if len(paths) < 2:
        raise click.UsageError("compare needs at least two masks")
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other: choose one")
    result = compare(list(paths), by=by, common=common, progress=show_progress(progress, quiet),
                     verify=not no_verify, names=names)
    rows = [(group, result.labels[i], result.labels[j], result.pair(i, j, group))
            for group in result.groups for i, j in result.pairs()]
    if quiet and not as_json:
        return
    if as_json:
        echo_json({"masks": result.labels, "by": by, "pairs": [{"group": g, "a": a, "b": b, **_defined(s.as_dict())}
                                                               for g, a, b, s in rows]})
    elif as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        fields = list(rows[0][3].as_dict()) if rows else []
        writer.writerow(["group", "a", "b", *fields])
        writer.writerows([g, a, b, *s.as_dict().values()] for g, a, b, s in rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        shown = short_labels(result.labels)
        grouped = ["group"] if by != "overall" else []
        click.echo(format_table([*grouped, "A", "B", *(title for title, _ in _PAIR_COLUMNS)],
                                [[*([g] if grouped else []), shown[a], shown[b],
                                  *(getattr(s, attr) for _, attr in _PAIR_COLUMNS)] for g, a, b, s in rows]))
        click.echo(_PAIR_LEGEND)


def short_labels(labels: list[str]) -> dict[str, str]:
    """File names for the table when they tell the masks apart, else the paths as given."""
    names = {label: Path(label).name for label in labels}
    return names if len(set(names.values())) == len(names) else {label: label for label in labels}


def _defined(values: dict[str, float | int]) -> dict[str, float | int | None]:
    """JSON has no nan: undefined ratios (0/0) become null."""
    return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in values.items()}


@click.command()
@click.argument("op", type=click.Choice([*BINARY_OPS, "not", "vote"]))
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Path of the combined mask to write.")
@click.option("--at-least", type=click.IntRange(min=1), metavar="K",
              help="vote: set a bit where at least K of the masks set it (1: union, all: intersection).")
@_common
@names_option("every input mask (and so of the result)")
@overwrite_option
@progress_option
@json_option
@quiet_option
@hub_options("inputs")
def combine(op: str, inputs: tuple[str, ...], output: str, at_least: int | None, common: bool, names: NameMap | None,
            overwrite: bool, progress: bool | None, as_json: bool, quiet: bool) -> None:
    """Combine masks tensor by tensor: and, or, xor, diff (first minus the others), not (of one mask), vote
    (--at-least K of the masks: a consensus mask).

    The result records the operation and its inputs (path, fingerprint, provenance) in its metadata.
    """
    from ..combine import combine_files  # here: compare and stats need none of it

    built = combine_files(op, list(inputs), output, common=common, progress=show_progress(progress, quiet or as_json),
                          overwrite=overwrite, names=names, at_least=at_least)
    path, count, numel, tensors, density = built.path, built.count, built.numel, built.tensors, built.density
    if as_json:
        echo_json({"path": str(path), "op": op, "inputs": list(inputs), "tensors": tensors, "count": count,
                   "numel": numel, "density": density})
    elif not quiet:
        click.echo(f"wrote {path}: {tensors} tensors, {count:,} of {numel:,} set (density {percent(density):.4g}%)")
