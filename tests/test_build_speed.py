"""What makes a build faster must not change what it writes: planes coded in parallel, their zstd levels, the
finished tensors queued by bytes, the kept encode threads across a fork, the chunk size, and the kept build threads
when a build fails."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zstandard
from safetensors.torch import save_file

import submask
from submask import workers
from submask.accel import numba_enabled
from submask.builder import run as build_run
from submask.format import diffs, plane_coding
from submask.format.payloads import RECORD_HEADER, STORED, ZSTD


def moved_weights(numel: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw bits of N(0, 0.02) weights in ``dtype`` (F32 or BF16) and of the same moved by ~1e-4 (those that
    change, as a build keeps them)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.02, numel).astype(np.float32)
    moved = weights + 1e-4 * rng.standard_normal(numel).astype(np.float32)
    base, new = weights.view(np.uint32), moved.view(np.uint32)
    if dtype == "BF16":
        base, new = (base >> 16).astype(np.uint16), (new >> 16).astype(np.uint16)
    changed = base != new
    return base[changed], new[changed]


def coded(new: np.ndarray, base: np.ndarray, dtype: str) -> bytes:
    counts = diffs.block_counts(new.size, diffs.BLOCK_ELEMENTS)
    return diffs.encode_blocks(new, base, dtype, counts, diffs.BLOCK_ELEMENTS)[1]


def planes_of(payload: bytes, itemsize: int) -> list[tuple[int, bytes]]:
    """(method, data) of each plane record of a one-block payload."""
    offset, found = diffs.BLOCK_HEADER, []
    for _ in range(itemsize):
        method, length = payload[offset], int.from_bytes(payload[offset + 1 : offset + RECORD_HEADER], "little")
        found.append((method, payload[offset + RECORD_HEADER : offset + RECORD_HEADER + length]))
        offset += RECORD_HEADER + length
    assert offset == len(payload)
    return found


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_planes_coded_in_parallel_are_the_bytes_coded_in_turn(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's planes give one record whether coded on the encode threads or in turn, and each plane is the
    zstd frame of its level (the top one at TOP_PLANE_LEVEL) or stored where that is not shorter."""
    pytest.importorskip("numba")
    if not numba_enabled():
        pytest.skip("SUBMASK_NO_NUMBA is set: the expected planes come from numba's kernel")
    base, new = moved_weights(300_000, dtype)
    monkeypatch.setattr(plane_coding, "PARALLEL_PLANE_BYTES", 1)
    parallel = coded(new, base, dtype)
    monkeypatch.setattr(plane_coding, "PARALLEL_PLANE_BYTES", 1 << 40)
    assert coded(new, base, dtype) == parallel
    records = planes_of(parallel, base.itemsize)
    assert records[-1][0] == ZSTD and (dtype == "BF16" or records[0][0] == STORED)  # both kinds are exercised
    zigzag, keys = np.empty_like(new), np.empty(new.size, np.uint8)
    diffs.zigzag_kernel.compiled(new, base, zigzag, keys, *diffs.kernel_args(dtype, base.itemsize)[:3])
    planes = np.ascontiguousarray(zigzag[np.argsort(keys, kind="stable")].view(np.uint8).reshape(-1, base.itemsize).T)
    for index, (plane, (method, data)) in enumerate(zip(planes, records)):
        level = plane_coding.TOP_PLANE_LEVEL if index == base.itemsize - 1 else plane_coding.ZSTD_LEVEL
        frame = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(plane.tobytes())
        assert (method, data) == ((ZSTD, frame) if len(frame) < plane.size else (STORED, plane.tobytes()))


def _code_in_child(dtype: str) -> bytes:
    plane_coding.PARALLEL_PLANE_BYTES = 1
    base, new = moved_weights(100_000, dtype)
    return coded(new, base, dtype)


