"""Figures of masks: density heatmaps, per-layer density lines, the tolerance ladder, the overlap matrix.

Each ``plot_*`` function draws one figure and writes it atomically as PNG, SVG or PDF (from the file name's
suffix, or ``format``); every figure names what it shows, and a baseline where it shows one. matplotlib is
imported only when a figure is drawn (``pip install submask[plot]``), with the Agg backend.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .breakdown import locate
from .compare import Comparison
from .errors import SubmaskError, UsageError

FORMATS = ("png", "svg", "pdf")
OVERLAP_METRICS = ("ratio", "overlap", "jaccard")
Counts = Mapping[str, tuple[int, int]]  # tensor name -> (count, numel)
#: rows outside the numbered layers: above them (embeddings), below them (the rest, in this order)
_ABOVE = ("embeddings",)
_BELOW = ("norm", "lm_head", "pooler")
_NO_TENSOR = "no such tensor"
#: (pattern, rank) of module types inside a block, most specific first: columns and lines in the order the block
#: computes them (Llama, BERT, GPT-2 spellings); unknown types keep their first-seen order after these
_MODULE_ORDER = tuple((re.compile(pattern), rank) for pattern, rank in (
    (r"input_layernorm|ln_1|attention_norm", 0), (r"q_proj|query|q_lin|\bwq\b", 1), (r"k_proj|key|k_lin|\bwk\b", 2),
    (r"v_proj|value|v_lin|\bwv\b", 3), (r"attention\.output\.LayerNorm|post_attention_layernorm|ln_2", 5),
    (r"o_proj|attention\.output\.dense|out_proj|attn\.c_proj|\bwo\b", 4), (r"c_attn", 1),
    (r"pre_feedforward|ffn_norm", 6), (r"gate_proj|\bw1\b", 7), (r"up_proj|intermediate|fc1|c_fc|\bw3\b", 8),
    (r"output\.LayerNorm|post_feedforward", 10), (r"down_proj|output\.dense|fc2|mlp\.c_proj|\bw2\b", 9)))


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SubmaskError("plotting needs matplotlib: pip install 'submask[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def overall_density(counts: Counts) -> float:
    """Set entries / all entries over every tensor of ``counts``."""
    count = sum(c for c, _ in counts.values())
    numel = sum(n for _, n in counts.values())
    return count / numel if numel else 0.0


def density_grid(counts: Counts) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, module types, rows x modules density array, nan where no tensor) from name -> (count, numel).

    Rows are in model order: embeddings, layers 0, 1, ..., then the final norm, lm_head, pooler and any other
    tensor outside the layers. Such a row holds one tensor group, so its density fills the whole row.
    """
    cells: dict[tuple[str, str], list[int]] = {}
    for name, (count, numel) in counts.items():
        location = locate(name)
        row = str(location.layer) if location.layer is not None else location.module
        cell = cells.setdefault((row, location.module if location.layer is not None else ""), [0, 0])
        cell[0] += count
        cell[1] += numel
    rows = list(dict.fromkeys(row for row, _ in cells))
    layers = sorted((r for r in rows if r.isdigit()), key=int)
    outside = [r for r in rows if not r.isdigit()]
    rows = ([r for r in _ABOVE if r in outside] + layers + [r for r in _BELOW if r in outside]
            + [r for r in outside if r not in _ABOVE + _BELOW])
    modules = module_order(module for _, module in cells if module)
    grid = np.full((len(rows), max(len(modules), 1)), math.nan)
    for (row, module), (count, numel) in cells.items():
        value = count / numel if numel else math.nan
        if module:
            grid[rows.index(row), modules.index(module)] = value
        else:
            grid[rows.index(row), :] = value
    return rows, modules, grid


def module_order(modules: Iterable[str]) -> list[str]:
    """Module types in the order a transformer block computes them (norm, q, k, v, o, norm, gate, up, down)."""
    def rank(module: str) -> int:
        return next((rank for pattern, rank in _MODULE_ORDER if pattern.search(module)), len(_MODULE_ORDER))

    return sorted(dict.fromkeys(modules), key=rank)


def density_scale(masks: Iterable[Counts]) -> float:
    """The highest cell density (fraction) over several masks' grids: one colour scale for all their heatmaps."""
    grids = [density_grid(counts)[2] for counts in masks]
    return max((float(np.nanmax(grid)) for grid in grids if grid.size and not np.isnan(grid).all()), default=0.0)


