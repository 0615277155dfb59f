"""``submask plot``: density heatmaps, per-layer lines, the tolerance ladder and the overlap matrix of masks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import click

from .. import open as open_mask
from ..atomic import check_target
from ..compare import compare
from ..errors import SubmaskError
from ..format.stats import ladder_rungs
from ..plot import (
    FORMATS,
    OVERLAP_METRICS,
    density_scale,
    layer_densities,
    plot_density,
    plot_ladder,
    plot_layers,
    plot_overlap,
)
from .hub import hub_options
from .output import overwrite_option, progress_option, show_progress

KINDS = ("density", "layers", "ladder", "overlap")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", "directory", required=True, type=click.Path(file_okay=False),
              help="Folder to write the figures into (created if missing).")
@click.option("--kind", "kinds", type=click.Choice(KINDS), multiple=True,
              help="Figures to draw (repeatable)  [default: every one the masks allow].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="png", show_default=True, help="File format.")
@click.option("--shared-scale", is_flag=True, help="One colour scale for every density heatmap, to compare them "
                                                   "(default: each mask on its own scale).")
@click.option("--metric", type=click.Choice(OVERLAP_METRICS), default="ratio", show_default=True,
              help="Overlap matrix colour: Jaccard / stratified chance, overlap |A and B| / |A|, or Jaccard.")
@click.option("--common", is_flag=True, help="Use only the tensors all masks have (else they must match).")
@click.option("--no-verify", "no_verify", is_flag=True,
              help="Skip the CRC-32 of each tensor (faster; counts and structure are still checked).")
@overwrite_option
@progress_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@hub_options("paths")
def plot(paths: tuple[str, ...], directory: str, kinds: tuple[str, ...], fmt: str, shared_scale: bool, metric: str,
         common: bool, no_verify: bool, overwrite: bool, progress: bool | None, quiet: bool) -> None:
    """Draw figures of masks into a folder and print their paths.

    \b
    density  NAME.density.FMT  heatmap, rows in model order x module type, the value in each cell
    layers   NAME.layers.FMT   density per layer, one line per module type (masks with numbered layers)
    ladder   ladder.FMT        density against the tolerance atol, one curve per mask (masks built with a ladder)
    overlap  overlap.FMT       the pairwise matrix (two masks or more), against stratified chance
    """
    chosen = set(kinds or KINDS)
    out = Path(directory)
    headers = []
    for path in paths:
        with open_mask(path) as mask_file:
            headers.append(({name: (e.ones, e.bits) for name, e in mask_file.entries.items()},
                            ladder_rungs(mask_file.metadata.stats)))
    stems = _stems(paths)
    planned: list[tuple[Path, Callable[[Path], Path]]] = []
    if "density" in chosen:
        vmax = density_scale(c for c, _ in headers) if shared_scale else None
        planned += [(out / f"{stem}.density.{fmt}", partial(plot_density, c, title=stem, vmax=vmax))
                    for stem, (c, _) in zip(stems, headers)]
    if "layers" in chosen:
        planned += [(out / f"{stem}.layers.{fmt}", partial(plot_layers, c, title=stem))
                    for stem, (c, _) in zip(stems, headers) if layer_densities(c)[0] or kinds]
    ladders = {stem: (rungs, sum(n for _, n in c.values())) for stem, (c, rungs) in zip(stems, headers) if rungs}
    if "ladder" in chosen and (ladders or kinds):
        if not ladders:  # the masks lack it: an error of the input files (exit 1), not of the command line
            raise SubmaskError("no mask holds a tolerance ladder (stats['ladder'], recorded by build): nothing to draw")
        planned.append((out / f"ladder.{fmt}", partial(plot_ladder, ladders, title="update density")))
    if "overlap" in chosen and (len(paths) >= 2 or kinds):
        if len(paths) < 2:
            raise click.UsageError("--kind overlap needs two masks or more")

        def overlap(target: Path) -> Path:
            comparison = compare(list(paths), common=common, progress=show_progress(progress, quiet),
                                 verify=not no_verify)
            return plot_overlap(comparison, target, metric=metric)

        planned.append((out / f"overlap.{fmt}", overlap))
    for target, _ in planned:  # every refusal before the first figure
        check_target(target, overwrite)
    for target, draw in planned:
        click.echo(str(draw(target)))


def _stems(paths: tuple[str, ...]) -> list[str]:
    """File name stems: the masks' names, numbered where two masks share one (a/rl.smask, b/rl.smask)."""
    stems = [Path(path).name.removesuffix(".index.json").removesuffix(".smask") for path in paths]
    return [f"{stem}-{i + 1}" if stems.count(stem) > 1 else stem for i, stem in enumerate(stems)]
