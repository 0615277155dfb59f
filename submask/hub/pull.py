"""Download masks from the Hub, pinned to the commit a revision names; ``hf://`` paths resolve through here."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import HubError
from ..fit import check_model, open_mask
from ..format import load
from ..format.reader import INDEX_SUFFIX
from ..format.writer import check_mask_target
from ..mask import Mask
from .listing import mask_files
from .paths import HubPath, parse_hub_url
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


def pull_mask(repo_id: str, path: str, *, revision: str | None = None, local_path: str | os.PathLike[str] | None = None,
              expect_model: Shapes | None = None, repo_type: str = "model", token: str | None = None,
              endpoint: str | None = None, overwrite: bool = False) -> PulledMask:
    """Download the mask at ``path`` (or its shards and index) at ``revision`` through huggingface_hub's cache.

    The revision (branch, tag or sha; default branch if None) is resolved to a commit first and every file is
    fetched at that commit. ``local_path`` also copies the mask there (an existing file only with ``overwrite``,
    else OutputError before the download). ``expect_model`` (parameter name ->
    shape) loads the mask and checks it fits that model (MismatchError otherwise).

    >>> pulled = pull_mask("org/model", "masks/rl.smask", revision="v1.0")    # doctest: +SKIP
    >>> pulled.local_path, pulled.commit                                      # doctest: +SKIP
    """
    if local_path is not None:
        check_mask_target(local_path, overwrite)
    remote = Remote(repo_id, repo_type, endpoint, token)
    path = path.strip("/").removesuffix(INDEX_SUFFIX)
    commit = remote.commit(revision)
    files = mask_files(remote, path, commit)
    if not files:
        raise HubError(f"{repo_id}@{revision or DEFAULT_BRANCH}: no mask {path!r} (nor {path + INDEX_SUFFIX!r}) at "
                       f"commit {commit}; `submask ls {repo_id}` lists the masks there")
    cached = [remote.download(file, commit) for file in files]
    local = cached[0] if local_path is None else _copy_out(cached, Path(local_path))
    pulled = PulledMask(local, repo_id, path, revision or DEFAULT_BRANCH, commit, repo_type)
    if expect_model is not None:
        with open_mask(local) as mask_file:  # headers only
            check_model(mask_file, expect_model, what=f"the model given for {pulled.url}")
    return pulled


def mask_from_hub(repo_id: str, path: str, revision: str | None = None, *, expect_model: Shapes | None = None,
                  **options: Any) -> Mask:
    """Pull and load a mask; ``mask.metadata.extra["source"]`` records the repo, path and commit."""
    pulled = pull_mask(repo_id, path, revision=revision, **options)
    mask = load(pulled.local_path)
    mask.metadata.extra["source"] = pulled.source
    if expect_model is not None:
        mask.check_model(expect_model, what=f"the model given for {pulled.url}")
    return mask


def resolve_mask_path(url: str) -> Path:
    """The local file for an ``hf://`` mask URL, downloaded (or found in the cache) at the revision it names."""
    target = parse_hub_url(url)
    return pull_mask(target.repo_id, target.path, revision=target.revision, repo_type=target.repo_type).local_path


def _copy_out(cached: list[Path], target: Path) -> Path:
    """Copy a mask out of the cache to ``target``: shards first, the index (named after ``target``) last."""
    if len(cached) == 1:
        _copy(cached[0], target)
        return target
    index, *shards = cached
    for shard in shards:
        _copy(shard, target.parent / shard.name)
    index_target = target.with_name(target.name.removesuffix(INDEX_SUFFIX) + INDEX_SUFFIX)
    _copy(index, index_target)
    return index_target


def _copy(source: Path, target: Path) -> None:
    with open(source, "rb") as src, atomic_write(target) as out:
        shutil.copyfileobj(src, out, 1 << 20)