def test_a_forked_child_codes_planes_on_threads_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The encode threads are kept for the process; a child forked after they started starts its own (the
    parent's are not in it) instead of waiting forever on them."""
    pytest.importorskip("numba")
    monkeypatch.setattr(plane_coding, "PARALLEL_PLANE_BYTES", 1)
    expected = _code_in_child("F32")
    assert (os.getpid(), "encode", os.cpu_count() or 1) in workers._POOLS  # started in this process
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_code_in_child, ("F32",)).get(timeout=120) == expected


def write_model(folder: Path, seed: int) -> Path:
    """A checkpoint of tensors of very different sizes (a large one among small ones), in bf16 and fp32."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for index, numel in enumerate([40_000, 900_000, 3_000, 5_000, 600_000, 7, 20_000]):
        weights = torch.from_numpy(rng.normal(0, 0.02, numel).astype(np.float32))
        tensors[f"t{index}"] = weights.to(torch.bfloat16) if index % 2 else weights
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors")
    return folder / "model.safetensors"


def test_a_build_writes_the_same_delta_however_many_tensors_wait_to_be_written(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished tensors wait for the writer up to PENDING_WRITES of them, or more while they hold at most
    PENDING_BYTES: the delta is the same bytes either way, and rebuilds the finetuned file."""
    base = write_model(tmp_path / "base", 0)
    finetuned = tmp_path / "finetuned" / "model.safetensors"
    (tmp_path / "finetuned").mkdir()
    state = {}
    from safetensors.torch import load_file

    for name, tensor in load_file(base).items():
        moved = tensor.float() + 1e-3 * (torch.rand(tensor.shape, generator=torch.Generator().manual_seed(1)) < 0.3)
        state[name] = moved.to(tensor.dtype)
    save_file(state, finetuned)
    digests = []
    for pending_bytes in (0, 1 << 40):
        monkeypatch.setattr(build_run, "PENDING_BYTES", pending_bytes)
        out = tmp_path / f"d{pending_bytes}.smask"
        submask.build_mask(base, finetuned, out, values=True, workers=2, chunk_bytes=64 * 1024)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
        submask.apply_mask(base, out, tmp_path / f"out{pending_bytes}")
        assert (tmp_path / f"out{pending_bytes}" / "model.safetensors").read_bytes() == finetuned.read_bytes()
    assert digests[0] == digests[1]


@pytest.mark.parametrize("max_shard_bytes", [None, 50_000])
def test_payloads_held_in_memory_or_spilled_write_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 max_shard_bytes: int | None) -> None:
    """A writer keeps payloads in memory up to SPILL_BYTES (all shards together), then spills to a scratch file:
    none, part or all spilled, the files are the same bytes, and a caller's buffer changed after ``add_encoded``
    does not change them."""
    from submask import MaskWriter, TensorMask
    from submask.format import writer as writer_module
    from submask.format.tensors import encode_tensor
    from submask.metadata import MaskMetadata

    rng = np.random.default_rng(5)
    masks = {f"m{index}": rng.random((300, 1000 + index)) < 0.1 for index in range(6)}
    written = []
    for spill_bytes in (0, 30_000, 1 << 40):
        monkeypatch.setattr(writer_module, "SPILL_BYTES", spill_bytes)
        out = tmp_path / f"{spill_bytes}" / "m.smask"
        out.parent.mkdir()
        with MaskWriter(out, MaskMetadata(kind="update"), max_shard_bytes=max_shard_bytes, write_id="0" * 32) as writer:
            for name, bits in masks.items():
                mask = TensorMask.from_numpy(bits)
                entry, payload = encode_tensor(name, mask.shape, mask.packed, mask.count)
                buffer = bytearray(payload)
                writer.add_encoded(entry, buffer)
                buffer[:] = bytes(len(buffer))  # the caller reuses its buffer
        files = sorted(path for path in out.parent.iterdir())
        assert [path.name for path in files if path.name.startswith(".")] == []  # no scratch file left
        written.append({path.name: path.read_bytes() for path in files})
        with submask.open(writer.index_path or out) as opened:
            assert all(np.array_equal(opened[name].to_numpy(), bits) for name, bits in masks.items())
    assert written[0] == written[1] == written[2]
    assert sum(map(len, written[0].values())) > 2 * 30_000  # the middle writer spilled part of its payloads
    assert len(written[0]) == 1 if max_shard_bytes is None else len(written[0]) > 2  # shards and their index


