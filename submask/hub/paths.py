"""``hf://`` mask paths: ``hf://[datasets/|spaces/]ORG/NAME[@REVISION]/path/in/repo.smask``.

A revision containing "/" (``refs/pr/1``) is written percent-encoded: ``hf://org/model@refs%2Fpr%2F1/m.smask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from ..errors import HubError

SCHEME = "hf://"
_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space", "models": "model"}


@dataclass(frozen=True)
class HubPath:
    """A file in a Hub repo at an optional revision (None: the default branch)."""

    repo_id: str
    path: str
    revision: str | None = None
    repo_type: str = "model"

    @property
    def url(self) -> str:
        """This path as an ``hf://`` URL."""
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        at = "" if self.revision is None else "@" + quote(self.revision, safe="")
        return f"{SCHEME}{prefix}{self.repo_id}{at}/{self.path}"


def is_hub_url(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_hub_url(url: str) -> HubPath:
    """Split an ``hf://`` URL into repo, revision and path in the repo.

    >>> parse_hub_url("hf://org/model@v1.0/masks/rl.smask")
    HubPath(repo_id='org/model', path='masks/rl.smask', revision='v1.0', repo_type='model')
    """
    if not is_hub_url(url):
        raise HubError(f"{url}: not an hf:// URL; write hf://ORG/NAME[@REVISION]/path/in/repo.smask")
    parts = url[len(SCHEME):].split("/")
    repo_type = _TYPE_PREFIXES.get(parts[0], "model")
    if parts[0] in _TYPE_PREFIXES:
        parts = parts[1:]
    if len(parts) < 3 or not all(parts):
        raise HubError(f"{url}: expected hf://ORG/NAME[@REVISION]/path/in/repo.smask (an organisation or user, "
                       "a repo name and a file path)")
    name, at, revision = parts[1].partition("@")
    if not name or (at and not revision):
        raise HubError(f"{url}: empty repo name or revision; write hf://ORG/NAME@REVISION/path")
    return HubPath(f"{parts[0]}/{name}", "/".join(parts[2:]), unquote(revision) if revision else None, repo_type)
