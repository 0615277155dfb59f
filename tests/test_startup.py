"""A process starts fast: light imports, numba left unstarted for small jobs, kernels cached across processes."""

from __future__ import annotations

import json
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


# -- what a process imports (the lazy package and command line) -------------------------------------------------

#: never imported by ``import submask`` nor by a command on small local masks
HEAVY = ("torch", "huggingface_hub", "numba", "tqdm", "transformers", "safetensors")


#: reports, at exit, every module the process imported (``-X importtime`` misses those ``importlib`` loads)
REPORT = "import atexit, sys; atexit.register(lambda: sys.stderr.write('\\nimported ' + ' '.join(sys.modules)))"


def imported_by(*arguments: str, code: str | None = None) -> set[str]:
    """The modules a ``python -m submask ARGUMENTS`` process (or ``python -c CODE``) has imported by its exit."""
    run = code or "import runpy; runpy.run_module('submask', run_name='__main__', alter_sys=True)"
    result = subprocess.run([sys.executable, "-c", f"{REPORT}; {run}", *arguments], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stderr.rsplit("\nimported ", 1)[1].split())


def heavy(modules: set[str], *more: str) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY or m.startswith(more)}


def test_import_submask_loads_no_numpy_and_nothing_heavy() -> None:
    modules = imported_by(code="import submask")
    assert "submask" in modules
    assert heavy(modules, "numpy") == set()


@pytest.mark.parametrize("command", ["compare", "info"])
def test_a_command_on_small_local_masks_imports_only_what_it_needs(tmp_path: Path, command: str) -> None:
    a, b = save_pair(tmp_path, (64, 512))
    modules = imported_by(command, "--json", str(a), *([str(b)] if command == "compare" else []))
    assert "submask.format.reader" in modules and "numpy" in modules
    # nor the Hub client's modules, checkpoint readers, the writer, the builder or the other commands
    others = ("submask.hub.pull", "submask.hub.push", "submask.checkpoints", "submask.format.writer", "submask.builder",
              "submask.apply", "submask.atomic", "submask.combine", "submask.cli.build", "submask.cli.plot")
    assert heavy(modules, *others) == set()


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A safetensors file written by hand (8-byte header length, JSON header, data): no torch or safetensors."""
    header, offset = {}, 0
    for name, array in arrays.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded
                     + b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in arrays.values()))
    return path


def test_rebuild_command_imports_no_torch_hub_numba_or_progress_bar(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    weights = {f"layers.{i}.weight": rng.standard_normal((64, 96)).astype(np.float32) for i in range(3)}
    moved = {name: np.where(rng.random(w.shape) < 0.1, w + 0.01, w).astype(np.float32) for name, w in weights.items()}
    base = write_safetensors(tmp_path / "base.safetensors", weights)
    finetuned = write_safetensors(tmp_path / "model.safetensors", moved)
    submask.build_mask(base, finetuned, tmp_path / "d.smask", values=True)
    modules = imported_by("apply", str(base), str(tmp_path / "d.smask"), "-o", str(tmp_path / "out"))
    assert "submask.rebuild" in modules
    assert heavy(modules, "submask.hub.pull", "submask.builder.pipeline", "submask.cli.build") == set()
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == finetuned.read_bytes()
