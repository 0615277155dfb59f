"""Sharded masks: names per target and write, shard records checked on read, atomic publish under faults."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from masks import random_mask

import submask
from submask import FormatError, Mask

SHAPES = {f"layer{i}.w": (96, 64) for i in range(6)}


def make_mask(seed: int, tensors: int = 6) -> Mask:
    return random_mask({f"layer{i}.w": (96, 64) for i in range(tensors)}, 0.3, seed)


def save_sharded(mask: Mask, path: Path) -> dict:
    """Save ``mask`` in one shard per tensor; returns its index."""
    submask.save(mask, path, encoding="raw", max_shard_bytes=800, overwrite=True)
    return json.loads(path.with_name(path.name + ".index.json").read_text())


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_shards_are_named_after_the_target_and_the_write(tmp_path: Path) -> None:
    index = save_sharded(make_mask(1), tmp_path / "rl.smask")
    write_id = index["metadata"]["write_id"]
    assert len(write_id) == 32 and index["metadata"]["version"] == "1.3"
    shards = list(dict.fromkeys(index["weight_map"].values()))
    assert shards == [f"rl-{write_id[:8]}-{k:05d}-of-00006.smask" for k in range(1, 7)]
    with submask.open(tmp_path / "rl.smask") as mask_file:
        assert mask_file.write_id == write_id and [p.name for p in mask_file.shards] == shards
        assert "shard" not in mask_file.metadata.extra  # a record of the file, not metadata to copy
    for number, shard in enumerate(shards, 1):
        with submask.open(tmp_path / shard) as one:
            header = one._containers[0].header
        assert header["shard"] == {"write_id": write_id, "number": number, "count": 6}
        assert header["version"] == "1.3" and list(header)[-2:] == ["shard", "tensors"]


def test_two_sharded_masks_in_one_directory_stay_apart(tmp_path: Path) -> None:
    a, b = make_mask(1), make_mask(2)
    save_sharded(a, tmp_path / "rl.smask")
    save_sharded(b, tmp_path / "rl")  # the same stem
    assert submask.load(tmp_path / "rl.smask").tensors == a.tensors
    assert submask.load(tmp_path / "rl").tensors == b.tensors


def test_rewriting_a_sharded_mask_uses_fresh_names_and_removes_the_old_shards(tmp_path: Path) -> None:
    target = tmp_path / "rl.smask"
    old = save_sharded(make_mask(1), target)
    (tmp_path / "unrelated-00001-of-00002.smask").write_bytes(b"not ours")
    new_mask = make_mask(2, tensors=4)
    new = save_sharded(new_mask, target)
    assert not set(old["weight_map"].values()) & set(new["weight_map"].values())
    assert sorted(snapshot(tmp_path)) == sorted({"rl.smask.index.json", "unrelated-00001-of-00002.smask",
                                                 *new["weight_map"].values()})
    assert submask.load(target).tensors == new_mask.tensors
    # a fixed write id whose names exist already still gets names of its own
    again = submask.MaskWriter(target, new_mask.metadata, max_shard_bytes=800, write_id=new["metadata"]["write_id"],
                                 overwrite=True)
    with again as writer:
        for name, tensor in new_mask.items():
            writer.add(name, tensor, "raw")
    assert {p.name for p in again.paths[:-1]}.isdisjoint(new["weight_map"].values())
    assert submask.load(target).tensors == new_mask.tensors


def test_a_sharded_write_replaces_a_single_file_at_its_path(tmp_path: Path) -> None:
    target = tmp_path / "rl.smask"
    submask.save(make_mask(1), target)
    sharded = make_mask(2)
    save_sharded(sharded, target)
    assert not target.exists() and submask.load(target).tensors == sharded.tensors


def mix(directory: Path, target: str, donor: Path) -> tuple[Path, str]:
    """Copy ``donor`` over the first shard of the mask at ``target`` (the old collision); returns it and its name."""
    index = json.loads((directory / f"{target}.index.json").read_text())
    first = next(iter(index["weight_map"].values()))
    shutil.copyfile(donor, directory / first)
    return directory / f"{target}.index.json", first


def test_a_shard_of_another_mask_or_write_is_refused(tmp_path: Path) -> None:
    save_sharded(make_mask(1), tmp_path / "a.smask")
    other = save_sharded(make_mask(2), tmp_path / "other" / "a.smask")  # same tensors in each shard
    index_path, first = mix(tmp_path, "a.smask", tmp_path / "other" / next(iter(other["weight_map"].values())))
    with pytest.raises(FormatError, match=rf"{first}: this shard belongs to write {other['metadata']['write_id']}"
                                          rf", but its index {index_path} is write"):
        submask.load(tmp_path / "a.smask")


def test_wrong_shard_numbers_are_refused(tmp_path: Path) -> None:
    index = save_sharded(make_mask(1, tensors=2), tmp_path / "a.smask")
    index_path = tmp_path / "a.smask.index.json"
    second = list(dict.fromkeys(index["weight_map"].values()))[1]
    # the second shard's tensors reassigned to the first: the first shard then holds tensors it should not
    index_path.write_text(json.dumps({**index, "weight_map": {name: second for name in index["weight_map"]}}))
    with pytest.raises(FormatError, match="shard holds other tensors|number 2 of 2"):
        submask.open(tmp_path / "a.smask")
    index_path.write_text(json.dumps({**index, "weight_map": {name: "..\\" + second for name in index["weight_map"]}}))
    with pytest.raises(FormatError, match="shard file names in the same directory"):
        submask.open(tmp_path / "a.smask")
    index_path.write_text(json.dumps({**index, "metadata": {**index["metadata"], "write_id": "X" * 32}}))
    with pytest.raises(FormatError, match="write_id' must be 32 lowercase hex digits"):
        submask.open(tmp_path / "a.smask")


def test_an_index_without_write_id_is_read_as_format_1_0(tmp_path: Path) -> None:
    mask = make_mask(1, tensors=2)
    index = save_sharded(mask, tmp_path / "a.smask")
    del index["metadata"]["write_id"]
    (tmp_path / "a.smask.index.json").write_text(json.dumps(index))
    assert submask.load(tmp_path / "a.smask").tensors == mask.tensors


def replace_failing_at(monkeypatch: pytest.MonkeyPatch, failing: int) -> list[str]:
    """Make the ``failing``-th os.replace of the process raise ENOSPC (0: none); returns the targets renamed."""
    real, calls = os.replace, []

    def replace(source: str, target: str) -> None:
        calls.append(Path(target).name)
        if len(calls) == failing:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_a_failure_at_any_rename_leaves_the_old_or_the_new_mask_whole(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    old_mask, new_mask = make_mask(1), make_mask(2, tensors=5)
    target = tmp_path / "mask" / "rl.smask"
    save_sharded(old_mask, target)
    before = snapshot(target.parent)
    with monkeypatch.context() as patch:
        renamed = replace_failing_at(patch, 0)
        save_sharded(new_mask, tmp_path / "count" / "rl.smask")
    assert len(renamed) == 6 and renamed[-1] == "rl.smask.index.json"  # 5 shards, then the index: the commit
    for failing in range(1, len(renamed) + 1):
        with monkeypatch.context() as patch:
            replace_failing_at(patch, failing)
            with pytest.raises(submask.OutputError, match="the disk is full"):
                save_sharded(new_mask, target)
        assert snapshot(target.parent) == before, failing  # the old mask, bit for bit, and nothing left over
        assert submask.load(target).tensors == old_mask.tensors
    save_sharded(new_mask, target)
    assert submask.load(target).tensors == new_mask.tensors and len(snapshot(target.parent)) == 6


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    import submask
    from submask import Mask

    rng = np.random.default_rng(int(sys.argv[2]))
    mask = Mask.from_numpy({f"t{i}": rng.random(4096) < 0.5 for i in range(int(sys.argv[3]))})
    submask.save(mask, Path(sys.argv[1]), encoding="raw", max_shard_bytes=512, overwrite=True)
""")


