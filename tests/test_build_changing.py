"""A checkpoint changed by another process while ``build`` reads it: a typed SourceError, never a signal
and never a mask of neither state (issue 10, item 3)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

import submask  # noqa: E402
from submask.builder import build_mask  # noqa: E402

NUMEL = 8 * 1024 * 1024  # bf16 elements per tensor: 16 MiB, read in 1 MiB chunks by the racing builds
CHANGED = "the checkpoint changed while the build read it"

# Opens both sources, says so, waits for the test to change a file, then builds from the open sources.
PAUSED_BUILD = """
import sys
from submask.builder import build_mask
from submask.checkpoints import local_source
base, finetuned = local_source(sys.argv[1]), local_source(sys.argv[2])
print("opened", flush=True)
sys.stdin.readline()
build_mask(base, finetuned, sys.argv[3], workers=1, chunk_bytes=1 << 20)
"""

RACING_BUILD = """
import sys
from submask.builder import build_mask
build_mask(sys.argv[1], sys.argv[2], sys.argv[3], workers=1, chunk_bytes=1 << 20)
"""


def _pair(root: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Base, finetuned and a same-sized third checkpoint (other values) to copy over the finetuned one."""
    generator = torch.Generator().manual_seed(seed)
    base = {f"layer.{k}.weight": torch.randn(NUMEL // 1024, 1024, generator=generator).to(torch.bfloat16)
            for k in range(2)}
    finetuned = {name: value.clone() for name, value in base.items()}
    other = {name: value.clone() for name, value in base.items()}
    for name in base:
        finetuned[name].view(-1)[::3] += 1
        other[name].view(-1)[::5] -= 1
    paths = root / "base.safetensors", root / "finetuned.safetensors", root / "other.safetensors"
    for path, state in zip(paths, (base, finetuned, other)):
        save_file(state, path)
    return paths


def _truncate(path: Path, other: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _copy_over(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)  # what `cp other path` does: truncate, then write, same inode


def _rewrite_in_place(path: Path, other: Path) -> None:
    with open(path, "r+b") as handle:  # same size, same inode: only the bytes and the mtime tell
        handle.seek(path.stat().st_size // 2)
        handle.write(b"\x7f" * 4096)


def _replace(path: Path, other: Path) -> None:
    staged = path.with_suffix(".new")
    shutil.copyfile(other, staged)
    os.replace(staged, path)


CHANGES: dict[str, Callable[[Path, Path], None]] = {
    "truncate": _truncate, "cp-over": _copy_over, "rewrite-in-place": _rewrite_in_place, "replace": _replace}


def _run(script: str, *args: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("change", CHANGES)
def test_change_after_open_fails_with_source_error(tmp_path: Path, change: str) -> None:
    base, finetuned, other = _pair(tmp_path)
    out = tmp_path / "rl.smask"
    child = _run(PAUSED_BUILD, base, finetuned, out)
    assert child.stdout.readline() == "opened\n"
    time.sleep(0.05)  # past the coarse clock tick of the file's last write, so its mtime moves
    CHANGES[change](finetuned, other)
    _, stderr = child.communicate("go\n", timeout=120)
    assert child.returncode == 1, stderr
    line = _last_line(stderr)
    assert line.startswith("submask.errors.SourceError: ") and str(finetuned) in line and CHANGED in line, line
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("change", ["truncate", "cp-over", "rewrite-in-place"])
def test_change_during_reads_never_kills_or_mixes(tmp_path: Path, change: str) -> None:
    """The change lands while chunks are being read: before, a truncation here was a SIGBUS."""
    base, finetuned, other = _pair(tmp_path)
    expected = build_mask(base, finetuned).mask
    for attempt in range(3):
        out = tmp_path / f"rl{attempt}.smask"
        child = _run(RACING_BUILD, base, finetuned, out)
        _wait_until_open(child.pid, finetuned)
        time.sleep(0.02 * attempt)
        CHANGES[change](finetuned, other)
        _, stderr = child.communicate(timeout=120)
        assert child.returncode != -signal.SIGBUS, "killed by SIGBUS"
        if child.returncode == 0:  # the build finished before the change: then it is the mask of the old state
            assert dict(submask.load(out)) == dict(expected)
        else:
            assert child.returncode == 1, stderr
            line = _last_line(stderr)
            assert line.startswith("submask.errors.SourceError: ") and CHANGED in line, line
            assert not out.exists()
        _pair(tmp_path)  # restore the finetuned checkpoint for the next attempt


def _wait_until_open(pid: int, path: Path) -> None:
    """Until process ``pid`` holds ``path`` open (its build has started reading it)."""
    target = str(path.resolve())
    for _ in range(2000):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd")):
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never opened {path}")


def test_provenance_tells_the_file_state(tmp_path: Path) -> None:
    base, finetuned, _ = _pair(tmp_path)
    mask = build_mask(base, finetuned).mask
    stat = finetuned.stat()
    assert mask.metadata.provenance["finetuned"]["files"] == {
        "finetuned.safetensors": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": None}}
    assert mask.count == 2 * len(np.arange(0, NUMEL, 3))


def test_hash_records_the_sha256_of_local_files(tmp_path: Path) -> None:
    import hashlib

    base, finetuned, _ = _pair(tmp_path)
    out = tmp_path / "rl.smask"
    build_mask(base, finetuned, out, hash=True, chunk_bytes=1 << 20).path
    files = submask.load(out).metadata.provenance
    for side, path in (("base", base), ("finetuned", finetuned)):
        entry = files[side]["files"][path.name]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["size"] == path.stat().st_size
    assert build_mask(base, finetuned).mask.metadata.provenance["base"]["files"][base.name]["sha256"] is None


@pytest.mark.parametrize("change", CHANGES)
def test_counting_a_checkpoint_changed_after_open_fails_with_source_error(tmp_path: Path, change: str) -> None:
    """``count_changes`` (what the tracker counts with) checks the files as a build does: never counts of a
    file that changed while it was read."""
    from submask.checkpoints import local_source

    base, finetuned, other = _pair(tmp_path)
    with local_source(base) as opened_base, local_source(finetuned) as opened_finetuned:
        time.sleep(0.05)  # past the coarse clock tick of the file's last write, so its mtime moves
        CHANGES[change](finetuned, other)
        with pytest.raises(submask.SourceError, match=CHANGED):
            submask.count_changes(opened_base, opened_finetuned, workers=1, chunk_bytes=1 << 20)
