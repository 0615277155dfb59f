"""Figures (``submask.plot`` and ``submask plot``): files in each format, with the labels that say what they show."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from click.testing import CliRunner

import submask
from submask import Mask
from submask.cli import main
from submask.compare import compare
from submask.plot import density_grid, layer_densities, plot_density, plot_ladder, plot_layers, plot_overlap

COUNTS = {  # name -> (count, numel): a Llama-like model, lm_head and the final norm listed before the layers
    "lm_head.weight": (17, 100),
    "model.norm.weight": (3, 4),
    "model.embed_tokens.weight": (1, 100),
    **{f"model.layers.{layer}.{module}.weight": (10 * (layer + 1) + k, 100)
       for layer in (1, 0, 2) for k, module in enumerate(("self_attn.q_proj", "mlp.up_proj", "input_layernorm"))},
}
del COUNTS["model.layers.2.mlp.up_proj.weight"]


def svg_text(path: Path) -> list[str]:
    return [unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())]


def test_density_grid_is_in_model_order() -> None:
    rows, modules, grid = density_grid(COUNTS)
    assert rows == ["embeddings", "0", "1", "2", "norm", "lm_head"]
    assert modules == ["input_layernorm", "self_attn.q_proj", "mlp.up_proj"]  # the order a block computes them
    assert grid[1].tolist() == [0.12, 0.10, 0.11] and np.isnan(grid[3, 2])
    assert grid[0].tolist() == [0.01] * 3 and grid[5].tolist() == [0.17] * 3  # rows outside the layers span


def test_density_heatmap_labels(tmp_path: Path) -> None:
    path = plot_density(COUNTS, tmp_path / "rl.svg", "rl")
    text = svg_text(path)
    overall = 100 * sum(c for c, _ in COUNTS.values()) / sum(n for _, n in COUNTS.values())
    assert f"rl: density by layer and module (overall {overall:.3g}%)" in text
    assert "no such tensor" in text  # layer 2 has no mlp.up_proj
    assert {"10", "11", "12", "30", "32", "1", "75", "17"} <= set(text)  # each cell's value, spanning rows once
    assert text.count("17") == 1 and "density, % of entries set" in text
    shared = svg_text(plot_density(COUNTS, tmp_path / "shared.svg", "rl", vmax=0.5))
    assert "density, % of entries set (shared scale)" in shared
    assert "no such tensor" not in svg_text(plot_density({"model.layers.0.mlp.up_proj.weight": (1, 2)},
                                                         tmp_path / "full.svg"))


@pytest.mark.parametrize("suffix, magic", [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_formats(tmp_path: Path, suffix: str, magic: bytes) -> None:
    assert plot_density(COUNTS, tmp_path / f"d.{suffix}").read_bytes().startswith(magic)
    assert plot_layers(COUNTS, tmp_path / "l", format=suffix).read_bytes().startswith(magic)
    with pytest.raises(submask.UsageError, match="'gif'"):
        plot_density(COUNTS, tmp_path / "d.gif")


def test_layers_chart(tmp_path: Path) -> None:
    layers, lines = layer_densities(COUNTS)
    assert layers == [0, 1, 2] and lines["self_attn.q_proj"] == [0.10, 0.20, 0.30]
    assert np.isnan(lines["mlp.up_proj"][2])
    text = svg_text(plot_layers(COUNTS, tmp_path / "l.svg", "rl"))
    assert any(t.startswith("rl: density per layer by module type") for t in text)
    assert {"self_attn.q_proj", "mlp.up_proj", "input_layernorm", "module type", "layer"} <= set(text)
    with pytest.raises(submask.UsageError, match="numbered layer"):
        plot_layers({"w": (1, 2)}, tmp_path / "none.png")


def test_ladder_curve(tmp_path: Path) -> None:
    ladders = {"rl": ([(0.0, 90), (1e-8, 80), (1e-5, 10)], 100), "sft": ([(0.0, 99), (1e-8, 98), (1e-5, 70)], 100)}
    text = svg_text(plot_ladder(ladders, tmp_path / "ladder.svg", "update density"))
    assert {"exact", "1e-08", "1e-05", "rl", "sft", "update density against the tolerance"} <= set(text)
    with pytest.raises(submask.UsageError, match="ladder"):
        plot_ladder({}, tmp_path / "none.png")


@pytest.fixture
def three(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    shared = rng.random((64, 64)) < 0.2
    masks = [shared | (rng.random((64, 64)) < 0.05), shared | (rng.random((64, 64)) < 0.05),
             rng.random((64, 64)) < 0.2]
    paths = [tmp_path / f"{name}.smask" for name in ("rl", "sft", "random")]
    for path, bits in zip(paths, masks):
        submask.save(Mask.from_numpy({"model.layers.0.mlp.up_proj.weight": bits}), path)
    return paths


def test_overlap_names_the_stratified_baseline(three: list[Path], tmp_path: Path) -> None:
    comparison = compare(three)
    pair = comparison.pair(0, 1)
    chance_jaccard = pair.chance_intersection / (pair.count_a + pair.count_b - pair.chance_intersection)
    text = svg_text(plot_overlap(comparison, tmp_path / "o.svg"))
    assert "Jaccard / stratified chance: 1 = chance" in text[0] or any("stratified chance" in t for t in text)
    assert f"{pair.jaccard / chance_jaccard:.3g}×" in text and f"chance {chance_jaccard:.3f}" in text
    assert {"rl", "sft", "random"} <= set(text)
    overlap = svg_text(plot_overlap(comparison, tmp_path / "a.svg", metric="overlap"))
    assert any(t.startswith("overlap |row ∩ col| / |row|") for t in overlap)
    assert f"{pair.overlap_a:.3f}" in overlap and f"chance {pair.chance_intersection / pair.count_a:.3f}" in overlap
    assert any(t.startswith("Jaccard |row ∩ col|") for t in svg_text(plot_overlap(comparison, tmp_path / "j.svg",
                                                                                   metric="jaccard")))


def invoke(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_formats_kinds_and_overwrite(three: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "figs"
    code, printed, err = invoke("plot", *three, "-o", out, "--format", "svg", "-q")
    assert code == 0, err
    assert [Path(p).name for p in printed.split()] == ["rl.density.svg", "sft.density.svg", "random.density.svg",
                                                       "rl.layers.svg", "sft.layers.svg", "random.layers.svg",
                                                       "overlap.svg"]
    before = (out / "overlap.svg").read_bytes()
    code, printed, err = invoke("plot", *three, "-o", out, "--format", "svg", "-q", "--metric", "jaccard")
    assert code == 1 and "--overwrite" in err and printed == "" and (out / "overlap.svg").read_bytes() == before
    code, printed, _ = invoke("plot", *three, "-o", out, "--format", "svg", "-q", "--metric", "jaccard",
                              "--kind", "overlap", "--overwrite")
    assert code == 0 and (out / "overlap.svg").read_bytes() != before
    code, _, err = invoke("plot", three[0], "-o", out, "--kind", "overlap")
    assert code == 2 and "two masks" in err
    code, _, err = invoke("plot", three[0], "-o", out, "--kind", "ladder")
    assert code == 1 and "ladder" in err


def test_cli_ladder_from_a_build(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    base = np.zeros((8, 8), np.float32)
    save_file({"model.layers.0.mlp.up_proj.weight": base}, tmp_path / "a.safetensors")
    steps = np.logspace(-9, -3, 64, dtype=np.float32).reshape(8, 8)
    save_file({"model.layers.0.mlp.up_proj.weight": base + steps}, tmp_path / "b.safetensors")
    assert invoke("build", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "-o", tmp_path / "m.smask",
                  "-q")[0] == 0
    code, printed, _ = invoke("plot", tmp_path / "m.smask", "-o", tmp_path / "f", "--kind", "ladder",
                              "--format", "pdf")
    assert code == 0 and printed == f"{tmp_path / 'f' / 'ladder.pdf'}\n"
    assert (tmp_path / "f" / "ladder.pdf").read_bytes().startswith(b"%PDF")
