"""Naming the files of a sharded mask and publishing them atomically (FORMAT.md section 6).

Shard names derive from the mask's own name and its write id and never reuse an existing name, so two
masks in one folder never share a shard. A sharded mask is published over whatever mask was at its path by
one rename, that of the index:

1. write the new shards under their fresh names (the old mask is untouched, still complete);
2. rename the new index over the old one: the commit point;
3. delete the shards the old index named that the new one does not, and a single file at the path.

A failure before step 2 leaves the old mask and removes the new shards; a kill leaves the old mask and, at
worst, unreferenced new shards, which no index names and no reader opens. Before step 1 the writer notes, in a
``pending`` file named after its process (``atomic.new_note``), the files it places and those it will delete;
the next write into the folder (``remove_orphans``) finishes the job of a writer that was killed, deleting only
what that note names and the index at its target does not.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..atomic import atomic_write, new_note, stale_notes
from ..errors import FormatError
from ..metadata import is_bare_file_name
from .reader import INDEX_SUFFIX, read_index

ShardWriter = Callable[[BinaryIO], None]


def new_write_id() -> str:
    """A fresh random write id: 32 lowercase hex digits."""
    return secrets.token_hex(16)


def index_path_for(target: Path) -> Path:
    """The index of a sharded mask saved at ``target`` (``rl.smask`` or ``rl.smask.index.json``)."""
    return target.with_name(target.name.removesuffix(INDEX_SUFFIX) + INDEX_SUFFIX)


def shard_names(target_name: str, write_id: str | None, count: int, taken: Callable[[list[str]], bool]) -> list[str]:
    """Names for ``count`` shards of the mask named ``target_name``: ``STEM-ID-0000K-of-0000N.smask``.

    ID is the first 8 hex digits of ``write_id``, or 8 random ones when there is no write id or when
    ``taken(names)`` says one of the names exists already: a new write never reuses a name.

    >>> shard_names("rl.smask", "0123456789abcdef" * 2, 2, lambda names: False)
    ['rl-01234567-00001-of-00002.smask', 'rl-01234567-00002-of-00002.smask']
    """
    stem, suffix = posixpath.splitext(target_name.removesuffix(INDEX_SUFFIX))
    token = write_id[:8] if write_id else secrets.token_hex(4)
    while True:
        names = [f"{stem}-{token}-{k:05d}-of-{count:05d}{suffix or '.smask'}" for k in range(1, count + 1)]
        if not taken(names):
            return names
        token = secrets.token_hex(4)


def renamed_index(index: dict[str, Any], old_names: Sequence[str], new_names: Sequence[str]) -> dict[str, Any]:
    """``index`` with its shards renamed ``old_names[k]`` -> ``new_names[k]`` (shard headers name no files)."""
    renamed = dict(zip(old_names, new_names))
    return {**index, "weight_map": {tensor: renamed[shard] for tensor, shard in index["weight_map"].items()}}


def index_bytes(index: dict[str, Any]) -> bytes:
    """The bytes of an index file."""
    return json.dumps(index, indent=2).encode("utf-8") + b"\n"


def publish_sharded(target: Path, write_id: str | None, shards: Sequence[ShardWriter],
                    make_index: Callable[[list[str]], dict[str, Any]], overwrite: bool = True) -> list[Path]:
    """Publish a sharded mask at ``target`` atomically; returns the shard paths, then the index path.

    ``shards[k]`` writes the bytes of shard k+1; ``make_index`` turns the chosen shard names into the index.
    Without ``overwrite``, an index that another process published meanwhile is an OutputError (and this
    write's shards are removed); nothing is replaced or deleted.
    """
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    index_path = index_path_for(target)
    names = shard_names(target.name, write_id, len(shards), lambda found: any((directory / n).exists() for n in found))
    previous = _named_shards(index_path)
    single = directory / target.name.removesuffix(INDEX_SUFFIX)
    note = new_note(index_path, json.dumps({"index": index_path.name, "new": names,
                                            "old": sorted(previous - set(names)) if overwrite else [],
                                            "single": single.name if overwrite else None}))
    written: list[Path] = []
    try:
        for name, write in zip(names, shards):
            with atomic_write(directory / name) as out:
                write(out)
            written.append(directory / name)
        with atomic_write(index_path, overwrite) as out:  # the commit point
            out.write(index_bytes(make_index(names)))
    except BaseException:
        _remove([*written, note])
        raise
    if overwrite:
        _remove([directory / name for name in sorted(previous - set(names))] + ([single] if single.is_file() else []))
    _remove([note])
    return [*written, index_path]


def remove_orphans(directory: Path) -> list[Path]:
    """Finish the sharded publishes in ``directory`` whose writer was killed (``publish_sharded``): delete the
    files its note names that the index at its target does not (its new shards if it never committed; the old
    shards and the single file it replaced if it did), then the note. Returns the files deleted."""
    removed: list[Path] = []
    for note in stale_notes(directory):
        try:
            plan = json.loads(note.read_text(encoding="utf-8"))
            index_path = directory / plan["index"]
            listed = set(read_index(index_path)["weight_map"].values()) if index_path.is_file() else set()
            committed = set(plan["new"]) <= listed  # the index at the target is the one this write published
            doomed = [name for name in plan["new"] + (plan["old"] if committed else []) if name not in listed]
            if committed and plan["single"]:
                doomed.append(plan["single"])
        except (OSError, ValueError, KeyError, TypeError, FormatError):
            continue  # a note or index it cannot read: it deletes nothing, and keeps the note for a look
        paths = [directory / name for name in doomed if is_bare_file_name(name) and (directory / name).is_file()]
        _remove([*paths, note])
        removed += paths
    return removed


def _named_shards(index_path: Path) -> set[str]:
    """The shard names an existing index lists (none if it is absent or unreadable: then nothing is deleted)."""
    if not index_path.is_file():
        return set()
    try:
        return set(read_index(index_path)["weight_map"].values())
    except FormatError:
        return set()


def _remove(paths: Iterable[Path]) -> None:
    # best effort: what is left is named by no index, so no reader opens it
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
