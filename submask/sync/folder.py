"""The file transport of a weight sync: a folder of step patches and snapshots, each published atomically.

``STEP.patch.smask`` holds the patch that produces step STEP (10 digits), ``STEP.snapshot.smask`` the whole state
at step STEP. A sender publishes patches in step order; a receiver reads a snapshot, then each patch after it.

>>> folder = submask.PatchFolder("sync/")                             # doctest: +SKIP
>>> folder.publish(sync.diff())                                       # sender, every step
>>> step = submask.WeightSync.resume(model, folder.latest_snapshot()) # receiver, at (re)start
>>> for patch in folder.patches(after=step): patch.apply_to(model)    # receiver, each poll
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_write, check_target
from ..errors import UsageError
from .patch import Patch

_NAME = re.compile(r"(\d{10})\.(patch|snapshot)\.smask")


class PatchFolder:
    """Step patches and snapshots in the folder ``path`` (created on the first publish)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def publish(self, patch: Patch) -> Path:
        """Write ``patch`` (or a snapshot) atomically under its step's name; a patch must follow the last one
        published (UsageError otherwise), and no file is replaced (OutputError)."""
        last = self.last_step()
        if not patch.is_snapshot and last is not None and patch.step != last + 1:
            raise UsageError(f"{self.path}: the last patch published is for step {last}; publish step {last + 1} "
                             f"before step {patch.step} (receivers apply patches in order)")
        target = check_target(self.path / self._name(patch.step, patch.is_snapshot))
        with atomic_write(target) as out:
            out.write(patch.to_bytes())
        return target

    def last_step(self) -> int | None:
        """The step of the last patch published, or None when there is none."""
        steps = self._steps("patch")
        return max(steps) if steps else None

    def latest_snapshot(self) -> Patch | None:
        """The snapshot of the latest step, or None when there is none."""
        steps = self._steps("snapshot")
        return self._read(max(steps), snapshot=True) if steps else None

    def patches(self, after: int) -> Iterator[Patch]:
        """The patches of steps ``after + 1``, ``after + 2``, ... as far as they are published without a gap."""
        step = after + 1
        while (self.path / self._name(step, snapshot=False)).exists():
            yield self._read(step, snapshot=False)
            step += 1

    def prune(self, before: int) -> list[Path]:
        """Remove the patches and snapshots of steps before ``before`` (a receiver resumes from a later
        snapshot); returns the files removed."""
        removed = []
        for path in sorted(self.path.glob("*.smask")):
            match = _NAME.fullmatch(path.name)
            if match and int(match[1]) < before:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _steps(self, kind: str) -> list[int]:
        if not self.path.is_dir():
            return []
        return [int(match[1]) for path in self.path.iterdir()
                if (match := _NAME.fullmatch(path.name)) and match[2] == kind]

    def _read(self, step: int, snapshot: bool) -> Patch:
        path = self.path / self._name(step, snapshot)
        return Patch.from_bytes(path.read_bytes(), source=path)

    @staticmethod
    def _name(step: int, snapshot: bool) -> str:
        return f"{step:010d}.{'snapshot' if snapshot else 'patch'}.smask"


__all__ = ["PatchFolder"]
