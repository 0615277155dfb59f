"""How fast a command line starts: ``python -m submask info`` and ``compare`` (2 and 8 masks) on small masks, as
whole processes, against the same API call in a warm process (goal, issues 25 and 26: at most 0.3 s more).

Baselines in the same run: the bare interpreter, ``import numpy``, ``import numpy, click`` (the floor of a command
that reads masks), ``import submask`` and ``import submask.cli``. Two more compare processes show what is not
paid by default: one compiling submask from source (no bytecode cache, as a checkout run with
``PYTHONDONTWRITEBYTECODE=1``), one with numba's kernels started (loaded from numba's disk cache), as a job of
2^30 elements or more starts them. Each process is run ``--repeat`` times, the processes taking turns; the best
and the median wall time are reported, and the best CPU time (user + system), which other jobs on a shared
machine inflate far less than wall time.

    .venv/bin/python -m tools.bench.bench_startup --repeat 10
"""

from __future__ import annotations

import argparse
import os
import resource
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

from .report import markdown_table, write_section

GOAL_S = 0.3  # issues 25 and 26: a process at most this much more than the same API call

#: a compare process whose job starts numba's kernels (as one of 2^30 elements or more would)
KERNELS = ("import sys, submask.accel as accel; accel.START_UP_WORK = 0; from submask.cli import main; "
           "main(sys.argv[1:], prog_name='submask')")


#: a process: its command line, environment and working directory (the tree whose ``submask`` it imports)
Process = tuple[list[str], dict[str, str], Path]


def process_times(processes: list[Process], repeat: int) -> list[tuple[list[float], list[float]]]:
    """Wall and CPU seconds (user + system) of ``repeat`` runs of each process, after one untimed run of each that
    writes the bytecode caches; the processes take turns, one run each per round, so that other jobs on the
    machine slow them alike."""
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in processes]
    for round_ in range(repeat + 1):
        for (command, env, cwd), (wall, cpu) in zip(processes, times):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, cwd=cwd)
            seconds = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if round_:
                wall.append(seconds)
                cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return times


def call_time(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall and best CPU seconds of ``call`` in this (warm) process."""
    call()  # the API's first call in a process pays its lazy imports: a warm process is the yardstick
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def info_call(path: Path) -> object:
    """What ``submask info`` reads: the header's metadata, counts and payload sizes."""
    with submask.open(path) as mask_file:
        return [(e.ones, e.bits, mask_file.payload_size(e.name)) for e in mask_file.entries.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--tensors", type=int, default=8)
    parser.add_argument("--shape", default="256,1024", help="shape of each tensor")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. `git worktree add /tmp/main main`) whose "
                        "processes run in turn with these, for a before/after in one run")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_startup.") as scratch:
        rng = np.random.default_rng(0)
        paths = []
        for label in "abcdefgh":
            paths.append(Path(scratch) / f"{label}.smask")
            arrays = {f"model.layers.{i}.mlp.up_proj.weight": rng.random(shape) < 0.01 for i in range(args.tensors)}
            submask.save(submask.Mask.from_numpy(arrays), paths[-1])
        two, eight = list(map(str, paths[:2])), list(map(str, paths))
        python = [sys.executable]
        # as installed packages run: with bytecode caches (kept out of the source tree), whatever this shell says
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(Path(scratch) / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        source = {**env, "PYTHONPYCACHEPREFIX": str(Path(scratch) / "empty"), "PYTHONDONTWRITEBYTECODE": "1"}
        baselines = [("python -c pass", ["-c", "pass"]),
                     ("python -c 'import numpy'", ["-c", "import numpy"]),
                     ("python -c 'import numpy, click'", ["-c", "import numpy, click"]),
                     ("python -c 'import submask'", ["-c", "import submask"]),
                     ("python -c 'import submask.cli'", ["-c", "import submask.cli"])]
        commands = [("submask info a.smask", ["-m", "submask", "info", two[0]], env, lambda: info_call(paths[0])),
                    ("submask compare a.smask b.smask", ["-m", "submask", "compare", *two], env,
                     lambda: submask.compare(paths[:2])),
                    ("submask compare (8 masks, 28 pairs)", ["-m", "submask", "compare", *eight], env,
                     lambda: submask.compare(paths)),
                    ("same 2, compiled from source (no bytecode cache)", ["-m", "submask", "compare", *two], source,
                     lambda: submask.compare(paths[:2])),
                    ("same 2, numba's kernels started (from its disk cache)", ["-c", KERNELS, "compare", *two], env,
                     lambda: submask.compare(paths[:2]))]
        runs = [(python + arguments, env) for _, arguments in baselines]
        runs += [(python + arguments, environment) for _, arguments, environment, _ in commands]
        trees = [Path(__file__).resolve().parents[2], *([args.baseline.resolve()] if args.baseline else [])]
        processes = [(command, {**environment, "PYTHONPATH": str(tree),
                                "PYTHONPYCACHEPREFIX": f"{environment['PYTHONPYCACHEPREFIX']}-{index}"}, tree)
                     for command, environment in runs for index, tree in enumerate(trees)]
        timed = process_times(processes, args.repeat)
        ours, theirs = timed[::len(trees)], timed[1::len(trees)]
        rows: list[list[object]] = []
        for index, label in enumerate([b[0] for b in baselines] + [c[0] for c in commands]):
            wall, cpu = ours[index]
            row: list[object] = [label, f"{min(wall):.3f}", f"{statistics.median(wall):.3f}", f"{min(cpu):.3f}",
                                 "-", "-"]
            if index >= len(baselines):
                api_wall, api_cpu = call_time(commands[index - len(baselines)][3], args.repeat)
                extra = min(wall) - api_wall
                shown = f"**{extra:+.3f}**" if extra <= GOAL_S else f"{extra:+.3f} (missed)"
                row[4:] = [f"{api_wall:.3f}", f"{shown} / {min(cpu) - api_cpu:+.3f}"]
            if theirs:
                before_wall, before_cpu = theirs[index]
                row.append(f"{min(before_wall):.3f} / {min(before_cpu):.3f} "
                           f"({min(before_cpu) / min(cpu):.1f}x the CPU)")
            rows.append(row)
            print(rows[-1], flush=True)
    body = (
        f"Masks of {args.tensors} tensors of {shape[0]} x {shape[1]} at 1% density; each process run "
        f"{args.repeat} times after one untimed run (bytecode caches written, as for an installed package, except "
        "where the row says), the processes taking turns (so that other jobs on the machine slow them alike); "
        "wall seconds, best and median, and the best CPU seconds (user + system). *API* is the same work in a warm "
        f"process (best of {args.repeat}): `submask.open` + the header's counts for `info`, `submask.compare` "
        "for `compare`; the last column is the process's best less the API call, in wall (goal: at most +0.3 s) "
        f"and CPU time. Kernels: {numba_state()}; small jobs leave numba unstarted (`submask.accel.job`), the "
        "last row starts it. Load average "
        f"{load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other jobs shared the "
        f"machine's {os.cpu_count()} cores)."
        + (f" *Before*: the same process, run in turn with these, from the checkout `{args.baseline}`: best wall / "
           "best CPU seconds." if args.baseline else "")
        + "\n\n"
        + markdown_table(["process", "best s", "median s", "best CPU s", "API s", "process - API (wall / CPU)",
                          *(["before: best s / CPU s"] if args.baseline else [])], rows))
    print(body)
    write_section("startup", "Command-line start-up", body)


if __name__ == "__main__":
    main()
