"""The analysis commands on masks made by ``submask build`` from real MiniLM finetunes, all through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import submask
from submask.cli import main


def run(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_build_then_stats_compare_combine_plot(minilm_bf16, minilm_fp32, tmp_path: Path) -> None:
    bf16, fp32 = tmp_path / "bf16.smask", tmp_path / "fp32.smask"
    run("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", bf16, "--quiet")
    run("build", minilm_fp32.base, minilm_fp32.finetuned, "-o", fp32, "--quiet")
    a, b = submask.load(bf16), submask.load(fp32)

    info = run("info", bf16)
    assert f"count at atol: 0: {a.count:,}," in info and "criterion: name=exact" in info
    assert f"base {minilm_bf16.base}" in info

    groups = json.loads(run("stats", bf16, "--by", "module", "--json"))["groups"]
    assert groups["all"] == {"count": a.count, "numel": a.numel, "density": a.density}
    query = [n for n in a if ".attention.self.query." in n]
    assert groups["attention.self.query"]["count"] == sum(a[n].count for n in query)

    pair = json.loads(run("compare", bf16, fp32, "--json"))["pairs"][0]
    flat_a = np.concatenate([t.to_numpy().ravel() for t in a.values()])
    flat_b = np.concatenate([b[name].to_numpy().ravel() for name in a])
    both_count = int((flat_a & flat_b).sum())
    assert (pair["count_a"], pair["count_b"], pair["intersection"]) == (a.count, b.count, both_count)
    assert pair["jaccard"] == both_count / int((flat_a | flat_b).sum())

    both = tmp_path / "both.smask"
    run("combine", "and", bf16, fp32, "-o", both, "--quiet")
    combined = submask.load(both)
    assert combined.count == both_count
    assert combined.metadata.provenance["combined"]["op"] == "and"

    out = run("plot", bf16, fp32, "-o", tmp_path / "plots", "--quiet")
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["bf16.density.png", "bf16.layers.png", "fp32.density.png", "fp32.layers.png",
                                      "ladder.png", "overlap.png"]  # two built masks: every figure applies
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert all(str(p) in out or p.name in out for p in pngs)
