"""Worker threads kept by the process (``compare``'s, a build's workers, writer and encode threads),
``compare``'s payload buffers kept between calls, and each thread's reusable scratch buffers.

Starting a thread pool, and paging in fresh memory for its threads' scratch and for the payloads read, cost a
comparison of sparse masks about as much as its counting (about 2 ms of 7 at 2^28 elements, 0.1%), so both
are kept for the next call: the pools by process (a fork's child has its parent's pool objects but none of
their threads), purpose and worker count, and a few small sets of buffers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

T = TypeVar("T")

KEPT_BYTES = 1 << 24  # a set of buffers larger than this in all is dropped after its call
KEPT_SETS = 2  # sets of buffers kept (calls running at once beyond this take new ones)
_POOLS: dict[tuple[int, str, int], ThreadPoolExecutor] = {}
_KEPT: list[dict[Hashable, np.ndarray]] = []
_LOCK = threading.Lock()
_THREAD = threading.local()  # per thread: its scratch buffers, by key


def thread_pool(workers: int, purpose: str = "compare") -> ThreadPoolExecutor:
    """This process's pool of ``workers`` threads for ``purpose``, made on first use and kept. Each purpose has
    its own threads, so that tasks of one never wait behind another's."""
    key = (os.getpid(), purpose, workers)
    with _LOCK:
        if key not in _POOLS:
            from concurrent.futures import ThreadPoolExecutor  # here: it imports logging, 15 ms of a command's start

            for inherited in [other for other in _POOLS if other[0] != key[0]]:
                del _POOLS[inherited]  # a parent's: its threads did not survive the fork
            _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix=f"submask-{purpose}")
        return _POOLS[key]


class Tasks:
    """The tasks one call hands to kept pools (``thread_pool``). ``settle`` cancels those not started and waits
    for the running ones, as ``shutdown(wait=True, cancel_futures=True)`` does for a pool of the call's own, so
    none runs on after a call that ends early. A finished task is dropped at once: its result is not held."""

    def __init__(self) -> None:
        self._live: set[Future[Any]] = set()
        self._lock = threading.Lock()

    def submit(self, pool: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> Future[T]:
        future = pool.submit(function, *args)
        with self._lock:
            self._live.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any]) -> None:
        with self._lock:
            self._live.discard(future)

    def settle(self) -> None:
        from concurrent.futures import wait

        with self._lock:
            live = list(self._live)
        for future in live:
            future.cancel()
        wait(live)


@contextmanager
def kept_buffers() -> Iterator[dict[Hashable, np.ndarray]]:
    """Buffers by key for one call (``reusable``): a kept set, or a new one; kept again after the
    call when at most KEPT_BYTES in all."""
    with _LOCK:
        buffers = _KEPT.pop() if _KEPT else {}
    try:
        yield buffers
    finally:
        if sum(buffer.nbytes for buffer in buffers.values()) <= KEPT_BYTES:
            with _LOCK:
                if len(_KEPT) < KEPT_SETS:
                    _KEPT.append(buffers)


def thread_buffer(key: Hashable, nbytes: int) -> np.ndarray:
    """This thread's reusable scratch buffer ``key``, at least ``nbytes`` long (fresh memory costs page faults:
    about as much as decoding a sparse tensor)."""
    return reusable(_THREAD.__dict__.setdefault("buffers", {}), key, nbytes)


def thread_zeros(key: Hashable, nbytes: int) -> np.ndarray:
    """This thread's scratch buffer ``key`` of at least ``nbytes`` zero bytes, for users that clear what they set
    before they return (so a sparse use costs what it sets, not a fill): zeroed only when new."""
    buffers = _THREAD.__dict__.setdefault("zeros", {})
    if key not in buffers or buffers[key].size < nbytes:
        buffers[key] = np.zeros(nbytes, np.uint8)
    return buffers[key][:nbytes]


def reusable(buffers: dict[Hashable, np.ndarray], key: Hashable, nbytes: int) -> np.ndarray:
    """``buffers[key]``, grown to at least ``nbytes`` uint8 bytes, its first ``nbytes``."""
    if key not in buffers or buffers[key].size < nbytes:
        buffers[key] = np.empty(nbytes, np.uint8)
    return buffers[key][:nbytes]
