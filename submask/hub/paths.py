"""``hf://`` mask paths: ``hf://[datasets/|spaces/]ORG/NAME[@REVISION]/path/in/repo.smask``, and revisions.

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
_PATH_LIKE = re.compile(r"(?:^|/)\.\.?(?:/|$)|\.\.|//|^/|/$|[\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class HubPath:
    """A file in a Hub repo at an optional revision (None: the default branch)."""

    repo_id: str
    path: str
    revision: str | None = None
    repo_type: str = "model"

    @property
    def url(self) -> str:
        """This path as an ``hf://`` URL (special refs verbatim, other revisions percent-encoded)."""
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        if self.revision is None:
            at = ""
        elif _SPECIAL_REF.fullmatch(self.revision):
            at = "@" + self.revision
        else:
            at = "@" + quote(self.revision, safe="")
        return f"{SCHEME}{prefix}{self.repo_id}{at}/{self.path}"


def is_hub_url(text: str) -> bool:
    return text.startswith(SCHEME)


def check_revision(revision: str | None, repo_id: str) -> None:
    """Refuse a revision that is a path rather than a ref name: ``..`` would resolve to the default branch."""
    if revision is not None and (not revision or _PATH_LIKE.search(revision)):
        raise HubError(f"{repo_id}: {revision!r} is not a branch, tag or commit name (empty, '.'/'..' parts, "
                       "'//', spaces or control characters); name the revision exactly")


def parse_hub_url(url: str) -> HubPath:
    """Split an ``hf://`` URL into repo, revision and path in the repo.

    >>> parse_hub_url("hf://org/model@v1.0/masks/rl.smask")
    HubPath(repo_id='org/model', path='masks/rl.smask', revision='v1.0', repo_type='model')
    >>> parse_hub_url("hf://org/model@refs/pr/1/masks/rl.smask").revision
    'refs/pr/1'
    """
    if not is_hub_url(url):
        raise HubError(f"{url}: not an hf:// URL; write hf://ORG/NAME[@REVISION]/path/in/repo.smask")
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
            raise HubError(f"{url}: empty revision after '@'; write hf://ORG/NAME@REVISION/path/in/repo.smask")
    if not namespace or not name or not path or "" in path.split("/"):
        raise HubError(f"{url}: expected hf://ORG/NAME[@REVISION]/path/in/repo.smask (an organisation or user, "
                       "a repo name and a file path)")
    return HubPath(f"{namespace}/{name}", path, revision, repo_type)
