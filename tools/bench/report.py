"""Shared by the benchmarks: machine description and writing one section of BENCHMARKS.md.

Each benchmark owns one section, delimited by HTML comments, and replaces only that section, so the
benchmarks can be rerun independently and in any order.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"
PREAMBLE = """# Benchmarks

Every figure below comes from the script named in its section, run on the machine it names. Machines here
are noisy, so each row is a ratio against a baseline measured side by side in the same run, next to the
absolute figure. Rerun a section with the command shown; it replaces only its own section.
"""


def machine() -> str:
    """One line naming the machine: CPU model, cores, memory, GPU if any, Python and numpy versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * page_size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    import numpy

    return (f"{cpu}, {os.cpu_count()} cores{memory}{gpu}; Python {platform.python_version()}, "
            f"numpy {numpy.__version__}")


def write_section(name: str, title: str, body: str, command: str | None = None) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``body`` under ``title``."""
    command = command or _this_command()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    section = (f"{start}\n## {title}\n\n_Run {stamp} on {machine()}._  \n_Command:_ `{command}`\n\n"
               f"{body.strip()}\n{end}")
    BENCHMARKS_MD.touch()
    with open(BENCHMARKS_MD, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        text = handle.read() or PREAMBLE
        if start in text and end in text:
            text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        handle.seek(0)
        handle.truncate()
        handle.write(text)


def _this_command() -> str:
    """The command line that reruns this benchmark, in the ``python -m tools.bench.NAME`` form."""
    script = Path(sys.argv[0])
    arguments = " ".join(shlex.quote(a) for a in sys.argv[1:])
    target = f"-m tools.bench.{script.stem}" if script.parent.name == "bench" else shlex.quote(sys.argv[0])
    return f"python {target} {arguments}".strip()


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a timed ``python -m submask`` process: this one's, with the bytecode caches written and
    read as an installed package's are (kept out of the source tree, in the temp dir), whatever this shell says:
    under ``PYTHONDONTWRITEBYTECODE=1`` a checkout's process would compile every module it imports from source."""
    environment = {**os.environ, "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "submask-bench-pycache"),
                   **extra}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def best_time(run: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``run`` (the least disturbed by other jobs)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)
