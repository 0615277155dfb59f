"""PNG figures: a mask's density per layer and module type, and the pairwise overlap matrix of N masks.

matplotlib is imported only when a figure is drawn (``pip install submask[plot]``), with the Agg backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .breakdown import locate, sort_groups
from .compare import Comparison
from .errors import SubmaskError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SubmaskError("plotting needs matplotlib: pip install 'submask[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def density_grid(counts: Mapping[str, tuple[int, int]]) -> tuple[list[str], list[str], np.ndarray]:
    """(layer labels, module types, layers x modules density array with nan where no tensor) from
    name -> (count, numel). Tensors outside the numbered layers form rows named by their module type."""
    cells: dict[tuple[str, str], list[int]] = {}
    for name, (count, numel) in counts.items():
        location = locate(name)
        row = str(location.layer) if location.layer is not None else location.module
        cell = cells.setdefault((row, location.module), [0, 0])
        cell[0] += count
        cell[1] += numel
    rows = sort_groups([row for row, _ in cells], "layer")
    modules = list(dict.fromkeys(module for _, module in cells))
    grid = np.full((len(rows), len(modules)), math.nan)
    for (row, module), (count, numel) in cells.items():
        grid[rows.index(row), modules.index(module)] = count / numel if numel else math.nan
    return rows, modules, grid


def density_scale(masks: Iterable[Mapping[str, tuple[int, int]]]) -> float:
    """The highest cell density (fraction) over several masks' grids: one colour scale for all their heatmaps."""
    grids = [density_grid(counts)[2] for counts in masks]
    return max((float(np.nanmax(grid)) for grid in grids if grid.size and not np.isnan(grid).all()), default=0.0)


def plot_density(counts: Mapping[str, tuple[int, int]], path: str | os.PathLike[str], title: str = "",
                 vmax: float | None = None) -> Path:
    """Heatmap of density in %, layer (rows) x module type (columns); writes a PNG and returns its path.

    The colour scale runs from 0 to ``vmax`` (a fraction; default: this mask's highest cell): pass one
    ``density_scale`` to the heatmaps of masks that are to be compared by eye.
    """
    plt = _pyplot()
    rows, modules, grid = density_grid(counts)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(modules) + 3), max(4.0, 0.25 * len(rows) + 2)))
    top = None if vmax is None else percent_of(max(vmax, 1e-12))
    image = ax.imshow(np.ma.masked_invalid(percent_of(grid)), aspect="auto", cmap="viridis", interpolation="nearest",
                      vmin=0.0, vmax=top)
    ax.set_xticks(range(len(modules)), modules, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("module type")
    ax.set_ylabel("layer")
    ax.set_title(title or "density")
    fig.colorbar(image, ax=ax, label="density (% of elements set)")
    return _save(fig, plt, path)


def plot_overlap(comparison: Comparison, path: str | os.PathLike[str], group: str = "all") -> Path:
    """Two heatmaps for N masks: one-sided overlap |row and col| / |row|, and Jaccard, each cell annotated
    with the model-wide chance value; writes a PNG and returns its path."""
    plt = _pyplot()
    labels = [Path(label).name for label in comparison.labels]
    n = len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(4.5 + 1.6 * n, 2.5 + 0.8 * n), squeeze=False)
    panels = (("overlap_a", "chance_overlap_a", "overlap |row ∩ col| / |row|"),
              ("jaccard", "chance_jaccard", "Jaccard |row ∩ col| / |row ∪ col|"))
    for ax, (metric, chance, title) in zip(axes[0], panels):
        values, expected = comparison.matrix(metric, group), comparison.matrix(chance, group)
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="magma")
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.3f}" if i == j else f"{values[i, j]:.3f}\n(chance {expected[i, j]:.3f})"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="black" if values[i, j] > 0.6 else "white")
        ax.set_xticks(range(n), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, plt, path)


def percent_of(fraction: Any) -> Any:
    return 100.0 * fraction


def _save(fig: Any, plt: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_write(path) as out:
        fig.savefig(out, format="png", dpi=120)
    plt.close(fig)
    return path
