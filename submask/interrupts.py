"""Ctrl-C and SIGTERM on the command line: one line on stderr, exit 130 (SIGINT) or 143 (SIGTERM), never lost.

Python turns SIGINT into KeyboardInterrupt wherever the main thread is; code that catches BaseException (numba's
compiler callbacks once did) can swallow it, and the command would finish with exit 0. The handler installed
here also records the signal, so that the command line exits non-zero even when the exception was lost.
Importing this module (``submask/__init__.py`` does so first) calls ``guard_startup``, which acts only when the
process is the ``submask`` command itself: library users' signal handlers are left alone. Once the command is
done (``hold``), the two signals are blocked in the main thread, a signal that arrives from then on is reported
at exit, and after that last check they are ignored: Python's finalization would otherwise restore the default
handlers, and a Ctrl-C at the very end would kill the process (status -2, no message).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

#: Exit status per signal: 128 + its number, as shells report a process killed by it.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_received: list[int] = []
_reported: list[int] = []  # the signal ``exit_interrupted`` reported, if any
_command: list[bool] = []  # [True] once ``guard_startup`` found this process to be the submask command


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def message(signum: int) -> str:
    return f"error: {'interrupted' if signum == signal.SIGINT else 'terminated'} ({signal.Signals(signum).name})"


def _raise(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    """While modules are still being imported there is nothing to clean up: leave at once."""
    sys.stderr.write(message(signum) + "\n")
    sys.stderr.flush()
    os._exit(EXIT_CODES[signal.Signals(signum)])


def _install(handler: Any) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in EXIT_CODES}


def guard_startup() -> None:
    """When this process is the ``submask`` command, exit with one line on a signal during the imports."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    as_module = "-m" in argv[1:] and argv[argv.index("-m") + 1:argv.index("-m") + 2] == ["submask"]
    if as_module or Path(sys.argv[0] if sys.argv else "").stem == "submask":
        _install(_exit_now)
        _command[:] = [True]


def install() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise ``Interrupted`` and be recorded; returns the handlers to ``restore``."""
    _received.clear()
    return _install(_raise)


def restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def pending() -> int | None:
    """The first signal received since ``install``, even if its exception was caught and dropped, or one that
    arrived, blocked, since ``hold``."""
    if _received:
        return _received[0]
    return _blocked()


def _blocked() -> int | None:
    if not _command or not hasattr(signal, "sigpending"):
        return None
    waiting = signal.sigpending()
    return next((signum for signum in EXIT_CODES if signum in waiting), None)


def hold() -> None:
    """The command is done (or failed and is about to say so): from now on SIGINT and SIGTERM are blocked, and
    one that arrives is reported when the process exits. Only in the submask command itself, on its main thread
    (elsewhere nothing happens)."""
    if (not _command or not hasattr(signal, "pthread_sigmask")
            or threading.current_thread() is not threading.main_thread()):
        return
    if not signal.pthread_sigmask(signal.SIG_BLOCK, set(EXIT_CODES)) >= set(EXIT_CODES):
        atexit.register(_last_check)  # registered last, so it runs first of the exit handlers


def _last_check() -> None:
    """At exit: report a signal that arrived after ``hold`` (blocked, or caught on another thread), else ignore
    the two signals from now on (the interpreter's finalization keeps an ignored signal ignored)."""
    signum = None if _reported else pending()
    if signum is None:
        for code in EXIT_CODES:
            signal.signal(code, signal.SIG_IGN)
    else:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        sys.stderr.write(message(signum) + "\n")
        sys.stderr.flush()
        os._exit(EXIT_CODES[signal.Signals(signum)])


def exit_interrupted(signum: int) -> NoReturn:
    """Print the one line for ``signum`` and exit with its status."""
    _reported.append(signum)
    sys.stderr.write(message(signum) + "\n")
    sys.exit(EXIT_CODES[signal.Signals(signum)])


guard_startup()
