"""A module of submask as it was at an earlier git revision, imported beside today's: the baseline of a
benchmark that times a change against the code it replaced, in one process and on the same data."""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
# Folders renamed since: a revision older than the rename holds the module under its old folder.
OLD_FOLDERS = {"submask/builder/": "submask/build/"}


def module_at(revision: str, path: str) -> ModuleType:
    """The module at ``path`` (e.g. "submask/builder/kernels.py") as it was at ``revision``, imported in its own
    package under another name, so its relative imports resolve to today's modules. Its source stays on disk
    until the process exits (numba caches compiled kernels next to their source file)."""
    source = subprocess.run(["git", "show", f"{revision}:{_path_at(revision, path)}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="submask-baseline-"))
    atexit.register(shutil.rmtree, folder, True)
    file = folder / Path(path).name
    file.write_text(source)
    package = ".".join(Path(path).with_suffix("").parts[:-1])
    spec = importlib.util.spec_from_file_location(f"{package}._baseline_{file.stem}", file)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


def _path_at(revision: str, path: str) -> str:
    """Where today's ``path`` was at ``revision``: itself, or its folder's old name before a rename."""
    for new, old in OLD_FOLDERS.items():
        moved = path.replace(new, old, 1)
        if path.startswith(new) and not _exists(revision, path) and _exists(revision, moved):
            return moved
    return path


def _exists(revision: str, path: str) -> bool:
    probe = subprocess.run(["git", "cat-file", "-e", f"{revision}:{path}"], cwd=ROOT, capture_output=True)
    return probe.returncode == 0


def revision_available(revision: str) -> bool:
    """True when this checkout holds ``revision`` (a shallow clone may not)."""
    return subprocess.run(["git", "cat-file", "-e", revision], cwd=ROOT, capture_output=True).returncode == 0


def time_alternately(runs: dict[str, Callable[[], object]], repeats: int,
                     sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Best wall time of each run over ``repeats`` rounds in which the runs take turns, so that a baseline and
    its replacement see the same machine load (``sync`` waits for a device around each run)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            sync()
            started = time.perf_counter()
            run()
            sync()
            best[name] = min(best[name], time.perf_counter() - started)
    return best
