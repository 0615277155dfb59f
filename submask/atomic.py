"""Atomic file writes: a temp file in the target's directory, fsynced, then renamed over the target."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only if the block finishes without an exception.

    On any exception, KeyboardInterrupt included, the temp file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), _file_mode(target))
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


def _file_mode(target: Path) -> int:
    """The mode the file would get from a plain open(): the old file's, else 0o666 minus the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def scratch_file(directory: str | os.PathLike[str], prefix: str) -> Iterator[BinaryIO]:
    """A read-write temp file in ``directory`` that is always deleted when the block ends."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=prefix, suffix=".part", delete=False)
    try:
        with handle:
            yield handle
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
