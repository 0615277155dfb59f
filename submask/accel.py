"""Optional compiled kernels: numba when it is installed (``pip install 'submask[fast]'``), numpy otherwise.

A hot loop is written once as plain Python over numpy arrays and wrapped in ``Kernel``; callers use
``kernel.compiled`` when it is not None and their vectorised numpy path otherwise, so both give identical
results and everything works without numba. numba is imported, and a kernel compiled (cached on disk), on
first use only, so ``import submask`` stays light. ``SUBMASK_NO_NUMBA=1`` forces the numpy paths.

Starting numba costs about a second per process even when every kernel loads from its disk cache (importing
numba and setting up its compiler), more than the numpy paths take on small masks. So a whole operation
can declare its size with ``job``: a small one runs the numpy paths unless numba already runs in this
process, which keeps a command line on small masks as fast to start as the library call.

>>> @Kernel
... def total(values):
...     s = 0
...     for v in values:
...         s += v
...     return s
>>> fast = total.compiled          # None without numba
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_UNSET: Any = object()
_KERNELS: list[Kernel] = []

#: elements (summed over every mask an operation reads) from which starting numba pays for itself: the
#: numpy paths compare a few 1e9 elements a second, numba takes about a second to start (BENCHMARKS.md)
START_UP_WORK = 1 << 30
_small_jobs = 0  # ``job`` blocks running below START_UP_WORK, in any thread
_lock = threading.Lock()


def numba_enabled() -> bool:
    """True when numba is installed and not switched off with ``SUBMASK_NO_NUMBA`` (numba stays unimported)."""
    if os.environ.get("SUBMASK_NO_NUMBA", "").strip() not in ("", "0"):
        return False
    return importlib.util.find_spec("numba") is not None


def numba_started() -> bool:
    """True when numba runs in this process: a kernel has been compiled (or loaded from numba's disk cache),
    even if ``numba_disabled`` or ``reset_kernels`` has since made the kernels forget it."""
    return any(kernel._dispatcher is not None for kernel in _KERNELS)


@contextmanager
def job(work: int, start_up: int | None = None) -> Iterator[None]:
    """Run an operation over ``work`` elements: below ``start_up`` (where starting numba pays for itself in
    that operation; ``START_UP_WORK`` when None), kernels not yet started stay so inside the block and their
    callers take the numpy paths (identical results), since starting numba would cost more than it saves."""
    global _small_jobs
    small = work < (START_UP_WORK if start_up is None else start_up)
    with _lock:
        _small_jobs += small
    try:
        yield
    finally:
        with _lock:
            _small_jobs -= small


class Kernel:
    """A loop compiled with ``numba.njit(nogil=True, cache=True)`` on first use, or None without numba."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self._compiled: Any = _UNSET
        self._dispatcher: Any = None  # numba's, made once: a new one would load the disk cache again
        self.__doc__ = function.__doc__
        _KERNELS.append(self)

    def __call__(self, *args: Any) -> Any:
        """The plain Python loop (what another kernel's body calls; numba resolves it to the compiled one)."""
        return self.function(*args)

    @property
    def compiled(self) -> Any:
        """The compiled loop, or None without numba (callers that checked ``numba_enabled`` call it directly)."""
        if self._compiled is _UNSET:
            if _small_jobs and not numba_started():  # see ``job``; decided again on the next use
                return None
            self._compiled = self.dispatcher() if numba_enabled() else None
        return self._compiled

    def dispatcher(self) -> Any:
        """numba's dispatcher of this kernel, made on first call (numba must be enabled)."""
        if self._dispatcher is None:
            import numba

            self._dispatcher = numba.njit(nogil=True, cache=True)(_with_intrinsics(self.function))
        return self._dispatcher

    def reset(self) -> None:
        """Forget the compiled form, so the next use re-reads ``SUBMASK_NO_NUMBA`` (for tests)."""
        self._compiled = _UNSET


def leading_zeros(word: int) -> int:
    """Leading zero bits of a 64-bit word (0 has 64). Kernels call it; compiled, it is the CPU's instruction."""
    return 64 - (word & 0xFFFF_FFFF_FFFF_FFFF).bit_length()


def popcount(word: int) -> int:
    """Set bits of a 64-bit word. Kernels call it; compiled, it is the CPU's instruction."""
    return (word & 0xFFFF_FFFF_FFFF_FFFF).bit_count()


@functools.cache
def _intrinsics() -> dict[str, Any]:
    """numba's versions of the Python stand-ins above, by name (built once numba is imported)."""
    from numba.cpython.unsafe.numbers import leading_zeros as count_leading_zeros
    from numba.extending import intrinsic

    @intrinsic
    def count_ones(typingctx: Any, word: Any) -> Any:
        return word(word), lambda context, builder, signature, args: builder.ctpop(args[0])

    return {"leading_zeros": count_leading_zeros, "popcount": count_ones}


_STAND_INS = {"leading_zeros": leading_zeros, "popcount": popcount}


def _with_intrinsics(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with numba's intrinsics in place of the Python stand-ins it names and numba's dispatchers
    in place of the kernels it calls, in a copy of its globals, so the module keeps the plain Python versions
    and numba stays unimported until compiling."""
    used = function.__code__.co_names
    swaps = {name: _intrinsics()[name] for name, stand_in in _STAND_INS.items()
             if name in used and function.__globals__.get(name) is stand_in}
    swaps.update({name: value.dispatcher() for name in used
                  if isinstance(value := function.__globals__.get(name), Kernel)})
    if not swaps:
        return function
    copy = types.FunctionType(function.__code__, {**function.__globals__, **swaps},
                              function.__name__, function.__defaults__, function.__closure__)
    copy.__qualname__, copy.__doc__ = function.__qualname__, function.__doc__
    return copy


def reset_kernels() -> None:
    """``Kernel.reset`` every kernel, e.g. after changing ``SUBMASK_NO_NUMBA``."""
    for kernel in _KERNELS:
        kernel.reset()


@contextmanager
def numba_disabled() -> Iterator[None]:
    """Run the numpy fallbacks inside the block (``SUBMASK_NO_NUMBA=1``), the previous state after it."""
    before = os.environ.get("SUBMASK_NO_NUMBA")
    os.environ["SUBMASK_NO_NUMBA"] = "1"
    reset_kernels()
    try:
        yield
    finally:
        if before is None:
            del os.environ["SUBMASK_NO_NUMBA"]
        else:
            os.environ["SUBMASK_NO_NUMBA"] = before
        reset_kernels()


def numba_state() -> str:
    """A line for reports: the numba version in use, or why the numpy paths run."""
    if not numba_enabled():
        return "numba off (SUBMASK_NO_NUMBA set or numba not installed): numpy paths"
    import numba

    return f"numba {numba.__version__}"

