"""Atomic outputs: checked before the work, written to owned temp files, published under the target at the end.

Without overwrite, publishing never replaces anything (``publish``): of two processes writing one new path at
once, exactly one wins and the other refuses after its work, removing its own result. With overwrite, the last
writer wins, whole or nothing.

Every temp file or folder is named ``.TARGET.PID@HOST-BOOT.RANDOM.KIND`` (KIND: ``tmp``, ``part`` or ``old``;
``pending`` for the note a sharded publish keeps of the files it is placing, ``format.shards``),
so that a later run in the same folder recognises the leftovers of a process that was killed (kill -9,
out of memory, power loss) and removes them: the owner is gone when the machine rebooted since, or when no
process with that pid is alive. Temp files of other hosts (shared file systems) are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from .errors import OutputError

_STALE_NAME = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)@(?P<host>[0-9a-f]{8})-(?P<boot>[0-9a-f]{8})\.[^.]+"
                         r"\.(?P<kind>tmp|part|old|pending)")
#: Remedies for the operating system errors a write meets, by errno.
_REMEDIES = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write elsewhere",
    errno.EFBIG: "the file is larger than this file system or process allows; write elsewhere",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EISDIR: "it is a directory; name a file to write",
    errno.ENOTDIR: "a part of the path is not a directory; choose another path",
}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: a reboot is then only detected through dead pids
        return ""


_HOST, _BOOT = _digest(socket.gethostname()), _digest(_boot_id())


def temp_prefix(target: Path) -> str:
    """The start of a temp name for ``target`` owned by this process (the pid is read now: forks differ)."""
    return f".{target.name}.{os.getpid()}@{_HOST}-{_BOOT}."


def _owner_gone(pid: int, boot: str) -> bool:
    if boot != _BOOT:
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def remove_stale(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files and folders in ``directory`` whose owner process on this host is gone."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            match = _STALE_NAME.fullmatch(entry.name)
            if not match or match["kind"] == "pending" or not _is_stale(match):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(path)
    return removed


def _is_stale(match: re.Match[str]) -> bool:
    return match["host"] == _HOST and _owner_gone(int(match["pid"]), match["boot"])


def stale_notes(directory: str | os.PathLike[str]) -> list[Path]:
    """The ``pending`` notes in ``directory`` whose owner process on this host is gone (see ``new_note``)."""
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        return [Path(entry.path) for entry in entries
                if (match := _STALE_NAME.fullmatch(entry.name)) and match["kind"] == "pending" and _is_stale(match)]
    return []


def new_note(target: Path, text: str) -> Path:
    """Durably write ``text`` to a new ``pending`` note next to ``target``, named after this process, so that
    a later run can tell, once this process is gone, what it was doing (``stale_notes``)."""
    note = target.with_name(f"{temp_prefix(target)}{secrets.token_hex(4)}.pending")
    with open(note, "x", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return note


def output_error(target: str | os.PathLike[str], exc: OSError) -> OutputError:
    """An OSError met while writing ``target``, as an OutputError that names it and says what to do."""
    remedy = _REMEDIES.get(exc.errno or 0, f"{exc.strerror or exc}; check the path and try again")
    name = Path(exc.filename).name if exc.filename else None
    where = f" ({exc.filename})" if name and name != Path(target).name and not _STALE_NAME.fullmatch(name) else ""
    return OutputError(target, f"cannot write{where}: {remedy} (nothing was written)", exc.errno)


@contextlib.contextmanager
def writing(target: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an OSError raised in the block (disk full, permission denied...) into an OutputError for ``target``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(target, exc) from exc


def check_target(path: str | os.PathLike[str], overwrite: bool = False, *, directory: bool = False,
                 inputs: Iterable[object] = ()) -> Path:
    """Raise OutputError now, before any work, if ``path`` cannot or may not be written.

    Refused: an existing file (a non-empty folder when ``directory``) unless ``overwrite``; a folder where a
    file is to be written and the other way round; a path under a file; a parent folder this process cannot
    write to; a target that is, or holds, one of the local ``inputs`` (other kinds of input are ignored).
    """
    target = Path(path)
    resolved = target.resolve()
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and Path(source).exists():
            held = Path(source).resolve()
            if resolved == held or resolved in held.parents:
                raise OutputError(target, f"is or holds an input ({source}); choose another output path")
    if target.is_dir() and not directory:
        raise OutputError(target, "is a directory; name a file to write")
    if target.exists() and directory and not target.is_dir():
        raise OutputError(target, "exists and is not a directory; choose another output directory")
    exists = target.is_dir() and any(target.iterdir()) if directory else target.exists()
    if exists and not overwrite:
        what = "directory exists and is not empty" if directory else "exists"
        raise OutputError(target, f"{what}; pass --overwrite (overwrite=True) to replace it, or choose another path")
    parent = target.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(target, f"{parent} is not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(target, f"cannot write into {parent}: permission denied; choose a folder you can write to")
    return target


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only if the block finishes without an exception.

    On any exception, KeyboardInterrupt included, the temp file is removed and ``path`` is untouched. An
    OSError (disk full, permission denied) becomes an OutputError naming ``path``; so does, without
    ``overwrite``, a ``path`` that another process created meanwhile (``publish``).
    """
    target = Path(path)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target.parent)
        handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=temp_prefix(target), suffix=".tmp",
                                             delete=False)
        try:
            with handle:
                yield cast(BinaryIO, handle)
                handle.flush()
                os.fchmod(handle.fileno(), _file_mode(target))
                os.fsync(handle.fileno())
            publish(Path(handle.name), target, overwrite)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(handle.name)
            raise


