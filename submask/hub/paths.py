"""The one Hub grammar: ``hf://[datasets/|spaces/]ORG/NAME[@REVISION][/path/in/repo]``, paths in a repo, revisions.

Every command and function that takes a Hub thing takes this URL (a mask file, a model repo or a folder in it);
where a repo is expected the bare ``ORG/NAME[@REVISION]`` is accepted too.

The grammar is huggingface_hub's (``huggingface_hub.utils.parse_hf_uri``): the special refs ``refs/pr/N`` and
``refs/convert/NAME`` are matched eagerly after ``@`` (``hf://org/model@refs/pr/1/masks/rl.smask``); any other
revision containing "/" is written percent-encoded (``hf://org/model@feature%2Fx/m.smask``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ..errors import HubError

SCHEME = "hf://"
_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space", "models": "model"}
# huggingface_hub's _SPECIAL_REFS_REVISION_REGEX, here also required to end at "/" or the end of the URL
_SPECIAL_REF = re.compile(r"refs/(?:convert/[\w.-]+|pr/\d+)(?=/|$)")
# Revisions a URL path would normalise away ("..", "a/../b", "./main") or that git refuses ("a//b", "x/")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PATH_LIKE = re.compile(r"(?:^|/)\.\.?(?:/|$)|\.\.|//|^/|/$|[\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class HubPath:
    """A file in a Hub repo at an optional revision (None: the default branch)."""

    repo_id: str
    path: str
    revision: str | None = None
    repo_type: str = "model"

    @property
    def repo_url(self) -> str:
        """The repo (at the revision) as an ``hf://`` URL, without the path."""
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        if self.revision is None:
            at = ""
        elif _SPECIAL_REF.fullmatch(self.revision):
            at = "@" + self.revision
        else:
            at = "@" + quote(self.revision, safe="")
        return f"{SCHEME}{prefix}{self.repo_id}{at}"

    @property
    def url(self) -> str:
        """This path as an ``hf://`` URL (special refs verbatim, other revisions percent-encoded)."""
        return f"{self.repo_url}/{self.path}" if self.path else self.repo_url


def is_hub_url(text: str) -> bool:
    return text.startswith(SCHEME)


def check_revision(revision: str | None, repo_id: str) -> None:
    """Refuse a revision that is a path rather than a ref name: ``..`` would resolve to the default branch."""
    if revision is not None and (not revision or _PATH_LIKE.search(revision)):
        raise HubError(f"{repo_id}: {revision!r} is not a branch, tag or commit name (empty, '.'/'..' parts, "
                       "'//', spaces or control characters); name the revision exactly")


def repo_path(path: str, what: str = "path in the repo") -> str:
    """``path`` as the Hub stores it, or a HubError before any request: no backslashes, no empty, ``.`` or ``..``
    parts (``//``, ``./``, a leading or trailing ``/``), so that what is stored is what later reads ask for.

    >>> repo_path("masks/rl.smask")
    'masks/rl.smask'
    """
    parts = path.split("/")
    if not path or "\\" in path or any(part in ("", ".", "..") for part in parts) or _CONTROL.search(path):
        clean = "/".join(part for part in path.replace("\\", "/").split("/") if part not in ("", ".", ".."))
        hint = f"; write {clean!r}" if clean and ".." not in path.split("/") else ""
        raise HubError(f"{path!r}: not a {what}: use '/' between folder and file names, without empty, '.' or "
                       f"'..' parts, a leading or trailing '/', backslashes or control characters{hint}")
    return path


def parse_hub_ref(url: str) -> HubPath:
    """Split an ``hf://`` URL into repo, revision and path in the repo (``""`` for the repo itself).

    >>> parse_hub_ref("hf://org/model@v1.0")
    HubPath(repo_id='org/model', path='', revision='v1.0', repo_type='model')
    """
    if not is_hub_url(url):
        raise HubError(f"{url}: not an hf:// URL; write hf://ORG/NAME[@REVISION][/path/in/repo]")
    body = url[len(SCHEME):]
    first, _, rest = body.partition("/")
    repo_type = _TYPE_PREFIXES.get(first, "model")
    if first in _TYPE_PREFIXES:
        body = rest
    namespace, _, rest = body.partition("/")
    name, _, path = rest.partition("/")
    revision = None
    if "@" in name:  # a revision follows ORG/NAME only; an "@" further on is part of a file name
        name, _, after = rest.partition("@")
        ref = _SPECIAL_REF.match(after)
        split = ref.end() if ref else after.find("/") if "/" in after else len(after)
        revision, path = unquote(after[:split]), after[split + 1:]
        if not revision:
            raise HubError(f"{url}: empty revision after '@'; write hf://ORG/NAME@REVISION[/path/in/repo]")
    if not namespace or not name:
        raise HubError(f"{url}: expected hf://ORG/NAME[@REVISION][/path/in/repo] (an organisation or user, a repo "
                       "name, then optionally a revision and a path in the repo)")
    if path:
        repo_path(path, f"path in the repo ({url})")
    return HubPath(f"{namespace}/{name}", path, revision, repo_type)


def parse_repo(text: str) -> HubPath:
    """A repo given as ``hf://ORG/NAME[@REVISION][/path]`` or ``ORG/NAME[@REVISION]``."""
    if is_hub_url(text):
        return parse_hub_ref(text)
    repo_id, at, revision = text.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or (at and not revision):
        raise HubError(f"{text}: not a Hub repo; write ORG/NAME[@REVISION] or hf://ORG/NAME[@REVISION][/path]")
    return HubPath(repo_id, "", revision or None)


def parse_hub_url(url: str) -> HubPath:
    """Split an ``hf://`` URL of a file into repo, revision and path in the repo.

    >>> parse_hub_url("hf://org/model@v1.0/masks/rl.smask")
    HubPath(repo_id='org/model', path='masks/rl.smask', revision='v1.0', repo_type='model')
    >>> parse_hub_url("hf://org/model@refs/pr/1/masks/rl.smask").revision
    'refs/pr/1'
    """
    target = parse_hub_ref(url)
    if not target.path:
        raise HubError(f"{url}: expected hf://ORG/NAME[@REVISION]/path/in/repo.smask (an organisation or user, "
                       "a repo name and a file path)")
    return target


def hub_target(repo: str, path: str | None = None, revision: str | None = None,
               repo_type: str = "model") -> HubPath:
    """What ``repo`` (``ORG/NAME[@REVISION]`` or an ``hf://`` URL, perhaps with a path) and the separate ``path``
    and ``revision`` name together; a HubError when they name two different paths or revisions.

    >>> hub_target("hf://org/model@v1/masks/rl.smask")
    HubPath(repo_id='org/model', path='masks/rl.smask', revision='v1', repo_type='model')
    >>> hub_target("org/model", "masks/rl.smask", revision="v1") == hub_target("hf://org/model@v1/masks/rl.smask")
    True
    """
    target = parse_repo(repo)
    if path is not None and target.path and path != target.path:
        raise HubError(f"{repo}: names the path {target.path!r} and {path!r} is given too; give the path once")
    if revision is not None and target.revision is not None and revision != target.revision:
        raise HubError(f"{repo}: names the revision {target.revision!r} and {revision!r} is given too (--revision); "
                       "give the revision once")
    chosen = path if path is not None else target.path
    if chosen:
        repo_path(chosen)
    return HubPath(target.repo_id, chosen, revision or target.revision,
                   target.repo_type if target.repo_type != "model" else repo_type)
