"""How fast a command line starts: ``python -m submask info`` and ``compare`` on small masks, as whole processes,
against the same API call in a warm process (goal: at most 0.3 s more).

Baselines in the same run: the bare interpreter, ``import numpy`` and ``import submask``. Each process is run
``--repeat`` times; the best and the median are reported (the machine is shared: the best is the least
disturbed run).

    .venv/bin/python -m tools.bench.bench_startup --repeat 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import submask
from submask.accel import numba_state

from .report import best_time, markdown_table, write_section


def process_times(commands: list[list[str]], repeat: int, env: dict[str, str]) -> list[list[float]]:
    """Seconds of ``repeat`` runs of each command, after one untimed run of each that writes the bytecode caches;
    the commands take turns, one run each per round, so that other jobs on the machine slow them alike."""
    times: list[list[float]] = [[] for _ in commands]
    for round_ in range(repeat + 1):
        for command, seconds in zip(commands, times):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
            if round_:
                seconds.append(time.perf_counter() - start)
    return times


def call_time(call: Callable[[], object], repeat: int) -> float:
    call()  # the API's first call in a process pays its lazy imports: a warm process is the yardstick
    return best_time(call, repeat)


def info_call(path: Path) -> object:
    """What ``submask info`` reads: the header's metadata, counts and payload sizes."""
    with submask.open(path) as mask_file:
        return [(e.ones, e.bits, mask_file.payload_size(e.name)) for e in mask_file.entries.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--tensors", type=int, default=8)
    parser.add_argument("--shape", default="256,1024", help="shape of each tensor")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_startup.") as scratch:
        rng = np.random.default_rng(0)
        paths = []
        for label in ("a", "b"):
            paths.append(Path(scratch) / f"{label}.smask")
            arrays = {f"model.layers.{i}.mlp.up_proj.weight": rng.random(shape) < 0.01 for i in range(args.tensors)}
            submask.save(submask.Mask.from_numpy(arrays), paths[-1])
        python = [sys.executable]
        # as installed packages run: with bytecode caches (kept out of the source tree), whatever this shell says
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(Path(scratch) / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        baselines = [("python -c pass", python + ["-c", "pass"]),
                     ("python -c 'import numpy'", python + ["-c", "import numpy"]),
                     ("python -c 'import submask'", python + ["-c", "import submask"])]
        commands = [("submask info a.smask", ["info", str(paths[0])], lambda: info_call(paths[0])),
                    ("submask compare a.smask b.smask", ["compare", *map(str, paths)], lambda: submask.compare(paths))]
        processes = [command for _, command in baselines]
        processes += [python + ["-m", "submask", *arguments] for _, arguments, _ in commands]
        timed = process_times(processes, args.repeat, env)
        rows = []
        for (label, _), times in zip(baselines, timed):
            rows.append([label, f"{min(times):.3f}", f"{statistics.median(times):.3f}", "-", "-"])
        for (label, _, call), times in zip(commands, timed[len(baselines):]):
            api = call_time(call, args.repeat)
            rows.append([label, f"{min(times):.3f}", f"{statistics.median(times):.3f}", f"{api:.3f}",
                         f"{min(times) - api:+.3f}"])
            print(rows[-1], flush=True)
    body = (
        f"Two masks of {args.tensors} tensors of {shape[0]} x {shape[1]} at 1% density; each process run "
        f"{args.repeat} times after one untimed run (bytecode caches written, as for an installed package), the "
        "processes taking turns (so that other jobs on the machine slow them alike), "
        "seconds, best and median. *API* is the same work in a warm process (best of "
        f"{args.repeat}): `submask.open` + the header's counts for `info`, `submask.compare` for `compare`; the "
        "last column is the process's best less the API call (goal: at most +0.3 s). Kernels: "
        f"{numba_state()}; small jobs leave numba unstarted (`submask.accel.job`). Load average "
        f"{load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other jobs shared the "
        f"machine's {os.cpu_count()} cores).\n\n"
        + markdown_table(["process", "best s", "median s", "API s", "process - API"], rows))
    print(body)
    write_section("startup", "Command-line start-up", body)


if __name__ == "__main__":
    main()
