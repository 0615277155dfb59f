"""Known errors rendered for people, in one place: one line that says what went wrong and what to do.

Anything not named here is a bug in submask and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback

from ..errors import SubmaskError

#: Remedies for operating system errors met while reading, by errno (writes get ``atomic.output_error``'s).
_READ_REMEDIES = {
    errno.ENOENT: "no such file or directory; check the path",
    errno.EACCES: "permission denied; check the file's permissions",
    errno.EISDIR: "is a directory; name a file",
    errno.ENOTDIR: "a part of the path is not a directory; check the path",
}
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
#: The library's messages name a Python argument and its option together ("overwrite=True (--overwrite)" or
#: "--common (common=True)"); on the command line only the option is said.
_PYTHON_AND_OPTION = re.compile(r"\b[A-Za-z_][\w.]*=\w* \((--[\w-]+)\)|(--[\w-]+) \([A-Za-z_][\w.]*=\w*\)")


def render(exc: BaseException) -> str | None:
    """The one-line message for an error the command line knows (without "error: "), or None for a bug."""
    if isinstance(exc, SubmaskError):
        return speak_cli(str(exc))
    hub_errors = sys.modules.get("huggingface_hub.errors")
    if hub_errors is not None and isinstance(exc, hub_errors.HFValidationError):
        return f"invalid Hub argument: {_first_line(exc)}"
    if isinstance(exc, ValueError) and _raised_in(exc, "huggingface_hub"):
        return f"the Hub client refused the request: {_first_line(exc)}"
    if isinstance(exc, OSError):
        if exc.errno in _WRITE_ERRNOS:
            from ..atomic import output_error  # here: it imports ctypes, socket and tempfile

            return str(output_error(exc.filename or "output", exc))
        reason = _READ_REMEDIES.get(exc.errno or 0, exc.strerror or str(exc))
        return f"{exc.filename}: {reason}" if exc.filename else reason
    return None


def speak_cli(message: str) -> str:
    """``message`` with each "python=value (--option)" pair said as the option alone."""
    return _PYTHON_AND_OPTION.sub(lambda m: m.group(1) or m.group(2), message)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _raised_in(exc: BaseException, package: str) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in ``package`` (an argument it rejected)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}{package}{os.sep}" in frames[-1].filename
