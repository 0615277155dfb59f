"""Publish a mask to a Hub repo in one commit (mask files, stale shards removed, model card section)."""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import FormatError, HubError, where
from ..format.reader import INDEX_SUFFIX, MaskFile, local_mask_path, read_index
from ..format.shards import index_bytes, renamed_index, shard_names
from .card import CARD_PATH, PICTURE_SUFFIX, merge_metadata, picture_path, render_section, replace_section
from .listing import MaskListing, listings, mask_files
from .paths import HubPath, hub_target, is_hub_url
from .remote import DEFAULT_BRANCH, Remote, huggingface_hub
from .weights import Shapes, check_against_weights, repo_weights

Uploads = list[tuple[str, "Path | bytes"]]  # (path in the repo, local file or content)


@dataclass(frozen=True)
class PushedMask:
    """The result of a push: the commit made, the mask's ``files``, the pull request it opened (if
    ``create_pr``), its density ``picture`` (a path in the repo, or None), and ``problems``: warnings, such as
    masks already in the repo that could not be read for the card (left out of it)."""

    repo_id: str
    path: str
    commit: str
    revision: str
    files: tuple[str, ...]
    pr_url: str | None = None
    repo_type: str = "model"
    problems: tuple[str, ...] = ()
    picture: str | None = None

    @property
    def url(self) -> str:
        """An ``hf://`` URL for exactly this version."""
        return HubPath(self.repo_id, self.path, self.commit, self.repo_type).url


def push_mask(local_path: str | os.PathLike[str], repo_id: str, path_in_repo: str | None = None, *,
              revision: str | None = None, create_pr: bool = False, commit_message: str | None = None,
              overwrite: bool = False, update_card: bool = True, create_repo: bool = False, force: bool = False,
              base_model: str | None = None, repo_type: str = "model", token: str | None = None,
              endpoint: str | None = None) -> PushedMask:
    """Upload a local mask (single file or sharded) to ``path_in_repo`` (default ``masks/NAME``) in one commit.

    ``repo_id`` is ``ORG/NAME``, ``ORG/NAME@BRANCH`` or an ``hf://`` URL, which may hold the path in the repo.
    The path is refused (before any request) unless it is written as the Hub stores it (``paths.repo_path``).

    Refuses to replace an existing mask unless ``overwrite``. ``revision`` is the branch to commit to (default
    branch if None); ``create_pr`` opens a pull request against it instead. With ``update_card`` the same
    commit rewrites the masks section of README.md, adds ``base_model`` and the ``submask`` tag to its YAML
    front matter where absent (keeping the rest of the card byte for byte), and uploads the mask's density
    picture next to it (``NAME.smask.density.png``, with matplotlib), embedded in the card. ``base_model``
    (``ORG/NAME[@REVISION]``) names the model for a mask built from local files (a Hub build records it).

    When the repo holds safetensors weights, their names and shapes (read from the headers by range requests)
    must fit the mask's tensors: MismatchError otherwise, unless ``force``. The local files are only read; if
    the commit fails, the repo is left as it was.

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
    files = remote.files(head)
    weights = repo_weights(remote, head, files)
    problems: list[str] = []
    uploads, listing_of, counts = _local_mask(local, path, lambda paths: bool(remote.existing(paths, head)), weights,
                                              f"{repo_id}@{branch}", force, problems)
    if base_model is not None:
        listing_of = replace(listing_of, base_model=hub_target(base_model).repo_url.removeprefix("hf://"))
    hub = huggingface_hub()
    if update_card:
        present = listings(remote, head)
        problems += present.problems
        picture = _picture(counts, path, problems)
        uploads += [(picture_path(path), picture)] if picture is not None else []
        pictures = {p for p in files if p.endswith(PICTURE_SUFFIX)} | ({picture_path(path)} if picture else set())
        card = _card(remote, head, [m for m in present if m.path != path] + [listing_of], pictures,
                     listing_of.base_model)
        if card is not None:
            uploads.append((CARD_PATH, card))
    operations = [hub.CommitOperationAdd(path_in_repo=dest, path_or_fileobj=src) for dest, src in uploads]
    operations += [hub.CommitOperationDelete(path_in_repo=stale) for stale in set(replaced) - {d for d, _ in uploads}]
    message = commit_message or f"{'Update' if replaced else 'Add'} mask {path}"
    with remote.errors(revision=branch):
        try:
            info = remote.api.create_commit(repo_id, operations, commit_message=message, revision=revision,
                                            create_pr=create_pr, parent_commit=head, repo_type=repo_type)
        except KeyError:  # huggingface_hub reads "pullRequestUrl" from the answer without checking it is there
            if not create_pr:
                raise
            info = None
    if info is None or (create_pr and not info.pr_url):  # a server without pull requests commits to the branch
        raise HubError(f"{repo_id}: asked for a pull request, but the Hub at {remote.url} opened none; the commit "
                       f"may have landed on {branch}: check the repo (revert it if unwanted)")
    extras = {CARD_PATH, picture_path(path)}
    return PushedMask(repo_id, path, info.oid, info.pr_revision or branch,
                      tuple(d for d, _ in uploads if d not in extras), info.pr_url, repo_type, tuple(problems),
                      picture_path(path) if any(d == picture_path(path) for d, _ in uploads) else None)


def _local_mask(local: Path, path: str, taken: Callable[[list[str]], bool], weights: Shapes | None, repo: str,
                force: bool, problems: list[str]) -> tuple[Uploads, MaskListing, dict[str, tuple[int, int]]]:
    """(repo path, local file or bytes) pairs to upload, the mask's listing and its (count, numel) per tensor;
    refuses files that fail to decode, and (unless ``force``) masks that do not fit the repo's ``weights``.

    Shards go next to ``path`` under names derived from its name and the mask's write id, never names that
    ``taken`` says exist in the repo, with the index rewritten to name them: a push never touches the files
    of another mask.
    """
    with MaskFile(local) as mask_file:
        damaged = mask_file.problems()
        if damaged:
            raise FormatError(f"{where(local)}refusing to push a damaged mask: {damaged[0]}")
        if weights is not None:
            warning = check_against_weights(mask_file, weights, repo, force)
            problems += [warning] if warning else []
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
        counts = {name: (entry.ones, entry.bits) for name, entry in mask_file.entries.items()}
    return [*head, *shards], listing, counts


def _picture(counts: dict[str, tuple[int, int]], path: str, problems: list[str]) -> bytes | None:
    """The mask's density heatmap as PNG bytes, or None (with a line in ``problems``) without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        problems.append(f"{path}: no density picture in the card: matplotlib is not installed "
                        "(pip install 'submask[plot]')")
        return None
    from ..plot import plot_density

    with tempfile.TemporaryDirectory() as folder:
        return plot_density(counts, Path(folder) / "density.png", posixpath.basename(path)).read_bytes()


def _card(remote: Remote, head: str, masks: list[MaskListing], pictures: set[str],
          base_model: str | None) -> bytes | None:
    """The new README.md for ``masks`` at ``head``, or None when it would not change."""
    old = None
    if remote.existing([CARD_PATH], head):
        old = remote.download(CARD_PATH, head).read_bytes().decode("utf-8", errors="surrogateescape")
    section = render_section(remote.repo_id, sorted(masks, key=lambda m: m.path), pictures)
    new = merge_metadata(replace_section(old, section, remote.repo_id), base_model)
    return None if new == old else new.encode("utf-8", errors="surrogateescape")
