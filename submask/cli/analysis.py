"""``submask stats``, ``compare``, ``combine`` and ``plot``."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import click

from .. import open as open_mask
from ..algebra import BINARY_OPS
from ..breakdown import GROUP_BY
from ..compare import combine_files, compare, density_breakdown
from .output import echo_json, format_table
from .root import main

_quiet = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
_common = click.option("--common", is_flag=True, help="Use only the tensors all masks have (else they must match).")
_no_verify = click.option("--no-verify", "no_verify", is_flag=True,
                          help="Skip the CRC-32 of each tensor (faster; counts and structure are still checked).")

# (column title, PairStats attribute) of the compare table
_PAIR_COLUMNS = (("|A|", "count_a"), ("|B|", "count_b"), ("|A and B|", "intersection"), ("overlap A->B", "overlap_a"),
                 ("overlap B->A", "overlap_b"), ("Jaccard", "jaccard"), ("chance Jaccard", "chance_jaccard"),
                 ("ratio", "jaccard_ratio"), ("stratified chance", "stratified_chance_jaccard"))


@main.command()
@click.argument("path")
@click.option("--by", type=click.Choice(["layer", "module", "tensor"]), default="layer", show_default=True,
              help="Group densities by layer index, module type or tensor.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def stats(path: str, by: str, as_json: bool) -> None:
    """Density of a mask overall and per layer, module type or tensor (reads the header only)."""
    groups = density_breakdown(path, by)
    if as_json:
        echo_json({"path": path, "by": by, "groups": {g: {"count": c.count, "numel": c.numel, "density": c.density}
                                                      for g, c in groups.items()}})
        return
    click.echo(format_table([by if by != "tensor" else "tensor", "count", "numel", "density"],
                            [[group, c.count, c.numel, c.density] for group, c in groups.items()]))


@main.command(name="compare")
@click.argument("paths", nargs=-1, required=True)
@click.option("--by", type=click.Choice(GROUP_BY), default="overall", show_default=True,
              help="Also break the comparison down by tensor, layer or module type.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per pair and group.")
@_common
@_no_verify
@_quiet
def compare_command(paths: tuple[str, ...], by: str, as_json: bool, as_csv: bool, common: bool, no_verify: bool,
                    quiet: bool) -> None:
    """Overlap and Jaccard of every pair of masks, beside the values chance would give at their densities.

    overlap A->B is |A and B| / |A| (the share of A also in B); chance values are model-wide (from the total
    densities); "stratified chance" keeps each tensor's own densities. ratio = Jaccard / chance Jaccard.
    """
    if len(paths) < 2:
        raise click.UsageError("compare needs at least two masks")
    result = compare(list(paths), by=by, common=common, progress=not quiet, verify=not no_verify)
    rows = [(group, result.labels[i], result.labels[j], result.pair(i, j, group))
            for group in result.groups for i, j in result.pairs()]
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
        click.echo(format_table(["group", "pair (A vs B)", *(title for title, _ in _PAIR_COLUMNS)],
                                [[g, f"{a} vs {b}", *(getattr(s, attr) for _, attr in _PAIR_COLUMNS)]
                                 for g, a, b, s in rows]))


def _defined(values: dict[str, float | int]) -> dict[str, float | int | None]:
    """JSON has no nan: undefined ratios (0/0) become null."""
    return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in values.items()}


@main.command()
@click.argument("op", type=click.Choice([*BINARY_OPS, "not"]))
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Path of the combined mask to write.")
@_common
@_quiet
def combine(op: str, inputs: tuple[str, ...], output: str, common: bool, quiet: bool) -> None:
    """Combine masks tensor by tensor: and, or, xor, diff (first minus the others), not (of one mask).

    The result records the operation and its inputs (path, fingerprint, provenance) in its metadata.
    """
    path = combine_files(op, list(inputs), output, common=common, progress=not quiet)
    with open_mask(path) as result:
        ones = sum(e.ones for e in result.entries.values())
        numel = sum(e.bits for e in result.entries.values())
    click.echo(f"wrote {path}: {len(result)} tensors, {ones:,} of {numel:,} set "
               f"(density {ones / numel if numel else 0.0:.4%})")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", "directory", required=True, help="Directory to write the PNGs into.")
@_common
@_no_verify
@_quiet
def plot(paths: tuple[str, ...], directory: str, common: bool, no_verify: bool, quiet: bool) -> None:
    """Draw a density heatmap (layer x module type) per mask and, for two or more, the overlap matrix."""
    from ..plot import plot_density, plot_overlap

    out = Path(directory)
    written = []
    for path in paths:
        with open_mask(path) as mask_file:
            counts = {name: (e.ones, e.bits) for name, e in mask_file.entries.items()}
        stem = Path(path).name.removesuffix(".index.json").removesuffix(".smask")
        written.append(plot_density(counts, out / f"{stem}.density.png", title=f"{stem}: density"))
    if len(paths) >= 2:
        result = compare(list(paths), common=common, progress=not quiet, verify=not no_verify)
        written.append(plot_overlap(result, out / "overlap.png"))
    for path in written:
        click.echo(str(path))
