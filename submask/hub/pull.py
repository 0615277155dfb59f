"""Download masks from the Hub, pinned to the commit a revision names; ``hf://`` paths resolve through here."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from ..align import check_model
from ..atomic import atomic_write
from ..errors import FormatError, HubError, SubmaskError
from ..format.reader import INDEX_SUFFIX, MaskFile, read_index
from ..format.shards import publish_sharded, renamed_index
from ..format.writer import check_mask_target
from .listing import mask_files
from .paths import HubPath, hub_target, parse_hub_url
from .remote import DEFAULT_BRANCH, Remote

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class PulledMask:
    """A downloaded mask: ``local_path`` is the file to open (the index for a sharded mask)."""

    local_path: Path
    repo_id: str
    path: str
    revision: str
    commit: str
    repo_type: str = "model"

    @property
    def source(self) -> dict[str, str]:
        """Where the mask came from, pinned: repo, path in the repo and commit sha."""
        return {"repo": self.repo_id, "repo_type": self.repo_type, "path": self.path, "commit": self.commit}

    @property
    def url(self) -> str:
        """An ``hf://`` URL for exactly this version."""
        return HubPath(self.repo_id, self.path, self.commit, self.repo_type).url


def pull_mask(repo_id: str, path: str | None = None, *, revision: str | None = None,
              local_path: str | os.PathLike[str] | None = None, expect_model: Shapes | None = None,
              repo_type: str = "model", token: str | None = None,
              endpoint: str | None = None, overwrite: bool = False, verify: bool = True) -> PulledMask:
    """Download the mask at ``path`` (or its shards and index) at ``revision`` through huggingface_hub's cache.

    ``repo_id`` is ``ORG/NAME``, ``ORG/NAME@REVISION`` or an ``hf://`` URL, which may hold the path (then
    ``path`` is left out).

    The revision (branch, tag or sha; default branch if None) is resolved to a commit first and every file is
    fetched at that commit. ``local_path`` also copies the mask there (an existing file only with ``overwrite``,
    else OutputError before the download). ``expect_model`` (parameter name ->
    shape) loads the mask and checks it fits that model (MismatchError otherwise). Every tensor is decoded and
    checked before anything is handed out or copied; ``verify=False`` leaves that to the reader (as
    ``submask.open`` / ``submask.load`` do: they check each tensor as they decode it, after ``max_bits``).

    >>> pulled = pull_mask("org/model", "masks/rl.smask", revision="v1.0")    # doctest: +SKIP
    >>> pulled.local_path, pulled.commit                                      # doctest: +SKIP
    """
    if local_path is not None:
        check_mask_target(local_path, overwrite)
    target = hub_target(repo_id, path, revision, repo_type)
    if not target.path:
        raise HubError(f"{repo_id}: name the mask to pull: a path in the repo (hf://ORG/NAME[@REVISION]/path)")
    repo_id, revision, repo_type = target.repo_id, target.revision, target.repo_type
    remote = Remote(repo_id, repo_type, endpoint, token)
    path = target.path.removesuffix(INDEX_SUFFIX)
    commit = remote.commit(revision)
    files = mask_files(remote, path, commit)
    if not files:
        raise HubError(f"{repo_id}@{revision or DEFAULT_BRANCH}: no mask {path!r} (nor {path + INDEX_SUFFIX!r}) at "
                       f"commit {commit}; `submask ls {repo_id}` lists the masks there")
    cached = [remote.download(file, commit) for file in files]
    pulled = PulledMask(cached[0], repo_id, path, revision or DEFAULT_BRANCH, commit, repo_type)
    if verify:
        _verify(cached[0], pulled.url)
    if local_path is not None:
        pulled = replace(pulled, local_path=_copy_out(cached, Path(local_path)))
    if expect_model is not None:
        with MaskFile(pulled.local_path) as mask_file:  # headers only
            check_model(mask_file, expect_model, what=f"the model given for {pulled.url}")
    return pulled


def pull_url(url: str, **options: Any) -> PulledMask:
    """``pull_mask`` of an ``hf://`` mask URL (options: ``token``, ``endpoint``, ``local_path``, ...)."""
    parse_hub_url(url)  # a URL of a file, not of a repo
    return pull_mask(url, **options)


@contextlib.contextmanager
def shown_as(url: str, local: Path) -> Iterator[None]:
    """Errors raised in the block name the ``hf://`` URL the user gave, not huggingface_hub's cache path."""
    try:
        yield
    except SubmaskError as exc:
        exc.args = tuple(as_typed(arg, url, local) if isinstance(arg, str) else arg for arg in exc.args)
        raise


def as_typed(message: str, url: str, local: Path) -> str:
    """``message`` with the cache folder of ``local`` (a file pulled for ``url``) written as ``url``'s repo."""
    parts = Path(local).parts
    if "snapshots" not in parts[:-1]:
        return message
    root = str(Path(*parts[:parts.index("snapshots") + 2])) + os.sep
    return message.replace(root, parse_hub_url(url).repo_url + "/")


def _verify(local: Path, url: str) -> None:
    """Decode every tensor of a downloaded mask and check its checksum: a damaged mask is never handed out."""
    try:
        with MaskFile(local) as mask_file:
            problems = mask_file.problems()
    except FormatError as exc:
        problems = [str(exc)]
    if problems:
        raise FormatError(f"{url}: the mask in the repo is damaged ({problems[0]}); nothing was written; ask its "
                          "owner to push it again")


def _copy_out(cached: list[Path], target: Path) -> Path:
    """Copy a mask out of the cache to ``target``; a sharded one is published as a local write would be:
    shards under names derived from ``target`` and the write id, the index last (``format.shards``)."""
    if len(cached) == 1:
        with atomic_write(target) as out:
            _copy_into(out, cached[0])
        return target
    with MaskFile(cached[0]) as mask_file:  # checks that the shards belong together before copying them
        shards, write_id = mask_file.shards, mask_file.write_id
    index = read_index(cached[0])
    old_names = [shard.name for shard in shards]
    published = publish_sharded(target, write_id, [partial(_copy_into, source=shard) for shard in shards],
                                lambda names: renamed_index(index, old_names, names))
    return published[-1]


def _copy_into(out: BinaryIO, source: Path) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
