"""A process starts fast: light imports, numba left unstarted for small jobs, kernels cached across processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import submask
from submask.accel import START_UP_WORK, numba_enabled


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_loads_no_compiler_progress_bar_or_zstd() -> None:
    code = ("import sys, submask, submask.cli; "
            "print(','.join(m for m in ('numba', 'tqdm', 'zstandard', 'isal') if m in sys.modules))")
    assert run_python(code) == ""


def save_pair(tmp_path: Path, shape: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(7)
    paths = []
    for label in ("a", "b"):
        arrays = {f"layers.{i}.weight": rng.random(shape) < 0.03 for i in range(3)}
        paths.append(tmp_path / f"{label}.smask")
        submask.save(submask.Mask.from_numpy(arrays), paths[-1])
    return paths


def test_a_small_comparison_leaves_numba_unstarted(tmp_path: Path) -> None:
    a, b = save_pair(tmp_path, (64, 512))
    assert 2 * 3 * 64 * 512 < START_UP_WORK
    expected = submask.compare([a, b]).pair(0, 1).intersection
    code = ("import sys, submask; "
            f"r = submask.compare([{str(a)!r}, {str(b)!r}]).pair(0, 1); "
            "print(r.intersection, 'numba' in sys.modules)")
    assert run_python(code) == f"{expected} False"


def test_a_small_comparison_starts_no_threads(tmp_path: Path) -> None:
    a, b = save_pair(tmp_path, (64, 512))
    expected = submask.compare([a, b]).pair(0, 1).intersection
    code = ("import sys, threading, submask, submask.cli; "
            f"r = submask.compare([{str(a)!r}, {str(b)!r}]).pair(0, 1); "  # one task: run in this thread
            "print(r.intersection, threading.active_count(), 'concurrent.futures' in sys.modules)")
    assert run_python(code) == f"{expected} 1 False"


@pytest.mark.skipif(not numba_enabled(), reason="numba is not installed or switched off")
def test_a_large_job_starts_the_kernels_and_the_result_is_the_same(tmp_path: Path) -> None:
    a, b = save_pair(tmp_path, (64, 512))
    expected = submask.compare([a, b]).pair(0, 1).intersection
    code = ("import sys, submask, submask.accel as accel; "
            "accel.START_UP_WORK = 1000; "  # far below these masks' 2 x 98,304 elements: a large job
            f"r = submask.compare([{str(a)!r}, {str(b)!r}]).pair(0, 1); "
            "print(r.intersection, accel.numba_started())")
    assert run_python(code) == f"{expected} True"


@pytest.mark.skipif(not numba_enabled(), reason="numba is not installed or switched off")
def test_compiled_kernels_load_from_the_disk_cache_in_the_next_process() -> None:
    code = ("import numpy as np; from submask.codecs.rice import RiceCodec; "
            "from submask.codecs.rice_kernels import rice_block; "
            "bits = np.packbits(np.random.default_rng(1).random(5000) < 0.05); "
            "payload, config = RiceCodec().encode(bits, 5000); "
            "assert (RiceCodec().from_config(config).decode(payload, 5000) == bits).all(); "
            "stats = rice_block.compiled.stats; "
            "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))")
    run_python(code)  # compiles and writes the cache, unless an earlier process did
    assert run_python(code) == "1 0"
