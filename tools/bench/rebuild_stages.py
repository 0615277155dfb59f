"""Where a rebuild's work goes: each stage of ``submask.rebuild_write`` run one after another on one thread,
timed in CPU seconds of that thread (``time.thread_time``, which other jobs on the machine inflate far less
than wall time), fsync in wall seconds (it waits on the disk). Used by ``bench_delta_speed``. *decode, numpy*
is the same decode without numba (what a command line on a delta of fewer than 2^30 elements runs), timed
apart: it is not part of the sum's rebuild.

    python -m tools.bench.rebuild_stages BASE DELTA
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import submask
from submask.accel import numba_disabled
from submask.checkpoints.sources import open_source
from submask.format.diffs import Scratch
from submask.rebuild_kernels import decode_into

STAGES = ["mask", "zstd planes + CRC", "read base", "decode in place", "SHA-256", "write", "fsync"]
APART = ["decode, numpy"]


def stages(base: Path, delta: Path, repeats: int = 3) -> dict[str, float]:
    """Best seconds of each stage over ``repeats`` rebuilds of ``delta``'s one file (values coded against
    the base); the output is checked against the recorded SHA-256."""
    best = dict.fromkeys(STAGES + APART, float("inf"))
    for _ in range(repeats):
        for stage, seconds in _one(base, delta).items():
            best[stage] = min(best[stage], seconds)
    return best


def _one(base: Path, delta: Path) -> dict[str, float]:
    spent = dict.fromkeys(STAGES + APART, 0.0)

    def timed(stage: str, run: Callable[..., Any], *args: Any) -> Any:
        clock = time.perf_counter if stage == "fsync" else time.thread_time
        start = clock()
        result = run(*args)
        spent[stage] += clock() - start
        return result

    with submask.open(delta) as opened, open_source(base) as source, tempfile.TemporaryFile(dir=base.parent) as out:
        (file,) = opened.metadata.checkpoint
        digest, buffer, scratch = hashlib.sha256(), np.empty(8 << 22, np.uint8), Scratch()  # as the rebuild's
        header = file.header.encode("utf-8")
        out.write(len(header).to_bytes(8, "little") + header)
        digest.update(len(header).to_bytes(8, "little") + header)
        for name in opened.names:
            info = source.tensors[name]
            bits = timed("mask", opened.__getitem__, name)
            found = opened.difference_blocks(name)
            if found is None:
                raise SystemExit(f"{delta}: tensor {name!r} is not coded against the base")
            block_elements, blocks = found
            decoded = timed("zstd planes + CRC", list, blocks)
            for index, start in enumerate(range(0, info.numel, block_elements)):
                stop = min(start + block_elements, info.numel)
                chunk = timed("read base", source.read, name, start, stop, buffer)
                where = None if bits.count == bits.numel else bits.packed[start // 8: (stop + 7) // 8]
                with numba_disabled():
                    timed("decode, numpy", decode_into, chunk.copy(), where, decoded[index], info.dtype.name, scratch)
                timed("decode in place", decode_into, chunk, where, decoded[index], info.dtype.name, scratch)
                timed("SHA-256", digest.update, chunk)
                timed("write", out.write, chunk)
        out.flush()
        timed("fsync", os.fsync, out.fileno())
    if digest.hexdigest() != file.sha256:
        raise SystemExit(f"{delta}: the staged rebuild differs from the recorded file")
    return spent


def main() -> None:
    base, delta = Path(sys.argv[1]), Path(sys.argv[2])
    for stage, seconds in stages(base, delta).items():
        print(f"{stage:>20}: {seconds * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
