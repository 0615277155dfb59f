"""Orphan shards (issue 21, item 5): a sharded publish killed with SIGKILL leaves shards no index names; the next
write into that folder removes exactly those (its note names them), never another mask's files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import submask
from submask import Mask
from submask.format.reader import INDEX_SUFFIX

KILLED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import submask
    from submask.format.shards import publish_sharded

    target = Path(sys.argv[1])
    mask = submask.load(sys.argv[2])
    moment = sys.argv[3]

    def shard(number):
        return lambda out: out.write(bytes([number]) * 100)

    def index(names):
        if moment == "before_commit":
            os.kill(os.getpid(), signal.SIGKILL)  # every new shard is in place, the index is not
        return {"metadata": {"format": "submask", "version": "1.1"}, "weight_map": {}}

    if moment == "after_commit":  # a real SIGKILL placed after the commit: the old files are not deleted yet
        import submask.format.shards as shards
        real = shards._remove
        def killed(paths):
            paths = list(paths)
            if any(not p.name.endswith(".pending") for p in paths):
                os.kill(os.getpid(), signal.SIGKILL)
            real(paths)
        shards._remove = killed
        submask.save(mask, target, max_shard_bytes=60, overwrite=True)
    else:
        publish_sharded(target, None, [shard(1), shard(2)], index)
""")


def masks(seed: int) -> Mask:
    rng = np.random.default_rng(seed)
    return Mask.from_numpy({f"t{i}": rng.random(400) < 0.5 for i in range(3)}, kind="update")


def killed_write(folder: Path, target: Path, moment: str, mask_path: Path) -> None:
    process = subprocess.run([sys.executable, "-c", KILLED, str(target), str(mask_path), moment], timeout=120)
    assert process.returncode == -signal.SIGKILL


def shard_files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if path.suffix == ".smask" and "-of-" in path.name}


def test_the_next_write_removes_the_shards_of_a_publish_killed_before_its_commit(tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    folder.mkdir()
    submask.save(masks(1), folder / "x.smask", max_shard_bytes=60)  # the mask the killed write was replacing
    submask.save(masks(2), folder / "other.smask", max_shard_bytes=60)  # another mask in the same folder
    stranger = folder / "x-deadbeef-00001-of-00002.smask"  # a file like a shard of x that no note names
    stranger.write_bytes(b"not ours")
    kept = shard_files(folder)
    submask.save(masks(3), tmp_path / "source.smask")
    killed_write(folder, folder / "x.smask", "before_commit", tmp_path / "source.smask")
    orphans = shard_files(folder) - kept
    assert len(orphans) == 2  # the killed write's shards, named by no index
    assert submask.load(folder / "x.smask") == masks(1)  # readers still see the old mask
    submask.save(masks(4), folder / "y.smask")  # the next write into the folder, of another mask
    assert shard_files(folder) == kept and stranger.read_bytes() == b"not ours"
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]
    assert submask.load(folder / "x.smask") == masks(1) and submask.load(folder / "other.smask") == masks(2)


def test_the_next_write_finishes_a_publish_killed_after_its_commit(tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    folder.mkdir()
    submask.save(masks(1), folder / "x.smask", max_shard_bytes=60)
    old = shard_files(folder)
    submask.save(masks(3), tmp_path / "source.smask")
    killed_write(folder, folder / "x.smask", "after_commit", tmp_path / "source.smask")
    assert submask.load(folder / "x.smask") == masks(3)  # committed
    new = set(json.loads((folder / ("x.smask" + INDEX_SUFFIX)).read_text())["weight_map"].values())
    assert shard_files(folder) == old | new  # the old shards were left behind
    submask.save(masks(4), folder / "y.smask")
    assert shard_files(folder) == new
    assert submask.load(folder / "x.smask") == masks(3)


def test_a_live_writers_note_is_left_alone(tmp_path: Path) -> None:
    from submask.atomic import new_note
    from submask.format.shards import remove_orphans

    (tmp_path / "x-01234567-00001-of-00001.smask").write_bytes(b"being written")
    note = new_note(tmp_path / ("x.smask" + INDEX_SUFFIX), json.dumps(
        {"index": "x.smask" + INDEX_SUFFIX, "new": ["x-01234567-00001-of-00001.smask"], "old": [], "single": None}))
    assert remove_orphans(tmp_path) == []  # this process is alive: its write is not finished, not abandoned
    assert note.exists() and (tmp_path / "x-01234567-00001-of-00001.smask").exists()
    os.unlink(note)
