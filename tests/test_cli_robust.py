"""The command line as a user meets it, through real subprocesses: one overwrite policy, one-line errors and
no tracebacks (full disk, bad paths, bad Hub ids), Ctrl-C and SIGTERM, temp files left by kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from masks import random_mask

import submask
from submask import Mask, OutputError
from submask.atomic import remove_stale

CLOSED_ENDPOINT = "http://127.0.0.1:9"  # nothing listens: a test that reached the network would fail


def cli(*args: object, cwd: Path | None = None, limit_bytes: int | None = None,
        umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m submask ARGS`` in a real process; ``limit_bytes`` caps file sizes (writes then fail: EFBIG)."""
    def prepare() -> None:
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write instead of a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, "-m", "submask", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, preexec_fn=prepare, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 1) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr


def small_mask(seed: int = 0, density: float = 0.2) -> Mask:
    return random_mask({"layers.0.w": (20, 30), "layers.1.w": (50,)}, density, seed)


# -- one overwrite policy, checked before the work -------------------------------------------------------------

def test_build_refuses_an_existing_output_before_reading_the_inputs(minilm_bf16, tmp_path: Path) -> None:
    existing = tmp_path / "old.smask"
    existing.write_bytes(b"keep me")
    # the inputs do not exist: an output check that ran after the work would report them instead
    result = cli("build", tmp_path / "no-base", tmp_path / "no-finetuned", "-o", existing)
    assert_one_line_error(result, str(existing), "exists", "--overwrite")
    assert existing.read_bytes() == b"keep me"
    assert_one_line_error(cli("build", tmp_path / "a", tmp_path / "b", "-o", tmp_path), "is a directory")
    under_file = existing / "x.smask"
    assert_one_line_error(cli("build", tmp_path / "a", tmp_path / "b", "-o", under_file), "not a directory")
    # a model's own weights are never replaced by a mask, --overwrite or not
    weights = minilm_bf16.finetuned_file
    before = weights.stat().st_mtime_ns, weights.stat().st_size
    for extra in ([], ["--overwrite"]):
        result = cli("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", weights, *extra)
        assert_one_line_error(result, str(weights))
    assert (weights.stat().st_mtime_ns, weights.stat().st_size) == before