@pytest.mark.parametrize("values", [False, True])
def test_chunks_of_any_size_write_the_same_file(tmp_path: Path, values: bool) -> None:
    """The default chunks (smaller ones for a small checkpoint, ``_fit_chunks``) and any others give the same mask
    or delta."""
    base, finetuned = write_model(tmp_path / "base", 0), write_model(tmp_path / "finetuned", 1)
    digests = set()
    for chunk_bytes in (None, build_run.MIN_CHUNK_BYTES, build_run.MAX_CHUNK_BYTES, 4096):
        out = tmp_path / f"{chunk_bytes}.smask"
        submask.build_mask(base, finetuned, out, values=values, chunk_bytes=chunk_bytes)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_a_small_checkpoint_gets_chunks_for_every_worker() -> None:
    """Default chunks are halved until each worker has CHUNKS_PER_WORKER of them, down to MIN_CHUNK_BYTES, and
    as many more are handed out at a time (the same bytes); chunks a caller chose are kept."""
    from submask.builder.backends import NumpyBackend
    from submask.builder.criteria import Criterion

    def fitted(nbytes: int, workers: int, chunk_bytes: int | None = None) -> int:
        run = build_run.Run(None, None, NumpyBackend(), Criterion(), True, workers, chunk_bytes,  # type: ignore[arg-type]
                            progress=False)
        run._fit_chunks(nbytes)
        assert run.depth * run.chunk_bytes == (workers + 1) * (chunk_bytes or build_run.MAX_CHUNK_BYTES)
        return run.chunk_bytes

    mib = 1 << 20
    assert fitted(227 * mib, 2) == 4 * mib  # 57 chunks: 28 a worker
    assert fitted(36 * mib, 2) == 2 * mib and fitted(18 * mib, 2) == mib and fitted(1000, 16) == mib
    assert fitted(18 * mib, 2, chunk_bytes=4 * mib) == 4 * mib


def test_a_build_that_fails_midway_leaves_none_of_its_tasks_running(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A build's threads are kept for the next one; when it fails, its queued chunks are cancelled and the running
    ones finish before it raises, and no file is left. The next build on the same threads is whole."""
    base, finetuned = write_model(tmp_path / "base", 0), write_model(tmp_path / "finetuned", 1)
    compare, seen = build_run.Run._compare, []

    def failing(run: Any, job: Any, *args: Any) -> Any:
        seen.append(job.info.name)
        if job.info.name == "t1":
            raise RuntimeError("disk gone")
        return compare(run, job, *args)

    monkeypatch.setattr(build_run.Run, "_compare", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        submask.build_mask(base, finetuned, tmp_path / "m.smask", workers=2, chunk_bytes=4096)
    ran = len(seen)
    assert not (tmp_path / "m.smask").exists()
    assert ran - seen.index("t1") <= 3  # t1 has 440 chunks; at most workers + 1 were handed out (``depth``)
    time.sleep(0.05)
    assert len(seen) == ran  # nothing of the failed build ran after it raised
    monkeypatch.setattr(build_run.Run, "_compare", compare)
    built = submask.build_mask(base, finetuned, tmp_path / "m.smask", workers=2, chunk_bytes=4096)
    with submask.open(built.path) as opened:
        assert sum(opened[name].count for name in opened) == built.count  # every tensor decodes and checks out


def test_tasks_settle_cancels_the_queued_and_awaits_the_running() -> None:
    pool, tasks = workers.thread_pool(1, "test-settle"), workers.Tasks()
    started, release, done = threading.Event(), threading.Event(), []

    def slow() -> None:
        started.set()
        release.wait(5)
        done.append("slow")

    running, queued = tasks.submit(pool, slow), tasks.submit(pool, done.append, "queued")
    assert started.wait(5)
    threading.Timer(0.05, release.set).start()
    tasks.settle()
    assert running.done() and queued.cancelled() and done == ["slow"]