def _file_mode(target: Path) -> int:
    """The mode the file would get from a plain open(): the old file's, else 0o666 minus the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """This process's umask (reading it means setting it: set it straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def scratch_file(directory: str | os.PathLike[str], target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A read-write temp file in ``directory`` for work towards ``target``, always deleted when the block ends."""
    with writing(target):
        Path(directory).mkdir(parents=True, exist_ok=True)
        remove_stale(directory)
        handle = tempfile.NamedTemporaryFile(dir=directory, prefix=temp_prefix(Path(target)), suffix=".part",
                                             delete=False)
    try:
        with writing(target), handle:  # closing flushes: a full disk may first show here
            yield cast(BinaryIO, handle)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temp directory next to ``out`` (so the final rename stays on one filesystem), removed on failure.

    Named after this process (``temp_prefix``), so a later run removes it if this one is killed; given
    the mode a plain mkdir would (mkdtemp's is 0700), since it becomes ``out``.
    """
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out.parent)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=temp_prefix(out), suffix=".tmp"))
        staging.chmod(0o777 & ~current_umask())
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(staging: Path, out: Path, overwrite: bool = True) -> None:
    """Move ``staging`` to ``out``. Without ``overwrite``, only where ``out`` is absent or an empty folder
    (OutputError otherwise, ``staging`` is left to its owner); with it, an existing ``out`` is moved aside
    first and removed after."""
    if not overwrite:
        publish(staging, out, overwrite=False)
        return
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=temp_prefix(out), suffix=".old"))
        os.replace(out, old / "dir")
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def publish(source: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished temp file or folder ``source`` to ``target``, in one step.

    With ``overwrite``, an existing file is replaced. Without it nothing is ever replaced: a file is published
    by renameat2(RENAME_NOREPLACE) where the kernel and file system offer it, else by a hard link (which never
    replaces) and the unlink of ``source``; a folder by rename(2), which replaces an empty folder only. A
    ``target`` that another process created since ``check_target`` is an OutputError (``source`` stays, for
    its owner to remove).
    """
    if overwrite:
        os.replace(source, target)
        return
    try:
        if source.is_dir():
            os.rename(source, target)
        elif not _rename_noreplace(source, target):
            _link_noreplace(source, target)
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
        raise _taken(target) from exc
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise _taken(target) from exc
        raise


def _taken(target: Path) -> OutputError:
    return OutputError(target, "was written by another process while this one worked; this result was not kept "
                               "(pass --overwrite (overwrite=True) to replace it, or choose another path)")


_RENAME_NOREPLACE, _AT_FDCWD = 1, -100


def _rename_noreplace(source: Path, target: Path) -> bool:
    """renameat2(RENAME_NOREPLACE): True when done, False where this system cannot (then nothing happened);
    FileExistsError when ``target`` exists."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # an old kernel, or a file system
        return False
    raise OSError(code, os.strerror(code), str(target))


def _link_noreplace(source: Path, target: Path) -> None:
    """Publish ``source`` at ``target`` by a hard link (never replaces); without hard links (some network and
    FAT file systems), by a rename after a last look, which cannot exclude a writer that publishes in between."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from exc
        os.rename(source, target)
        return
    os.unlink(source)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2 (glibc 2.28 and later), or None."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):  # not glibc 2.28+ (musl before 1.2.4, macOS, Windows)
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function
