"""The GPU benchmarks at tiny sizes on the CPU: scripts a GPU session runs blind must run (issue 13)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_prints_its_three_tables_and_writes_nothing(tmp_path: Path) -> None:
    benchmarks = (ROOT / "BENCHMARKS.md").read_bytes()
    run = subprocess.run(
        [sys.executable, "-m", "tools.bench.bench_gpu", "--no-write", "--resident-gb", "0.002", "--file-gb", "0.002",
         "--llama-layers", "1", "--llama-hidden", "64", "--repeats", "1", "--workers", "1",
         "--dir", str(tmp_path / "bench")],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    for header in ("| resident diff | GB/s | ratio to copy |", "| files | hot GB/s | hot ratio | cold GB/s | cold ratio |",
                   "| model | step (ms) | sparsity() (ms) | share of step time at N=50 |"):
        assert header in run.stdout
    for row in ("| copy of both on cpu (baseline) | ", "| build, torch backend (CPU tensors) | ",
                "| build, torch backend on the CPU | ", "| build, auto | ", "| Llama 1 layers, hidden 64 "):
        assert row in run.stdout
    assert (ROOT / "BENCHMARKS.md").read_bytes() == benchmarks
    assert not (tmp_path / "bench").exists()  # the files it wrote are removed


def test_bench_torch_compare_checks_and_times_both_revisions() -> None:
    """The baseline backend is loaded from git and must give today's bits and counts (the script asserts it)."""
    if subprocess.run(["git", "cat-file", "-e", "fbe5e1d"], cwd=ROOT, capture_output=True, check=False).returncode:
        pytest.skip("the baseline revision is not in this checkout")
    run = subprocess.run(
        [sys.executable, "-m", "tools.bench.bench_torch_compare", "--no-write", "--elements", "4096", "--repeats", "1"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| 25% | exact + ladder (default) |")]
    assert len(rows) == 1 and len(rows[0].split("|")) == 9
