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
from collections.abc import Callable
from typing import Any

_UNSET: Any = object()


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

    @property
    def compiled(self) -> Callable[..., Any] | None:
        if self._compiled is _UNSET:
            if numba_enabled():
                import numba

                self._compiled = numba.njit(nogil=True, cache=True)(self.function)
            else:
                self._compiled = None
        return self._compiled

    def reset(self) -> None:
        """Forget the compiled form, so the next use re-reads ``SUBMASK_NO_NUMBA`` (for tests)."""
        self._compiled = _UNSET
