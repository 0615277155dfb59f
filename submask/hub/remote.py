"""The one seam to huggingface_hub: a repo on an endpoint, pinned reads, ranged reads and typed errors.

huggingface_hub is optional (``pip install 'submask[hub]'``); it is imported on first use. The endpoint is,
in order: the ``endpoint`` argument, the one ``hub_settings`` set, ``HF_ENDPOINT`` read at call time,
huggingface_hub's default. The token is the ``token`` argument, the one ``hub_settings`` set, else
huggingface_hub's own lookup (``HF_TOKEN``, then the saved login).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import HubError
from .paths import check_revision

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_BRANCH = "main"
_SETTINGS: ContextVar[tuple[str | None, str | None]] = ContextVar("hub_settings", default=(None, None))


@contextlib.contextmanager
def hub_settings(token: str | None = None, endpoint: str | None = None) -> Iterator[None]:
    """Within the block, every Hub request made without its own ``token`` / ``endpoint`` uses these.

    The command line sets them from ``--token`` / ``--endpoint`` once, for every Hub input of a command.
    """
    reset = _SETTINGS.set((token, endpoint))
    try:
        yield
    finally:
        _SETTINGS.reset(reset)


def huggingface_hub() -> ModuleType:
    """The huggingface_hub module, or a HubError saying how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise HubError("Hub support needs huggingface_hub: pip install 'submask[hub]'") from None
    return huggingface_hub


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The Hub URL to talk to: ``endpoint``, else ``hub_settings``'s, else ``HF_ENDPOINT`` (read now), else
    huggingface_hub's default."""
    chosen = endpoint or _SETTINGS.get()[1] or os.environ.get("HF_ENDPOINT") or huggingface_hub().constants.ENDPOINT
    return chosen.rstrip("/")


