"""Publish a mask to a Hub repo in one commit (mask files, stale shards removed, model card section)."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import FormatError, HubError, where
from ..format.reader import INDEX_SUFFIX, MaskFile, local_mask_path, read_index
from ..format.shards import index_bytes, renamed_index, shard_names
from .card import CARD_PATH, render_section, replace_section
from .listing import MaskListing, listings, mask_files
from .paths import HubPath, hub_target, is_hub_url
from .remote import DEFAULT_BRANCH, Remote, huggingface_hub

Uploads = list[tuple[str, "Path | bytes"]]  # (path in the repo, local file or content)


@dataclass(frozen=True)
class PushedMask:
    """The result of a push: the commit made, the pull request it opened (if ``create_pr``), and ``problems``:
    masks already in the repo that could not be read for the card (left out of it)."""

    repo_id: str
    path: str
    commit: str
    revision: str
    files: tuple[str, ...]
    pr_url: str | None = None
    repo_type: str = "model"
    problems: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """An ``hf://`` URL for exactly this version."""
        return HubPath(self.repo_id, self.path, self.commit, self.repo_type).url


def push_mask(local_path: str | os.PathLike[str], repo_id: str, path_in_repo: str | None = None, *,
              revision: str | None = None, create_pr: bool = False, commit_message: str | None = None,
              overwrite: bool = False, update_card: bool = True, create_repo: bool = False,
              repo_type: str = "model", token: str | None = None, endpoint: str | None = None) -> PushedMask:
    """Upload a local mask (single file or sharded) to ``path_in_repo`` (default ``masks/NAME``) in one commit.

    ``repo_id`` is ``ORG/NAME``, ``ORG/NAME@BRANCH`` or an ``hf://`` URL, which may hold the path in the repo.
    The path is refused (before any request) unless it is written as the Hub stores it (``paths.repo_path``).

    Refuses to replace an existing mask unless ``overwrite``. ``revision`` is the branch to commit to (default
    branch if None); ``create_pr`` opens a pull request against it instead. With ``update_card`` the same
    commit rewrites the masks section of README.md, keeping the rest of the card byte for byte. The local
    files are only read; if the commit fails, the repo is left as it was.

    >>> push_mask("rl.smask", "org/model", "masks/rl.smask", commit_message="Add RL mask")   # doctest: +SKIP
    """
    if is_hub_url(os.fspath(local_path)):
        raise HubError(f"{local_path}: push takes a local mask file, not an hf:// URL")
    target = hub_target(repo_id, path_in_repo, revision, repo_type)
    repo_id, revision, repo_type = target.repo_id, target.revision, target.repo_type
    local = local_mask_path(local_path)
    path = (target.path or f"masks/{local.name}").removesuffix(INDEX_SUFFIX)
    remote = Remote(repo_id, repo_type, endpoint, token)
    if create_repo:
        with remote.errors():
            remote.api.create_repo(repo_id, repo_type=repo_type, exist_ok=True)
    head = remote.commit(revision)
    branch = revision or DEFAULT_BRANCH
    replaced = mask_files(remote, path, head)
    if replaced and not overwrite:
        raise HubError(f"{repo_id}@{branch}: a mask already exists at {path!r} (commit {head}); pass --overwrite "
                       "(overwrite=True) to replace it, or push to another path")
    uploads, listing_of = _local_mask(local, path, lambda paths: bool(remote.existing(paths, head)))
    hub = huggingface_hub()
    operations = [hub.CommitOperationAdd(path_in_repo=dest, path_or_fileobj=src) for dest, src in uploads]
    operations += [hub.CommitOperationDelete(path_in_repo=stale) for stale in set(replaced) - {d for d, _ in uploads}]
    problems: list[str] = []
    if update_card:
        present = listings(remote, head)
        problems = present.problems
        card = _card(remote, head, [m for m in present if m.path != path] + [listing_of])
        if card is not None:
            operations.append(hub.CommitOperationAdd(path_in_repo=CARD_PATH, path_or_fileobj=card))
    message = commit_message or f"{'Update' if replaced else 'Add'} mask {path}"
    with remote.errors(revision=branch):
        try:
            info = remote.api.create_commit(repo_id, operations, commit_message=message, revision=revision,
                                            create_pr=create_pr, parent_commit=head, repo_type=repo_type)
        except KeyError:  # huggingface_hub reads "pullRequestUrl" from the answer without checking it is there
            if not create_pr:
                raise
            info = None
    if create_pr and (info is None or not info.pr_url):  # a server without pull requests commits to the branch
        raise HubError(f"{repo_id}: asked for a pull request, but the Hub at {remote.url} opened none; the commit "
                       f"may have landed on {branch}: check the repo (revert it if unwanted)")
    return PushedMask(repo_id, path, info.oid, info.pr_revision or branch, tuple(d for d, _ in uploads),
                      info.pr_url, repo_type, tuple(problems))


def _local_mask(local: Path, path: str, taken: Callable[[list[str]], bool]) -> tuple[Uploads, MaskListing]:
    """(repo path, local file or bytes) pairs to upload, and the mask's listing; refuses files that fail to decode.

    Shards go next to ``path`` under names derived from its name and the mask's write id, never names that
    ``taken`` says exist in the repo, with the index rewritten to name them: a push never touches the files
    of another mask.
    """
    with MaskFile(local) as mask_file:
        problems = mask_file.problems()
        if problems:
            raise FormatError(f"{where(local)}refusing to push a damaged mask: {problems[0]}")
        if mask_file.shards:
            folder = posixpath.dirname(path)
            names = shard_names(posixpath.basename(path), mask_file.write_id, len(mask_file.shards),
                                lambda found: taken([posixpath.join(folder, name) for name in found]))
            index = renamed_index(read_index(local), [shard.name for shard in mask_file.shards], names)
            shards = [(posixpath.join(folder, name), shard) for name, shard in zip(names, mask_file.shards)]
            head: Uploads = [(path + INDEX_SUFFIX, index_bytes(index))]
        else:
            shards, head = [(path, local)], []
        size = sum(src.stat().st_size for _, src in shards)
        listing = MaskListing.from_header(path, size, mask_file.metadata, mask_file.entries.values(), len(shards))
    return [*head, *shards], listing


def _card(remote: Remote, head: str, masks: list[MaskListing]) -> bytes | None:
    """The new README.md for ``masks`` at ``head``, or None when it would not change."""
    old = None
    if remote.existing([CARD_PATH], head):
        old = remote.download(CARD_PATH, head).read_bytes().decode("utf-8", errors="surrogateescape")
    section = render_section(remote.repo_id, sorted(masks, key=lambda m: m.path))
    new = replace_section(old, section, remote.repo_id)
    return None if new == old else new.encode("utf-8", errors="surrogateescape")
