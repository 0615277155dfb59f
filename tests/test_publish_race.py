"""Two writers, one new path (issue 21, item 1): without overwrite a publish never replaces anything; exactly one
real process wins and the other refuses after its work, keeping nothing. With overwrite the last one wins whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from masks import random_mask
from safetensors.numpy import save_file

import submask

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    import submask
    from submask import Mask, OutputError
    from submask.apply import apply_mask
    from submask.format import MaskWriter
    from submask.metadata import MaskMetadata

    kind, target, me, folder, overwrite = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]

    def meet():
        (folder / f"ready-{me}").touch()  # past every check made before the work
        while not (folder / "go").exists():
            time.sleep(0.01)

    try:
        if kind == "apply":
            waited = []
            def progress(done, total):
                if not waited:
                    waited.append(meet())
            apply_mask(folder / "base.safetensors", folder / "ft.safetensors", folder / f"mask-{me}.smask",
                       target, progress=progress, overwrite=overwrite == "1")
        else:
            mask = submask.load(folder / f"mask-{me}.smask")
            shard_bytes = 100 if kind == "sharded" else None
            with MaskWriter(target, MaskMetadata(kind="update", user={"writer": me}), max_shard_bytes=shard_bytes,
                            overwrite=overwrite == "1") as writer:
                meet()
                for name, tensor in mask.items():
                    writer.add(name, tensor)
    except OutputError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
""")


def race(tmp_path: Path, kind: str, target: Path, overwrite: bool = False) -> list[subprocess.CompletedProcess[str]]:
    """Run two writers of ``target`` that both pass their checks before either publishes."""
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, kind, str(target), str(me), str(tmp_path),
                                   "1" if overwrite else "0"], stderr=subprocess.PIPE, text=True)
                 for me in (1, 2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{me}").exists() for me in (1, 2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "a writer did not start"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), "", p.stderr.read() if p.stderr else "")
            for p in processes]


def two_masks(tmp_path: Path) -> list[submask.Mask]:
    masks = [random_mask({"a": (40, 30), "b": (500,)}, 0.3, seed) for seed in (1, 2)]
    for me, mask in enumerate(masks, 1):
        submask.save(mask, tmp_path / f"mask-{me}.smask")
    return masks


def winner(results: list[subprocess.CompletedProcess[str]]) -> int:
    """The writer (1 or 2) that exited 0, once checking the other refused in one line."""
    codes = [result.returncode for result in results]
    assert sorted(codes) == [0, 1], [result.stderr for result in results]
    loser = results[codes.index(1)]
    assert "written by another process while this one worked" in loser.stderr, loser.stderr
    assert "Traceback" not in loser.stderr
    return codes.index(0) + 1


def same_bits(a: submask.Mask, b: submask.Mask) -> bool:
    return a.keys() == b.keys() and all(a[name] == b[name] for name in a)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


@pytest.mark.parametrize("kind", ["single", "sharded"])
def test_exactly_one_of_two_mask_writers_wins(tmp_path: Path, kind: str) -> None:
    masks = two_masks(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "x.smask"
    first = winner(race(tmp_path, kind, target))
    loaded = submask.load(target)
    assert loaded.metadata.user == {"writer": first}
    assert same_bits(loaded, masks[first - 1])
    if kind == "sharded":  # the loser's shards are gone: only the winner's index and shards are left
        index = submask.open(target)
        assert sorted(path.name for path in out.iterdir()) == sorted([*(p.name for p in index.shards),
                                                                      "x.smask.index.json"])
    else:
        assert sorted(path.name for path in out.iterdir()) == ["x.smask"]


def test_with_overwrite_the_last_writer_wins_whole(tmp_path: Path) -> None:
    masks = two_masks(tmp_path)
    target = tmp_path / "x.smask"
    results = race(tmp_path, "single", target, overwrite=True)
    assert [result.returncode for result in results] == [0, 0], [result.stderr for result in results]
    loaded = submask.load(target)
    assert same_bits(loaded, masks[loaded.metadata.user["writer"] - 1])
    assert not leftovers(tmp_path)


def test_exactly_one_of_two_model_folders_wins(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = {"a": rng.standard_normal((40, 30)).astype(np.float32), "b": rng.standard_normal(500).astype(np.float32)}
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file({name: value + 1 for name, value in base.items()}, str(tmp_path / "ft.safetensors"))
    masks = two_masks(tmp_path)
    target = tmp_path / "model"
    first = winner(race(tmp_path, "apply", target))
    from safetensors.numpy import load_file

    written = load_file(str(target / "model.safetensors"))  # a single file is written under the name transformers reads
    np.testing.assert_array_equal(written["a"], np.where(masks[first - 1]["a"].to_numpy(), base["a"] + 1, base["a"]))
    assert not leftovers(tmp_path)


def test_two_cli_writers_of_one_path_never_both_succeed(tmp_path: Path) -> None:
    two_masks(tmp_path)
    target = tmp_path / "x.smask"
    processes = [subprocess.Popen([sys.executable, "-m", "submask", "combine", "not",
                                   str(tmp_path / f"mask-{me}.smask"), "-o", str(target)],
                                  stderr=subprocess.PIPE, text=True) for me in (1, 2)]
    codes = sorted(process.wait(timeout=120) for process in processes)
    assert codes == [0, 1]
    assert not leftovers(tmp_path)


def test_each_no_replace_primitive_refuses_an_existing_target(tmp_path: Path) -> None:
    from submask.atomic import _link_noreplace, _rename_noreplace, _renameat2

    target = tmp_path / "x.smask"
    target.write_bytes(b"first")
    for publish in (_link_noreplace, _rename_noreplace) if _renameat2() else (_link_noreplace,):
        source = tmp_path / ".x.smask.tmp"
        source.write_bytes(b"second")
        with pytest.raises(FileExistsError):
            publish(source, target)
        assert target.read_bytes() == b"first" and source.exists()
        source.unlink()
    source = tmp_path / ".y.tmp"
    source.write_bytes(b"new")
    _link_noreplace(source, tmp_path / "y.smask")
    assert (tmp_path / "y.smask").read_bytes() == b"new" and not source.exists()