@dataclass(frozen=True)
class Remote:
    """A repo on a Hub endpoint, with the token to use (None: huggingface_hub's default lookup)."""

    repo_id: str
    repo_type: str = "model"
    endpoint: str | None = None
    token: str | None = None
    cache_dir: str | None = None  # None: huggingface_hub's cache

    @cached_property
    def url(self) -> str:
        return resolve_endpoint(self.endpoint)

    @cached_property
    def api(self) -> HfApi:
        return huggingface_hub().HfApi(endpoint=self.url, token=self.auth)

    @cached_property
    def auth(self) -> str | None:
        """The token to send: ``token``, else ``hub_settings``'s, else None (huggingface_hub's own lookup)."""
        return self.token or _SETTINGS.get()[0]

    def commit(self, revision: str | None) -> str:
        """The commit sha a branch, tag or sha names now (HubError for a path-like revision such as ``..``)."""
        check_revision(revision, self.repo_id)
        with self.errors(revision=revision):
            sha = self.api.repo_info(self.repo_id, revision=revision, repo_type=self.repo_type).sha
        if sha is None:
            raise HubError(f"{self.repo_id}: the Hub at {self.url} named no commit for revision {revision!r}")
        return sha

    def existing(self, paths: Iterable[str], commit: str) -> set[str]:
        """Which of ``paths`` are files at ``commit``."""
        with self.errors(revision=commit):
            infos = self.api.get_paths_info(self.repo_id, list(paths), revision=commit, repo_type=self.repo_type)
        return {info.path for info in infos if isinstance(info, huggingface_hub().hf_api.RepoFile)}

    def files(self, commit: str) -> dict[str, int]:
        """Every file at ``commit`` with its size in bytes."""
        with self.errors(revision=commit):
            tree = self.api.list_repo_tree(self.repo_id, recursive=True, revision=commit, repo_type=self.repo_type)
            return {entry.path: entry.size for entry in tree if isinstance(entry, huggingface_hub().hf_api.RepoFile)}

    def download(self, path: str, commit: str) -> Path:
        """A file at ``commit``, through huggingface_hub's cache (no request when it is cached already)."""
        with self.errors(path=path, revision=commit):
            return Path(huggingface_hub().hf_hub_download(
                self.repo_id, path, revision=commit, repo_type=self.repo_type, endpoint=self.url, token=self.auth,
                cache_dir=self.cache_dir))

    def read_range(self, path: str, commit: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of a file at ``commit``, with one HTTP range request.

        A server may answer a range request with 206 and the range, or with 200 and the whole file (RFC 9110
        section 14.2): the body is streamed and read only up to ``stop``, then the connection is closed.
        """
        hub = huggingface_hub()
        url = hub.hf_hub_url(self.repo_id, path, revision=commit, repo_type=self.repo_type, endpoint=self.url)
        headers = hub.utils.build_hf_headers(token=self.auth, headers={"Range": f"bytes={start}-{stop - 1}"})
        with (self.errors(path=path, revision=commit),
              hub.utils.get_session().stream("GET", url, headers=headers) as response):
            hub.utils.hf_raise_for_status(response)
            skip = start if response.status_code == 200 else 0
            data = _read_slice(response.iter_bytes(), skip, stop - start)
        if response.status_code not in (200, 206) or len(data) != stop - start:
            raise HubError(f"{self.repo_id}: {url} answered a range request with HTTP {response.status_code} and "
                           f"{len(data)} of the {stop - start} bytes asked for; this endpoint cannot serve "
                           "headers alone")
        return data

    @contextlib.contextmanager
    def errors(self, path: str | None = None, revision: str | None = None) -> Iterator[None]:
        """Turn huggingface_hub and network errors into a HubError that says what is missing and what to do."""
        huggingface_hub()  # a HubError with the install hint when it is missing
        errors = importlib.import_module("huggingface_hub.errors")  # a submodule: not loaded by the package itself
        try:
            yield
        except errors.RepositoryNotFoundError:
            raise HubError(f"{self.repo_type} repo {self.repo_id!r} not found on {self.url}: check its name, or pass "
                           "a token (HF_TOKEN or --token) if it is private or gated",
                           repo_id=self.repo_id, revision=revision) from None
        except errors.RevisionNotFoundError:
            raise HubError(f"{self.repo_id}: no branch, tag or commit {revision!r}; check the revision "
                           f"(`hf repos tag list {self.repo_id}` lists its tags; HfApi.list_repo_refs its branches "
                           "too)", repo_id=self.repo_id, revision=revision) from None
        except errors.LocalEntryNotFoundError as exc:  # not cached, and the Hub could not be asked
            raise self._unreachable(exc) from None
        except errors.EntryNotFoundError:
            raise HubError(f"{self.repo_id}@{revision or DEFAULT_BRANCH}: no file {path!r}; "
                           f"`submask ls {self.repo_id}` lists the masks there",
                           repo_id=self.repo_id, revision=revision) from None
        except errors.SafetensorsParsingError as exc:
            raise HubError(f"{self.repo_id}@{revision or DEFAULT_BRANCH}: {path!r} is not a readable safetensors "
                           f"file ({_first_line(exc)})", repo_id=self.repo_id, revision=revision) from None
        except errors.HfHubHTTPError as exc:
            if exc.response is not None and exc.response.status_code == 412:
                raise HubError(f"{self.repo_id}: the branch moved on while this commit was prepared "
                               "(someone else pushed); run it again", repo_id=self.repo_id, revision=revision) from None
            raise HubError(f"{self.repo_id}: the Hub at {self.url} refused the request: {_first_line(exc)}",
                           repo_id=self.repo_id, revision=revision) from None
        except (errors.HTTPError, OSError) as exc:
            if _cut_short(exc):
                raise HubError(f"{self.repo_id}: the download of {path!r} from {self.url} was incomplete "
                               f"({_first_line(exc)}); run the command again (the download resumes where it "
                               "stopped); if it is cut short again, a proxy or the server is ending the transfer",
                               repo_id=self.repo_id, revision=revision) from None
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> HubError:
        return HubError(f"{self.repo_id}: cannot reach {self.url} ({_first_line(exc)}); check the network "
                        "connection, HF_ENDPOINT and proxy settings", repo_id=self.repo_id)


def _read_slice(chunks: Iterable[bytes], skip: int, size: int) -> bytes:
    """Bytes ``[skip, skip + size)`` of a stream of chunks, reading no further than that."""
    data = bytearray()
    for chunk in chunks:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        data += chunk[skip:skip + size - len(data)]
        skip = 0
        if len(data) == size:
            break
    return bytes(data)


def _cut_short(exc: BaseException) -> bool:
    """Whether ``exc`` says a response body ended before its Content-Length (httpx's RemoteProtocolError, the
    standard library's IncompleteRead, huggingface_hub's size check after a download)."""
    text = str(exc)
    return ("without sending complete message body" in text or "Consistency check failed" in text
            or type(exc).__name__ == "IncompleteRead")


def _first_line(exc: Any) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