def write_in_subprocess(target: Path, seed: int, tensors: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(seed), str(tensors)])


def test_a_write_killed_midway_leaves_the_old_mask(tmp_path: Path) -> None:
    target = tmp_path / "rl.smask"
    write_in_subprocess(target, 1, 60).wait(timeout=60)
    old = submask.load(target)
    before = snapshot(tmp_path)
    inodes = {p.name: p.stat().st_ino for p in tmp_path.iterdir()}
    process = write_in_subprocess(target, 2, 60)  # as many shards, each fsynced
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if not p.name.startswith(".") and inodes.get(p.name) != p.stat().st_ino]:
        assert process.poll() is None and time.monotonic() < deadline, "no new shard appeared"
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert (tmp_path / "rl.smask.index.json").read_bytes() == before["rl.smask.index.json"]
    assert submask.load(target).tensors == old.tensors  # new shards are there, unreferenced: the old mask reads
    assert all(snapshot(tmp_path)[name] == data for name, data in before.items())


_DISK_FULL = textwrap.dedent("""
    import os, subprocess, sys
    from pathlib import Path
    import numpy as np
    import submask
    import submask.format.writer
    from submask import Mask

    root = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    rng = np.random.default_rng(0)
    old = Mask.from_numpy({f"t{i}": rng.random(40_000) < 0.5 for i in range(12)})  # 12 shards, 60 KB
    submask.save(old, root / "rl.smask", encoding="raw", max_shard_bytes=6_000)
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    # 12 shards, 600 KB: the payloads fit while they are spilled, the shards written from them do not (spilled
    # all: a writer otherwise keeps up to SPILL_BYTES of them in memory)
    submask.format.writer.SPILL_BYTES = 0
    new = Mask.from_numpy({f"t{i}": rng.random(400_000) < 0.5 for i in range(12)})
    try:
        submask.save(new, root / "rl.smask", encoding="raw", max_shard_bytes=60_000, overwrite=True)
    except OSError as exc:
        assert exc.errno == 28, exc
    else:
        raise AssertionError("the write fit on a 1 MiB file system")
    after = {p.name: p.read_bytes() for p in root.iterdir()}
    assert after == before, (sorted(set(after) ^ set(before)), [n for n in before if after.get(n) != before[n]])
    assert submask.load(root / "rl.smask").tensors == old.tensors
    print("old mask intact")
""")


def test_a_full_disk_leaves_the_old_mask(tmp_path: Path) -> None:
    """On a real 1 MiB tmpfs (in a private mount namespace), a sharded write that does not fit."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small tmpfs")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user and mount namespaces are not available here")
    (tmp_path / "fs").mkdir()
    result = subprocess.run(["unshare", "-rm", sys.executable, "-c", _DISK_FULL, str(tmp_path / "fs")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "old mask intact", result.stderr[-2000:]
