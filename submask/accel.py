"""Optional compiled kernels: numba when it is installed (``pip install 'submask[fast]'``), numpy otherwise.

A hot loop is written once as plain Python over numpy arrays and wrapped in ``Kernel``; callers use
``kernel.compiled`` when it is not None and their vectorised numpy path otherwise, so both give identical
results and everything works without numba. numba is imported, and a kernel compiled (cached on disk), on
first use only, so ``import submask`` stays light. ``SUBMASK_NO_NUMBA=1`` forces the numpy paths.

>>> @Kernel
... def total(values):
...     s = 0
...     for v in values:
...         s += v
...     return s
>>> fast = total.compiled          # None without numba
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_UNSET: Any = object()
_KERNELS: list["Kernel"] = []


def numba_enabled() -> bool:
    """True when numba is importable and not switched off with ``SUBMASK_NO_NUMBA``."""
    if os.environ.get("SUBMASK_NO_NUMBA", "").strip() not in ("", "0"):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class Kernel:
    """A loop compiled with ``numba.njit(nogil=True, cache=True)`` on first use, or None without numba."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self._compiled: Any = _UNSET
        self.__doc__ = function.__doc__
        _KERNELS.append(self)

    @property
    def compiled(self) -> Callable[..., Any] | None:
        if self._compiled is _UNSET:
            if numba_enabled():
                import numba

                self._compiled = numba.njit(nogil=True, cache=True)(_with_intrinsics(self.function))
            else:
                self._compiled = None
        return self._compiled

    def reset(self) -> None:
        """Forget the compiled form, so the next use re-reads ``SUBMASK_NO_NUMBA`` (for tests)."""
        self._compiled = _UNSET


def leading_zeros(word: int) -> int:
    """Leading zero bits of a 64-bit word (0 has 64). Kernels call it; compiled, it is the CPU's instruction."""
    return 64 - (word & 0xFFFF_FFFF_FFFF_FFFF).bit_length()


def _with_intrinsics(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with numba's intrinsics in place of the Python stand-ins it names (``leading_zeros``),
    in a copy of its globals, so the module keeps the plain Python versions and numba stays unimported."""
    if function.__globals__.get("leading_zeros") is not leading_zeros:
        return function
    from numba.cpython.unsafe.numbers import leading_zeros as intrinsic

    copy = types.FunctionType(function.__code__, {**function.__globals__, "leading_zeros": intrinsic},
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

