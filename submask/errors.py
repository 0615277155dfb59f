"""The one exception hierarchy of submask: every error raised on bad input is a SubmaskError.

Messages name the file and tensor involved and say what to do about it.
"""

from __future__ import annotations


class SubmaskError(Exception):
    """Root of every error submask raises on bad input or misuse."""


class FormatError(SubmaskError, ValueError):
    """A file is not a valid .smask file (truncated, corrupt, inconsistent or hostile)."""


class ChecksumError(FormatError):
    """Stored data does not match its checksum: a tensor's decoded bits (CRC-32, bit count) or the header."""


class HeaderChecksumError(ChecksumError):
    """The submask header does not match its SHA-256 (or lacks it, in version 1.1 and later)."""


class VersionError(FormatError):
    """A file needs a newer reader: unknown major version or a must-understand extension."""


class UnknownEncodingError(FormatError):
    """A tensor uses an encoding this version of submask does not know."""


class LimitError(SubmaskError, ValueError):
    """A mask is larger than a limit: the caller's ``max_bits``, or the memory of this machine."""


class MismatchError(SubmaskError, ValueError):
    """Masks, models or checkpoints do not line up: missing tensors, other shapes, another model."""


class SourceError(SubmaskError):
    """A checkpoint source cannot be read: missing file or shard, bad index, unsupported dtype."""


class HubError(SubmaskError):
    """A Hub operation failed: missing repo, revision or file, or a refused overwrite.

    ``repo_id`` and ``revision`` name the repo and revision involved, when known.
    """

    def __init__(self, message: str, *, repo_id: str | None = None, revision: str | None = None):
        super().__init__(message)
        self.repo_id, self.revision = repo_id, revision


class UsageError(SubmaskError, ValueError):
    """An argument or call the API does not accept: an unknown option value, a call in the wrong state."""


class OutputError(SubmaskError, OSError):
    """An output cannot be written: it exists (without overwrite), its folder is not writable, or the disk is full.

    ``path`` is the target; ``errno`` the operating system's code when an OSError caused it. Nothing partial is
    left behind: the target keeps its old content or does not appear.
    """

    def __init__(self, path: object, message: str, errno: int | None = None):
        super().__init__(f"{path}: {message}")
        self.path = path
        if errno is not None:
            self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


def where(path: object = None, tensor: str | None = None) -> str:
    """Format the location prefix used in error messages: "file.smask, tensor 'x': "."""
    parts = []
    if path is not None:
        parts.append(str(path))
    if tensor is not None:
        parts.append(f"tensor {tensor!r}")
    return (", ".join(parts) + ": ") if parts else ""