def test_build_json_and_overwrite(minilm_bf16, tmp_path: Path) -> None:
    out = tmp_path / "rl.smask"
    first = cli("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", out, "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    mask = submask.load(out)
    assert (summary["path"], summary["count"], summary["numel"]) == (str(out), mask.count, mask.numel)
    assert summary["density"] == pytest.approx(mask.density) and summary["ladder"][0]["count"] == mask.count
    assert first.stderr == ""  # stderr is not a terminal: no progress bar unless --progress
    assert_one_line_error(cli("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", out), "exists")
    again = cli("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", out, "--overwrite", "--progress")
    assert again.returncode == 0 and "build" in again.stderr and "density" in again.stdout
    assert submask.load(out) == mask
    assert mask.metadata.provenance["base"]["files"]["model.safetensors"]["sha256"] is None  # not asked for
    hashed = cli("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", out, "--overwrite", "--hash", "-q")
    assert hashed.returncode == 0, hashed.stderr
    files = submask.load(out).metadata.provenance
    for side, pair_dir in (("base", minilm_bf16.base), ("finetuned", minilm_bf16.finetuned)):
        expected = hashlib.sha256((pair_dir / "model.safetensors").read_bytes()).hexdigest()
        assert files[side]["files"]["model.safetensors"]["sha256"] == expected


def test_combine_and_save_refuse_existing_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.smask", tmp_path / "b.smask"
    submask.save(small_mask(0), a)
    submask.save(small_mask(1), b)
    with pytest.raises(OutputError, match="exists.*overwrite"):
        submask.save(small_mask(2), a)
    assert submask.load(a) == small_mask(0)
    submask.save(small_mask(2), a, overwrite=True)
    assert submask.load(a) == small_mask(2)
    target = tmp_path / "both.smask"
    target.write_bytes(b"old")
    assert_one_line_error(cli("combine", "and", a, b, "-o", target), "exists", "--overwrite")
    assert target.read_bytes() == b"old"
    assert_one_line_error(cli("combine", "and", a, b, "-o", a, "--overwrite"), "input")
    result = cli("combine", "and", a, b, "-o", target, "--overwrite", "--json")
    assert result.returncode == 0
    expected = {n: small_mask(2)[n].to_numpy() & small_mask(1)[n].to_numpy() for n in small_mask(1)}
    assert json.loads(result.stdout)["count"] == sum(int(v.sum()) for v in expected.values())


def test_apply_json_and_output_mode_follows_the_umask(minilm_bf16, tmp_path: Path) -> None:
    mask = tmp_path / "m.smask"
    submask.build_mask(minilm_bf16.base, minilm_bf16.finetuned, mask).path
    out = tmp_path / "applied"
    result = cli("apply", minilm_bf16.base, minilm_bf16.finetuned, mask, "-o", out, "--json", umask=0o022)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == submask.load(mask).count and report["path"] == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # as mkdir makes it, not mkdtemp's 0700
    assert_one_line_error(cli("apply", minilm_bf16.base, minilm_bf16.finetuned, mask, "-o", out), "not empty")


# -- a full disk: one line naming the target, nothing partial left ---------------------------------------------

def test_a_full_disk_is_one_line_and_leaves_nothing(minilm_bf16, tmp_path: Path) -> None:
    mask = tmp_path / "m.smask"
    submask.build_mask(minilm_bf16.base, minilm_bf16.finetuned, mask).path
    out = tmp_path / "out"
    out.mkdir()
    result = cli("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", out / "rl.smask", limit_bytes=4096)
    assert_one_line_error(result, str(out / "rl.smask"), "larger than this file system or process allows")
    result = cli("apply", minilm_bf16.base, minilm_bf16.finetuned, mask, "-o", out / "model", limit_bytes=1 << 20)
    assert_one_line_error(result, str(out / "model"), "nothing was written")
    assert list(out.iterdir()) == []
    save = textwrap.dedent(f"""
        import numpy as np, submask
        submask.save(submask.Mask.from_numpy({{"w": np.random.default_rng(0).random(100_000) < 0.5}}),
                     {str(out / "w.smask")!r})
    """)
    result = subprocess.run([sys.executable, "-c", save], capture_output=True, text=True,
                            preexec_fn=lambda: (signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
                                                resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))))
    assert result.returncode == 1 and "submask.errors.OutputError" in result.stderr and "w.smask" in result.stderr
    assert list(out.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A 256 KiB tmpfs (needs root and mount), unmounted after the test."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_really_full_file_system(minilm_bf16, tiny_tmpfs: Path) -> None:
    (tiny_tmpfs / "filler").write_bytes(b"\0" * (200 << 10))
    result = cli("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", tiny_tmpfs / "rl.smask")
    assert_one_line_error(result, str(tiny_tmpfs / "rl.smask"), "the disk is full")
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["filler"]
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    result = cli("combine", "not", minilm_bf16.base / "m.smask", "-o", tiny_tmpfs / "x.smask")
    assert_one_line_error(result, str(tiny_tmpfs / "x.smask"), "cannot write into")  # before opening the input


# -- bad Hub ids and paths: one line, no traceback, no network -------------------------------------------------

@pytest.mark.parametrize("repo", ["../..", "org/-bad", "org/naïve"])
def test_invalid_hub_repo_ids_are_one_line(repo: str, tmp_path: Path) -> None:
    assert_one_line_error(cli("ls", repo, "--endpoint", CLOSED_ENDPOINT), repr(repo))
    assert_one_line_error(cli("pull", repo, "m.smask", "--endpoint", CLOSED_ENDPOINT), repr(repo))


def test_pull_output_is_checked_before_the_download(tmp_path: Path) -> None:
    existing = tmp_path / "m.smask"
    existing.write_bytes(b"keep")
    result = cli("pull", "org/model", "m.smask", "-o", existing, "--endpoint", CLOSED_ENDPOINT)
    assert_one_line_error(result, "exists", "--overwrite")  # not "cannot reach": refused before the network
    assert existing.read_bytes() == b"keep"


# -- Ctrl-C and SIGTERM ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("when", ["importing", "running"])
def test_signals_give_one_line_and_their_exit_status(tmp_path: Path, signum: int, when: str) -> None:
    """During the imports (right after submask's first module, read from -X importtime) or while the command
    runs (it waits on a FIFO nobody writes): one line, exit 130 for SIGINT and 143 for SIGTERM."""
    fifo = tmp_path / "fifo.smask"
    os.mkfifo(fifo)
    process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "submask", "info", str(fifo)],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines = []
    while not lines or not lines[-1].rstrip().endswith("submask.interrupts"):
        lines.append(process.stderr.readline())
        assert lines[-1], "the submask package was never imported"
    if when == "running":
        while "submask.cli" not in lines[-1]:
            lines.append(process.stderr.readline())
        time.sleep(0.5)
    else:
        assert not any(line.rstrip().endswith("| submask.cli") for line in lines)  # still importing
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    messages = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert process.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert messages == [f"error: {'interrupted' if signum == signal.SIGINT else 'terminated'} "
                        f"({signal.Signals(signum).name})"]