def plot_density(counts: Counts, path: str | os.PathLike[str], title: str = "", vmax: float | None = None,
                 format: str | None = None) -> Path:
    """Heatmap of density in %, rows in model order x module type, the value written in each cell.

    The colour scale runs from 0 to ``vmax`` (a fraction; default: this mask's highest cell, so a mask looks the
    same whatever else is plotted): pass one ``density_scale`` to heatmaps that are to be compared by eye.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    rows, modules, grid = density_grid(counts)
    layered = [i for i, row in enumerate(rows) if row.isdigit()]
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(modules) + 3.5), max(3.5, 0.3 * len(rows) + 2)))
    top = percent_of(max(vmax if vmax is not None else float(np.nanmax(grid, initial=0.0)), 1e-12))
    ax.add_patch(plt.Rectangle((-0.5, -0.5), grid.shape[1], len(rows), facecolor="0.92", edgecolor="0.6",
                               hatch="///", linewidth=0, zorder=0))
    image = ax.imshow(np.ma.masked_invalid(percent_of(grid)), aspect="auto", cmap="viridis", interpolation="nearest",
                      vmin=0.0, vmax=top, zorder=1)
    size = 7 if len(rows) <= 40 else 5
    for i, row in enumerate(rows):
        spans = not row.isdigit()
        for j in range(grid.shape[1]):
            value = grid[i, j]
            if math.isnan(value) or (spans and j != (grid.shape[1] - 1) // 2):
                continue
            ax.text(j + (0.5 if spans and grid.shape[1] % 2 == 0 else 0), i, _percent_text(percent_of(value)),
                    ha="center", va="center", fontsize=size,
                    color="white" if percent_of(value) < 0.6 * top else "black")
    for edge in ([layered[0] - 0.5] if layered and layered[0] > 0 else []) + (
            [layered[-1] + 0.5] if layered and layered[-1] < len(rows) - 1 else []):
        ax.axhline(edge, color="white", linewidth=2)
    ax.set_xticks(range(len(modules)), modules, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("module type")
    ax.set_ylabel("layer")
    name = f"{title}: " if title else ""
    ax.set_title(f"{name}density by layer and module (overall {_percent_text(percent_of(overall_density(counts)))}%)",
                 fontsize=10, loc="left")
    fig.colorbar(image, ax=ax, label="density, % of entries set" + (" (shared scale)" if vmax is not None else ""))
    if np.isnan(grid).any():
        ax.legend(handles=[Patch(facecolor="0.92", edgecolor="0.6", hatch="///", label=_NO_TENSOR)],
                  loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, borderaxespad=0.2)
    return _save(fig, plt, path, format)


def layer_densities(counts: Counts) -> tuple[list[int], dict[str, list[float]]]:
    """(layer indices, module type -> density per layer, nan where the layer lacks it) for the numbered layers."""
    cells: dict[tuple[int, str], list[int]] = {}
    for name, (count, numel) in counts.items():
        location = locate(name)
        if location.layer is not None:
            cell = cells.setdefault((location.layer, location.module), [0, 0])
            cell[0] += count
            cell[1] += numel
    layers = sorted({layer for layer, _ in cells})
    modules = module_order(module for _, module in cells)
    return layers, {module: [cells[(layer, module)][0] / cells[(layer, module)][1]
                             if (layer, module) in cells and cells[(layer, module)][1] else math.nan
                             for layer in layers] for module in modules}


def plot_layers(counts: Counts, path: str | os.PathLike[str], title: str = "",
                format: str | None = None) -> Path:
    """Density in % per layer, one line per module type (the per-layer figure of the RL-subnetworks paper)."""
    plt = _pyplot()
    layers, lines = layer_densities(counts)
    if not layers:
        raise UsageError(f"{title or 'this mask'}: no tensor sits in a numbered layer (model.layers.N...), so there "
                         "is no per-layer chart to draw; the density heatmap shows it")
    fig, ax = plt.subplots(figsize=(max(6.5, 0.2 * len(layers) + 4), 4.2))
    markers = "osD^v<>ph*"
    for k, (module, values) in enumerate(lines.items()):
        ax.plot(layers, percent_of(np.array(values)), marker=markers[k % len(markers)], markersize=3.5,
                linewidth=1.4, label=module)
    ax.set_xlabel("layer")
    ax.set_ylabel("density (% of entries set)")
    ax.set_xticks(layers if len(layers) <= 32 else layers[::max(1, len(layers) // 16)])
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    name = f"{title}: " if title else ""
    ax.set_title(f"{name}density per layer by module type (overall "
                 f"{_percent_text(percent_of(overall_density(counts)))}%)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, title="module type",
              title_fontsize=8)
    return _save(fig, plt, path, format)


def plot_ladder(ladders: Mapping[str, tuple[Sequence[tuple[float, int]], int]], path: str | os.PathLike[str],
                title: str = "", format: str | None = None) -> Path:
    """Density in % against the tolerance (atol; "exact" first), one curve per mask.

    ``ladders``: label -> (the ladder's (atol, changed) rungs, numel), e.g. from ``ladder_rungs(metadata.stats)``.
    """
    plt = _pyplot()
    if not ladders:
        raise UsageError("no mask holds a tolerance ladder (stats['ladder'], recorded by build): nothing to draw")
    tolerances = sorted({atol for rungs, _ in ladders.values() for atol, _ in rungs})
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, (label, (rungs, numel)) in enumerate(ladders.items()):
        x = [tolerances.index(atol) for atol, _ in rungs]
        y = [percent_of(changed / numel) if numel else math.nan for _, changed in rungs]
        ax.plot(x, y, marker="osD^v<>"[k % 7], markersize=5 - k % 3, linewidth=1.6, label=label,
                linestyle=("-", "--", ":", "-.")[k % 4])  # curves that coincide stay visible
    ax.set_xticks(range(len(tolerances)), ["exact" if atol == 0 else f"{atol:g}" for atol in tolerances])
    ax.set_xlabel("atol: a change of at most atol counts as unchanged")
    ax.set_ylabel("density (% of entries changed)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title or 'density'} against the tolerance", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, plt, path, format)


def plot_overlap(comparison: Comparison, path: str | os.PathLike[str], group: str = "all", metric: str = "ratio",
                 format: str | None = None) -> Path:
    """The N x N matrix of a comparison, coloured by ``metric``, each cell with its stratified chance value.

    "ratio" (default): Jaccard / its stratified chance value (random masks with each mask's own count in every
    tensor), 1 = chance. "overlap": |row and col| / |row|. "jaccard": |row and col| / |row or col|.
    """
    if metric not in OVERLAP_METRICS:
        raise UsageError(f"unknown overlap metric {metric!r}; use one of {', '.join(OVERLAP_METRICS)}")
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    labels = [Path(label).name.removesuffix(".index.json").removesuffix(".smask") for label in comparison.labels]
    n = len(labels)
    intersection, chance = comparison.matrix("intersection", group), comparison.matrix("chance_intersection", group)
    counts = np.diagonal(intersection)
    union, chance_union = counts[:, None] + counts[None, :] - intersection, counts[:, None] + counts[None, :] - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard, chance_jaccard = intersection / union, chance / chance_union
        overlap, chance_overlap = intersection / counts[:, None], chance / counts[:, None]
        values, expected = {"ratio": (jaccard / chance_jaccard, chance_jaccard), "jaccard": (jaccard, chance_jaccard),
                            "overlap": (overlap, chance_overlap)}[metric]
    off = ~np.eye(n, dtype=bool)
    shown = np.where(off, values, np.nan)
    fig, ax = plt.subplots(figsize=(3.2 + 1.3 * n, 2.4 + 1.0 * n))
    ax.set_facecolor("0.85")  # the diagonal (a mask with itself) and undefined cells
    positive = shown[np.isfinite(shown) & (shown > 0)]
    top = max(2.0, float(positive.max(initial=2.0)), 1.0 / float(positive.min(initial=0.5)))
    if metric == "ratio":  # log scale centred on chance: 2x above and 2x below look alike
        image = ax.imshow(np.ma.masked_invalid(np.where(np.isnan(shown) | (shown > 0), shown, 1 / top)), cmap="RdBu_r",
                          norm=LogNorm(vmin=1 / top, vmax=top))
    else:
        image = ax.imshow(np.ma.masked_invalid(shown), cmap="magma", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            if i == j:
                ax.text(j, i, "—", ha="center", va="center", fontsize=9, color="0.4")
                continue
            main = f"{values[i, j]:.3g}×" if metric == "ratio" else f"{values[i, j]:.3f}"
            note = (f"J {jaccard[i, j]:.3f}\nchance {expected[i, j]:.3f}" if metric == "ratio"
                    else f"chance {expected[i, j]:.3f}")
            dark = (abs(math.log(max(values[i, j], 1 / top))) > 0.6 * math.log(top) if metric == "ratio"
                    else values[i, j] < 0.6)
            ax.text(j, i, f"{main}\n{note}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    ax.set_xticks(range(n), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    where = "" if group == "all" else f" ({group})"
    ax.set_title({"ratio": "Jaccard / stratified chance" + where + ": 1 = chance",
                  "jaccard": "Jaccard |row ∩ col| / |row ∪ col|" + where,
                  "overlap": "overlap |row ∩ col| / |row|" + where}[metric]
                 + "\nstratified chance: random masks with each mask's count in every tensor", fontsize=9)
    bar = fig.colorbar(image, ax=ax, fraction=0.046,
                       label="Jaccard, × stratified chance" if metric == "ratio" else metric)
    if metric == "ratio":
        ticks = [t for t in (0.01, 0.1, 0.25, 0.5, 1, 2, 4, 10, 25, 100) if 1 / top <= t <= top]
        bar.set_ticks(ticks, labels=[f"{t:g}×" for t in ticks])
        bar.minorticks_off()
    return _save(fig, plt, path, format)


def percent_of(fraction: Any) -> Any:
    return 100.0 * fraction


def _percent_text(value: float) -> str:
    """A percentage with 2-3 significant digits: 12.3, 1.23, 0.0123, 0."""
    return "0" if value == 0 else f"{value:.3g}" if value >= 0.01 else f"{value:.1e}"


def _save(fig: Any, plt: Any, path: str | os.PathLike[str], format: str | None) -> Path:
    path = Path(path)
    chosen = format or path.suffix.lstrip(".").lower() or "png"
    if chosen not in FORMATS:
        plt.close(fig)
        raise UsageError(f"{path}: cannot write a {chosen!r} figure; use one of {', '.join(FORMATS)}")
    fig.tight_layout()
    with atomic_write(path) as out, plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text
        fig.savefig(out, format=chosen, dpi=130, bbox_inches="tight",
                    metadata={"Date": None} if chosen == "svg" else None)
    plt.close(fig)
    return path
