"""The memory limit every decoding path checks before it allocates what a file's header asks for.

A few kilobytes of payload can declare gigabytes of bits or values (a decompression bomb). Before a reader
allocates room for decoded bits or values it calls ``check_allocation`` with the size the header declares; the
limit is ``SUBMASK_MEMORY_LIMIT`` (bytes, or with a K, M, G or T suffix: ``SUBMASK_MEMORY_LIMIT=64G``) when
set, else the memory this machine (or its container) has available now.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import LimitError, UsageError

ENV = "SUBMASK_MEMORY_LIMIT"
#: without ``SUBMASK_MEMORY_LIMIT``, allocations of at most this many bytes are not checked against the memory
#: available: no bomb hides in them, and reading /proc costs about 0.1-0.3 ms, more than decoding a sparse tensor
SMALL_ALLOCATION = 64 << 20
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_limit() -> tuple[int, str]:
    """(bytes a reader may allocate, what sets that number: the words of an error message)."""
    text = os.environ.get(ENV, "").strip()
    if text:
        match = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
        if not match:
            raise UsageError(f"{ENV}={text!r} is not a size; write bytes, or a number with K, M, G or T (e.g. 64G)")
        return int(match[1]) * _SUFFIXES[match[2].upper()], f"the limit {ENV}={text} sets"
    return available_memory(), "this machine's memory available now"


def available_memory() -> int:
    """Bytes of memory available to this process: MemAvailable, capped by a cgroup's limit; physical memory
    where neither is known (unbounded where the platform does not even say that)."""
    found = [value for value in (_meminfo_available(), _cgroup_room()) if value is not None]
    if found:
        return min(found)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 1 << 62


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit leaves to this process's group, or None without one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        return None


def check_allocation(nbytes: int, what: str) -> None:
    """LimitError, before anything is allocated, when ``what`` (e.g. "1,000 bits") takes more than the limit."""
    if nbytes <= SMALL_ALLOCATION and not os.environ.get(ENV, "").strip():
        return
    limit, source = memory_limit()
    if nbytes > limit:
        raise LimitError(f"{what} take {nbytes:,} bytes, more than {source} ({limit:,} bytes); if the file is "
                         f"not hostile, read it on a larger machine or raise {ENV} (`submask validate` checks it "
                         "in any memory)")