def test_a_swallowed_interrupt_still_exits_130() -> None:
    """Code that catches BaseException (numba's compiler callbacks once did) must not turn Ctrl-C into exit 0."""
    script = textwrap.dedent("""
        import os, signal, time
        import click
        from submask.cli import main

        @main.command()
        def swallow():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except BaseException:
                pass
            click.echo("finished")

        main(["swallow"], prog_name="submask")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (130, "finished\n")
    assert result.stderr == "error: interrupted (SIGINT)\n"


# -- temp files of a killed process are removed by the next run -------------------------------------------------

def _start_and_wait(script: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "writing\n"
    return process


def test_apply_staging_left_by_kill_9_is_removed_by_the_next_run(minilm_bf16, tmp_path: Path) -> None:
    mask = tmp_path / "m.smask"
    submask.build_mask(minilm_bf16.base, minilm_bf16.finetuned, mask).path
    work = tmp_path / "work"
    process = _start_and_wait(f"""
        import sys, time, submask
        def slow(nbytes, total):  # a progress hook that stalls the write halfway into the first shard
            print("writing", flush=True)
            time.sleep(600)
        submask.apply_mask({str(minilm_bf16.base)!r}, {str(minilm_bf16.finetuned)!r}, {str(mask)!r},
                           {str(work / "applied")!r}, progress=slow)
    """)
    left = [p for p in work.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".applied.") and (left[0] / "model.safetensors").stat().st_size
    assert remove_stale(work) == [] and left[0].exists()  # its owner is alive: not touched
    process.kill()
    process.wait()
    result = cli("apply", minilm_bf16.base, minilm_bf16.finetuned, mask, "-o", work / "again", "-q")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in work.iterdir()] == ["again"]


def test_rebuild_staging_left_by_kill_9_is_removed_by_the_next_run(minilm_bf16, tmp_path: Path) -> None:
    delta = submask.build_mask(minilm_bf16.base, minilm_bf16.finetuned, tmp_path / "d.smask", values=True).path
    work = tmp_path / "work"
    process = _start_and_wait(f"""
        import time, submask
        def slow(nbytes, total):  # stalls the rebuild once the header is on its way to the file
            print("writing", flush=True)
            time.sleep(600)
        submask.apply_mask({str(minilm_bf16.base)!r}, {str(delta)!r}, {str(work / "rebuilt")!r}, progress=slow)
    """)
    left = [p for p in work.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".rebuilt.") and (left[0] / "model.safetensors").exists()
    process.kill()
    process.wait()
    assert [p.name for p in work.iterdir()] == [left[0].name]  # a kill leaves no file under the final name
    result = cli("apply", minilm_bf16.base, delta, "-o", work / "again", "-q")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in work.iterdir()] == ["again"]
    assert (work / "again" / "model.safetensors").read_bytes() == minilm_bf16.finetuned_file.read_bytes()


def test_build_part_files_left_by_kill_9_are_removed_by_the_next_run(minilm_bf16, tmp_path: Path) -> None:
    process = _start_and_wait(f"""
        import time, numpy as np
        import submask.format.writer
        from submask import MaskMetadata, MaskWriter, TensorMask
        submask.format.writer.SPILL_BYTES = 0  # payloads to the scratch file at once (else held in memory)
        with MaskWriter({str(tmp_path / "rl.smask")!r}, MaskMetadata()) as writer:
            writer.add("w", TensorMask.from_numpy(np.ones(1000, bool)))
            writer._shards[0].data.file.flush()
            print("writing", flush=True)
            time.sleep(600)
    """)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".rl.smask.") and left[0].endswith(".part")
    process.kill()
    process.wait()
    result = cli("build", minilm_bf16.base, minilm_bf16.finetuned, "-o", tmp_path / "rl.smask", "-q")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["rl.smask"]


def test_demo_output_option_and_policy(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for flag in ("-o", "--output", "--out"):  # --out: the former name, kept as a hidden alias
        assert_one_line_error(cli("demo", flag, tmp_path, "--steps", "1"), str(tmp_path), "not empty", "--overwrite")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    usage = cli("demo", "--help").stdout
    assert "-o, --output" in usage and "--out " not in usage and "--overwrite" in usage
