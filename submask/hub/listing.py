"""Masks in a Hub repo: which files make up a mask, and ``list_masks`` from headers alone (HTTP range reads)."""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import FormatError, HubError
from ..format.container import parse_header, read_header_length
from ..format.header import TensorEntry, parse_tensor_entries
from ..format.reader import INDEX_SUFFIX, check_shards, read_index
from ..metadata import MaskMetadata
from .paths import HubPath, hub_target
from .remote import Remote

MASK_SUFFIX = ".smask"
_REPO_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")  # ORG/NAME, as the Hub spells repo ids


@dataclass(frozen=True)
class MaskListing:
    """A mask stored in a repo, summarised from its header(s): ``path`` is what ``pull_mask`` takes; ``count``
    of its ``numel`` entries are set.

    ``base_model`` is the Hub model it was built against, ``ORG/NAME@COMMIT`` (None when built from local files);
    ``delta`` says whether it carries values that rebuild the finetuned weights (FORMAT.md §12).
    """

    path: str
    size: int
    kind: str
    tensors: int
    count: int
    numel: int
    base_model: str | None
    shards: int = 1
    delta: bool = False

    @property
    def density(self) -> float:
        """count / numel; 0.0 over no entries."""
        return self.count / self.numel if self.numel else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "density": self.density}

    @classmethod
    def from_header(cls, path: str, size: int, metadata: MaskMetadata, entries: Iterable[TensorEntry],
                    shards: int = 1) -> MaskListing:
        entries = list(entries)
        delta = metadata.checkpoint is not None or any(e.values is not None for e in entries)
        return cls(path, size, metadata.kind, len(entries), sum(e.ones for e in entries),
                   sum(e.bits for e in entries), base_model(metadata), shards, delta)


class MaskListings(list[MaskListing]):
    """The masks found in a repo, and ``problems``: one line per mask left out (the rest still listed)."""

    def __init__(self, masks: Iterable[MaskListing] = (), problems: Iterable[str] = ()):
        super().__init__(masks)
        self.problems = list(problems)


def base_model(metadata: MaskMetadata) -> str | None:
    """The Hub model a mask was built against: ``ORG/NAME@COMMIT`` for a build from the Hub, ``ORG/NAME`` for a
    provenance that names a repo id without a revision, else None (a build from local files)."""
    base = metadata.provenance.get("base")
    if not isinstance(base, dict):
        return None
    source, revision = base.get("source"), base.get("revision")
    if not isinstance(source, str) or not _REPO_ID.fullmatch(source):
        return None
    if revision:
        return f"{source}@{revision}"
    return None if "revision" in base else source  # a local build records "revision": None


def list_masks(repo_id: str, revision: str | None = None, *, repo_type: str = "model", token: str | None = None,
               endpoint: str | None = None) -> MaskListings:
    """The masks in a repo at ``revision`` (default branch if None), read from their headers only.

    ``repo_id`` is ``ORG/NAME[@REVISION]`` or an ``hf://`` URL; a path in it lists only the masks in that folder.
    A mask that cannot be read does not stop the listing: it is left out and described in ``.problems``.

    >>> [(m.path, m.density) for m in list_masks("org/model")]      # doctest: +SKIP
    [('masks/rl.smask', 0.042)]
    """
    target = hub_target(repo_id, None, revision, repo_type)
    remote = Remote(target.repo_id, target.repo_type, endpoint, token)
    return listings(remote, remote.commit(target.revision), target.path)


def listings(remote: Remote, commit: str, folder: str = "") -> MaskListings:
    """Every mask at ``commit`` (in ``folder``, if given): single ``.smask`` files and sharded masks (by their
    index), sorted by path."""
    prefix = folder + "/" if folder else ""
    files = {path: size for path, size in remote.files(commit).items() if path.startswith(prefix)}
    found, in_shards = MaskListings(), set()
    for index in (p for p in files if p.endswith(MASK_SUFFIX + INDEX_SUFFIX)):
        with _skip_damaged(found.problems, _url(remote, index, commit)):
            index_data = read_index(remote.download(index, commit))
            shards = _named_shards(index, index_data)
            in_shards.update(shards)
            missing = [s for s in shards if s not in files]
            if missing:
                raise FormatError(f"{_url(remote, index, commit)}: shard(s) {missing[:3]} listed in the index are "
                                  "missing from the repo; push the mask again")
            headers = {shard: remote_header(remote, shard, files[shard], commit) for shard in shards}
            parsed = [_parsed(header, _url(remote, shard, commit)) for shard, header in headers.items()]
            check_shards(_url(remote, index, commit), index_data,
                         [(_url(remote, shard, commit), header) for shard, header in headers.items()])
            entries = [entry for _, shard_entries in parsed for entry in shard_entries.values()]
            size = sum(files[s] for s in shards)
            found.append(MaskListing.from_header(index.removesuffix(INDEX_SUFFIX), size, parsed[0][0], entries,
                                                 len(shards)))
    for path in (p for p in files if p.endswith(MASK_SUFFIX) and p not in in_shards):
        with _skip_damaged(found.problems, _url(remote, path, commit)):
            metadata, by_name = _parsed(remote_header(remote, path, files[path], commit), _url(remote, path, commit))
            found.append(MaskListing.from_header(path, files[path], metadata, by_name.values()))
    found.sort(key=lambda listing: listing.path)
    return found


@contextlib.contextmanager
def _skip_damaged(problems: list[str], url: str) -> Iterator[None]:
    """Note why a mask cannot be read (damaged, or a file the repo lists but will not serve) in ``problems``,
    naming its ``url``, and go on with the next mask."""
    try:
        yield
    except (FormatError, HubError) as exc:
        message = str(exc) if str(exc).startswith(url) else f"{url}: {exc}"  # an index names its cached copy
        problems.append(f"{message} (left out)")


def remote_header(remote: Remote, path: str, size: int, commit: str) -> Any:
    """A remote .smask file's submask header JSON, fetched with two range requests (length, header)."""
    url = _url(remote, path, commit)
    head = remote.read_range(path, commit, 0, 8) if size >= 8 else b""
    length = read_header_length(head, size, url)
    header, _ = parse_header(remote.read_range(path, commit, 8, 8 + length), url)
    return header


def _parsed(header: Any, url: str) -> tuple[MaskMetadata, dict[str, TensorEntry]]:
    metadata = MaskMetadata.from_json(header, url)
    return metadata, parse_tensor_entries(header.get("tensors"), metadata, url)


def mask_files(remote: Remote, path: str, commit: str) -> list[str]:
    """The repo files that make up the mask at ``path``: ``[path]``, or its index then shards; [] if absent."""
    index = path + INDEX_SUFFIX
    found = remote.existing([path, index], commit)
    if path in found:
        return [path]
    return [index, *_named_shards(index, read_index(remote.download(index, commit)))] if index in found else []


def _named_shards(index: str, index_data: dict[str, Any]) -> list[str]:
    """The shards an index names, as repo paths next to it."""
    folder = posixpath.dirname(index)
    return [posixpath.join(folder, shard) for shard in dict.fromkeys(index_data["weight_map"].values())]


def _url(remote: Remote, path: str, commit: str) -> str:
    return HubPath(remote.repo_id, path, commit, remote.repo_type).url
