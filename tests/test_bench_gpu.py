"""Benchmark scripts at tiny sizes on the CPU: the GPU ones a GPU session runs blind (issue 13), and those that
time today's code against an earlier revision's (which they load from git)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from submask.accel import numba_enabled  # noqa: E402
from tools.bench.baseline import revision_available  # noqa: E402


def test_bench_gpu_prints_its_three_tables_and_writes_nothing(tmp_path: Path) -> None:
    benchmarks = (ROOT / "BENCHMARKS.md").read_bytes()
    run = subprocess.run(
        [sys.executable, "-m", "tools.bench.bench_gpu", "--no-write", "--resident-gb", "0.002", "--file-gb", "0.002",
         "--llama-layers", "1", "--llama-hidden", "64", "--repeats", "1", "--workers", "1",
         "--dir", str(tmp_path / "bench")],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    for header in ("| resident diff | GB/s | ratio to copy |",
                   "| files | hot GB/s | hot ratio | cold GB/s | cold ratio |",
                   "| model | step (ms) | mask() (ms) | density() (ms) | share of step time at N=50 |"):
        assert header in run.stdout
    for row in ("| copy of both on cpu (baseline) | ", "| build, torch backend (CPU tensors) | ",
                "| count_changes, torch backend | ",
                "| build, torch backend on the CPU | ", "| build, auto | ", "| Llama 1 layers, hidden 64 "):
        assert row in run.stdout
    assert (ROOT / "BENCHMARKS.md").read_bytes() == benchmarks
    assert not (tmp_path / "bench").exists()  # the files it wrote are removed


@pytest.mark.parametrize("script, baseline, row, columns", [
    ("bench_torch_compare", "fbe5e1d", "| 25% | exact + ladder (default) |", 7),
    ("bench_kernels", "5a2a734", "| F32 | 30% | exact |", 6)])
def test_benchmarks_against_a_revision_check_and_time_both(script: str, baseline: str, row: str, columns: int) -> None:
    """The baseline module is loaded from git beside today's and must give the same bits and counts (the
    script asserts it); one row per setting."""
    if not revision_available(baseline):
        pytest.skip("the baseline revision is not in this checkout")
    if script == "bench_kernels" and not numba_enabled():
        pytest.skip("numba is not installed or switched off")
    run = subprocess.run(
        [sys.executable, "-m", f"tools.bench.{script}", "--no-write", "--elements", "4096", "--repeats", "1"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith(row)]
    assert len(rows) == 1 and len(rows[0].split("|")) == columns + 2
