"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only).

It speaks enough of the Hub protocol for the real ``huggingface_hub`` client (2.x, plain HTTP,
``HF_HUB_DISABLE_XET=1``) to create repos, commit files and download them again.

Implemented, for model, dataset and space repos:

- ``GET /api/whoami-v2``, ``POST /api/repos/create`` (409 when it exists), ``DELETE /api/repos/delete``,
  ``POST /api/validate-yaml`` (accepts everything)
- ``GET /api/{type}s/{repo}[/revision/{rev}]``: repo info with ``sha`` and ``siblings`` (``?blobs=1``
  adds sizes and LFS info)
- ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``?recursive=1``), ``POST .../paths-info/{rev}``
- ``GET /api/{type}s/{repo}/refs``, ``GET .../commits/{rev}`` (first-parent history)
- ``POST|DELETE /api/{type}s/{repo}/branch/{name}``, ``POST .../tag/{rev}``, ``DELETE .../tag/{tag}``
- ``POST /api/{type}s/{repo}/preupload/{rev}``: LFS when the size is at least ``lfs_threshold``
  (10 MiB) or the path matches a ``filter=lfs`` pattern of the revision's ``.gitattributes``
- ``POST /api/{type}s/{repo}/commit/{rev}``: NDJSON ``header`` (``parentCommit`` must be the head,
  else 412), ``file`` (base64), ``lfsFile``, ``deletedFile``, ``deletedFolder``; ``?create_pr=1``
  makes ``refs/pr/N`` (from ``parentCommit`` when given)
- ``POST {repo}.git/info/lfs/objects/batch`` (upload) whose upload and verify actions point back
  here (``PUT /__lfs/{oid}``, ``POST /__lfs/{oid}/verify``)
- ``GET|HEAD {repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``Content-Length``,
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS files and ``Range`` (206, or 416)
- errors as ``{"error": ...}`` with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or
  ``EntryNotFound`` (404) so the client raises its typed errors; 401 for a bad token, 409 for
  existing repos/branches/tags.

Every answered request is recorded in ``HubServer.requests`` (method, path, ``Range`` header, body bytes
sent) so tests can check how much a client downloaded.

Revisions: branch and tag names, ``refs/heads/*``, ``refs/tags/*``, ``refs/pr/N`` and full 40-hex
commit shas. Each commit gets a new random 40-hex sha and is a full snapshot path -> blob. Writes need
``Authorization: Bearer <token>``; reads are anonymous (every repo is public). Tests can set
``store.commit_hook`` to a function ``(repo, ndjson_lines) -> None`` that raises ``HubError`` to make
commits fail, ``store.range_requests = False`` to answer ``Range`` requests with 200 and the whole file
(as RFC 9110 allows), and ``store.pull_requests = False`` to ignore ``create_pr`` and commit to the branch
(as a server without pull requests would).

Not implemented: Xet, multipart LFS, LFS downloads through the batch API, pagination, ``expand``
(last commits, security scans), private or gated repos, discussions, cross-repo copies, short shas,
squashing. Repo metadata lives in memory; file contents are stored by sha256 under ``root/objects``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 10 * 1024 * 1024
LFS_PATTERNS = ("*.bin", "*.ckpt", "*.h5", "*.npy", "*.npz", "*.onnx", "*.pt", "*.pth", "*.safetensors", "*.zip")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
SHA1_HEX = re.compile(r"[0-9a-f]{40}")
Response = tuple[int, dict[str, str], bytes | Iterator[bytes]]  # file bodies are streamed in chunks


@dataclass(frozen=True)
class Served:
    """One answered request: what was asked and how many body bytes went back."""

    method: str
    path: str
    range: str | None
    status: int
    nbytes: int


class HubError(Exception):
    """An error answer: HTTP status, message, optional ``X-Error-Code``, extra headers and JSON fields."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers: dict[str, str] = extra.pop("headers", {})
        self.extra = extra


def revision_not_found(rev: str) -> HubError:
    return HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


def git_oid(data: bytes) -> str:
    """The git blob sha1 of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


@dataclass(frozen=True)
class Blob:
    """A file at a commit: its content's sha256 (the object store key), size and storage kind."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str  # git sha1 of the content, or of the LFS pointer file

    @classmethod
    def regular(cls, sha256: str, data: bytes) -> Blob:
        return cls(sha256, len(data), False, git_oid(data))

    @classmethod
    def large(cls, sha256: str, size: int) -> Blob:
        return cls(sha256, size, True, git_oid(lfs_pointer(sha256, size)))

    def lfs_json(self) -> dict[str, Any]:
        return {"oid": self.sha256, "size": self.size, "pointerSize": len(lfs_pointer(self.sha256, self.size))}


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Commit:
    id: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    """Commits and refs (``refs/heads/*``, ``refs/tags/*``, ``refs/pr/N`` -> commit sha)."""

    type: str
    id: str
    created: str = field(default_factory=now)
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def ref_name(self, rev: str) -> str | None:
        """The full name of the existing ref ``rev`` names (branches win over tags), if any."""
        for name in (rev, f"refs/heads/{rev}", f"refs/tags/{rev}"):
            if name.startswith("refs/") and name in self.refs:
                return name
        return None

    def resolve(self, rev: str) -> Commit:
        name = self.ref_name(rev)
        if name is not None:
            return self.commits[self.refs[name]]
        if SHA1_HEX.fullmatch(rev) and rev in self.commits:
            return self.commits[rev]
        raise revision_not_found(rev)

    def writable_ref(self, rev: str) -> str:
        """The branch or pull request ref a commit on ``rev`` moves."""
        name = self.ref_name(rev)
        if name is None:
            self.resolve(rev)  # RevisionNotFound for unknown revisions
        if name is None or not name.startswith(("refs/heads/", "refs/pr/")):
            raise HubError(400, f"Cannot commit to {rev}: not a branch or pull request")
        return name

    def add_commit(self, parent: str | None, title: str, message: str, files: dict[str, Blob]) -> Commit:
        commit = Commit(secrets.token_hex(20), parent, title, message, now(), files)
        self.commits[commit.id] = commit
        return commit


class HubStore:
    """All repos (in memory) and file contents (on disk, by sha256); one lock for every change."""

    def __init__(self, root: Path, lfs_threshold: int = LFS_THRESHOLD):
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.lfs_threshold = lfs_threshold
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.commit_hook: Callable[[Repo, list[dict]], None] | None = None
        self.range_requests = True  # False: Range headers are ignored (200 with the whole body)
        self.pull_requests = True  # False: create_pr is ignored (the commit lands on the branch)

    def put_object(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.objects / sha256
        if not target.exists():
            tmp = target.with_name(f"{sha256}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return sha256

    def object_size(self, sha256: str) -> int | None:
        path = self.objects / sha256
        return path.stat().st_size if re.fullmatch(r"[0-9a-f]{64}", sha256) and path.exists() else None

    def read_object(self, sha256: str) -> bytes:
        return (self.objects / sha256).read_bytes()

    def stream_object(self, sha256: str, start: int, end: int, chunk: int = 1 << 16) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of an object in chunks, so a large file is never held in memory whole."""
        with open(self.objects / sha256, "rb") as handle:
            handle.seek(start)
            while start < end:
                data = handle.read(min(chunk, end - start))
                start += len(data)
                yield data

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound") from None

    def create_repo(self, repo_type: str, repo_id: str, url: str) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}", url=url)
            repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id)
            attributes = Blob.regular(self.put_object(GITATTRIBUTES), GITATTRIBUTES)
            first = repo.add_commit(None, "initial commit", "", {".gitattributes": attributes})
            repo.refs["refs/heads/main"] = first.id
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            self.repo(repo_type, repo_id)
            del self.repos[(repo_type, repo_id)]

    def is_lfs(self, commit: Commit, path: str, size: int) -> bool:
        """Large files, and files ``.gitattributes`` at ``commit`` tracks with LFS, go to LFS."""
        if size >= self.lfs_threshold:
            return True
        attributes = commit.files.get(".gitattributes")
        lines = self.read_object(attributes.sha256).decode().splitlines() if attributes else []
        for pattern, *attrs in (line.split() for line in lines if line.strip()):
            if "filter=lfs" in attrs and fnmatch.fnmatch(path if "/" in pattern else path.rsplit("/", 1)[-1], pattern):
                return True
        return False

    def commit(self, repo: Repo, rev: str, lines: list[dict], create_pr: bool) -> tuple[Commit, str]:
        """Apply NDJSON commit ``lines`` on top of ``rev``; returns the commit and the ref it is on."""
        with self.lock:
            if self.commit_hook is not None:
                self.commit_hook(repo, lines)
            header = next((line["value"] for line in lines if line["key"] == "header"), {})
            parent = header.get("parentCommit")
            if create_pr:
                base = repo.resolve(parent or rev)
                ref = f"refs/pr/{1 + sum(name.startswith('refs/pr/') for name in repo.refs)}"
            else:
                ref = repo.writable_ref(rev)
                base = repo.commits[repo.refs[ref]]
                if parent and parent != base.id:
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(base.files)
            for line in lines:
                self._apply(files, line["key"], line["value"])
            commit = repo.add_commit(base.id, header.get("summary", ""), header.get("description", ""), files)
            repo.refs[ref] = commit.id
            return commit, ref

    def _apply(self, files: dict[str, Blob], key: str, value: dict) -> None:
        path = value.get("path", "").strip("/")
        if key == "file":
            data = base64.b64decode(value["content"])
            files[path] = Blob.regular(self.put_object(data), data)
        elif key == "lfsFile":
            size = self.object_size(value["oid"])
            if size is None:
                raise HubError(422, f"LFS object {value['oid']} for {path} was never uploaded")
            files[path] = Blob.large(value["oid"], size)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            inside = [p for p in files if p.startswith(f"{path}/")]
            if not inside:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in inside:
                del files[p]
        elif key != "header":
            raise HubError(400, f"Unknown commit operation: {key}")


# JSON views of a commit's files --------------------------------------------------------------


def file_json(path: str, blob: Blob) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
    if blob.lfs:
        entry["lfs"] = blob.lfs_json()
    return entry


def folder_json(commit: Commit, path: str) -> dict[str, Any]:
    return {"type": "directory", "oid": hashlib.sha1(f"{commit.id}:{path}".encode()).hexdigest(), "path": path}


def tree_json(commit: Commit, path: str, recursive: bool) -> list[dict[str, Any]]:
    """Folders then files under folder ``path`` ("" for the root); 404 for a missing folder."""
    prefix = f"{path}/" if path else ""
    below = {p: blob for p, blob in commit.files.items() if p.startswith(prefix)}
    if not below:
        raise HubError(404, f"Folder not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit.id})
    folders: set[str] = set()
    files = []
    for p, blob in below.items():
        parts = p[len(prefix) :].split("/")
        folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts) - 1 if recursive else 0))
        if not recursive and len(parts) > 1:
            folders.add(prefix + parts[0])
        elif recursive or len(parts) == 1:
            files.append(file_json(p, blob))
    return [folder_json(commit, f) for f in sorted(folders)] + sorted(files, key=lambda entry: entry["path"])


def sibling_json(path: str, blob: Blob, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    sibling: dict[str, Any] = {"rfilename": path, "size": blob.size, "blobId": blob.git_oid}
    if blob.lfs:
        sibling["lfs"] = {"size": blob.size, "sha256": blob.sha256, "pointerSize": blob.lfs_json()["pointerSize"]}
    return sibling


def repo_info_json(repo: Repo, commit: Commit, blobs: bool) -> dict[str, Any]:
    return {
        "id": repo.id,
        "author": repo.id.split("/")[0],
        "sha": commit.id,
        "private": False,
        "disabled": False,
        "gated": False,
        "createdAt": repo.created,
        "lastModified": commit.date,
        "tags": [],
        "downloads": 0,
        "likes": 0,
        "siblings": [sibling_json(path, blob, blobs) for path, blob in sorted(commit.files.items())],
    }


def json_response(data: Any, status: int = 200) -> Response:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


# HTTP ----------------------------------------------------------------------------------------

API = r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
WEB = r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+?)"
ROUTES = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", API + r"(?:/revision/(?P<rev>.+))?", "repo_info"),
        ("GET", API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", API + r"/refs", "refs"),
        ("GET", API + r"/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", API + r"/branch/(?P<name>[^/]+)", "create_branch"),
        ("DELETE", API + r"/branch/(?P<name>[^/]+)", "delete_branch"),
        ("POST", API + r"/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", API + r"/tag/(?P<name>[^/]+)", "delete_tag"),
        ("POST", WEB + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/__lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        ("POST", r"/__lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
        ("GET", WEB + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", WEB + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]


class HubHandler(BaseHTTPRequestHandler):
    """Reads the whole request, routes it to an ``on_<name>`` method, answers with a Content-Length."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.body = self._read_body()
        try:
            status, headers, body = self._route(url.path)
        except HubError as e:
            status, headers, body = json_response({"error": e.message, **e.extra}, e.status)
            headers.update(e.headers, **{"X-Error-Message": e.message})
            if e.code:
                headers["X-Error-Code"] = e.code
        except (ValueError, KeyError, TypeError) as e:
            status, headers, body = json_response({"error": f"Bad request: {e!r}"}, 400)
        except Exception as e:  # a server bug: answer it (the client sees a 500) rather than drop the connection
            status, headers, body = json_response({"error": f"Internal error: {e!r}"}, 500)
        chunks = [body] if isinstance(body, bytes) else body
        if "Content-Length" not in headers:  # a streamed body comes with its length
            headers["Content-Length"] = str(len(body))
        sent = 0 if self.command == "HEAD" else int(headers["Content-Length"])
        # recorded before answering, so a client that got its answer always finds it in the log
        self.server.served.append(Served(self.command, url.path, self.headers.get("Range"), status, sent))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            try:
                for chunk in chunks:
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client read what it needed (a slice of a 200 answer) and left

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _route(self, path: str) -> Response:
        for method, pattern, name in ROUTES:
            if method == self.command and (m := pattern.fullmatch(path)):
                groups = m.groupdict()
                self.repo_type = {"datasets": "dataset", "spaces": "space"}.get(groups.pop("type", None), "model")
                return getattr(self, f"on_{name}")(**{k: unquote(v) for k, v in groups.items() if v is not None})
        raise HubError(404, f"No route for {self.command} {path}")

    # helpers
    @property
    def store(self) -> HubStore:
        return self.server.store

    @property
    def endpoint(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def json_body(self) -> Any:
        return json.loads(self.body or b"{}")

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")

    def require_auth(self) -> None:
        auth = self.headers.get("Authorization")
        if auth is None:
            raise HubError(401, "Authorization header is missing")
        if auth != f"Bearer {self.server.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def repo(self, repo_id: str) -> Repo:
        return self.store.repo(self.repo_type, repo_id)

    def web_url(self, repo_id: str) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    # account and repos
    def on_whoami(self) -> Response:
        self.require_auth()
        return json_response({"type": "user", "name": self.server.user, "fullname": "Test User", "orgs": []})

    def _body_repo_id(self) -> str:
        body = self.json_body()
        self.repo_type = body.get("type") or "model"
        return f"{body.get('organization') or self.server.user}/{body['name']}"

    def on_create_repo(self) -> Response:
        self.require_auth()
        repo_id = self._body_repo_id()
        self.store.create_repo(self.repo_type, repo_id, self.web_url(repo_id))
        return json_response({"url": self.web_url(repo_id), "name": repo_id, "id": repo_id})

    def on_delete_repo(self) -> Response:
        self.require_auth()
        self.store.delete_repo(self.repo_type, self._body_repo_id())
        return json_response({})

    def on_validate_yaml(self) -> Response:
        return json_response({"errors": [], "warnings": []})

    # reads
    def on_repo_info(self, repo: str, rev: str = "main") -> Response:
        r = self.repo(repo)
        return json_response(repo_info_json(r, r.resolve(rev), self.flag("blobs")))

    def on_tree(self, repo: str, rev: str, path: str = "") -> Response:
        return json_response(tree_json(self.repo(repo).resolve(rev), path.strip("/"), self.flag("recursive")))

    def on_paths_info(self, repo: str, rev: str) -> Response:
        commit = self.repo(repo).resolve(rev)
        entries = []
        for path in (p.strip("/") for p in parse_qs(self.body.decode()).get("paths", [])):
            if path in commit.files:
                entries.append(file_json(path, commit.files[path]))
            elif any(p.startswith(f"{path}/") for p in commit.files):
                entries.append(folder_json(commit, path))
        return json_response(entries)

    def on_refs(self, repo: str) -> Response:
        refs = sorted(self.repo(repo).refs.items())
        kinds = {"branches": "refs/heads/", "tags": "refs/tags/", "pullRequests": "refs/pr/"}
        data = {
            kind: [{"name": n.removeprefix(prefix), "ref": n, "targetCommit": sha}
                   for n, sha in refs if n.startswith(prefix)]
            for kind, prefix in kinds.items()
        }
        return json_response({**data, "converts": []})

    def on_commits(self, repo: str, rev: str) -> Response:
        r = self.repo(repo)
        history, commit = [], r.resolve(rev)
        while True:
            author = [{"user": self.server.user}]
            history.append({"id": commit.id, "title": commit.title, "message": commit.message, "date": commit.date})
            history[-1]["authors"] = author
            if commit.parent is None:
                return json_response(history)
            commit = r.commits[commit.parent]

    def on_resolve(self, repo: str, rev: str, path: str) -> Response:
        commit = self.repo(repo).resolve(rev)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit.id})
        headers = {"X-Repo-Commit": commit.id, "ETag": f'"{blob.git_oid}"', "Accept-Ranges": "bytes"}
        headers["Content-Type"] = "application/octet-stream"
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
        ranged = "Range" in self.headers and self.store.range_requests
        start, end = self._byte_range(blob.size) if ranged else (0, blob.size)
        headers["Content-Length"] = str(end - start)
        status = 206 if ranged else 200
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        body = b"" if self.command == "HEAD" else self.store.stream_object(blob.sha256, start, end)
        return status, headers, body

    def _byte_range(self, size: int) -> tuple[int, int]:
        """``[start, end)`` of the ``Range`` header (the whole file without one); 416 if unsatisfiable."""
        header = self.headers.get("Range")
        if header is None:
            return 0, size
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
        first, last = m.groups() if m else ("", "")
        if first:
            start, end = int(first), min(int(last) + 1 if last else size, size)
        else:
            start, end = (max(size - int(last), 0), size) if last else (size, size)
        if start >= min(end, size):
            raise HubError(416, f"Range not satisfiable: {header}", headers={"Content-Range": f"bytes */{size}"})
        return start, end

    # writes
    def on_preupload(self, repo: str, rev: str) -> Response:
        commit = self.repo(repo).resolve(rev)
        files = []
        for entry in self.json_body()["files"]:
            path = entry["path"].strip("/")
            old = commit.files.get(path)
            mode = "lfs" if self.store.is_lfs(commit, path, entry["size"]) else "regular"
            oid = None if old is None else old.sha256 if old.lfs else old.git_oid
            files.append({"path": entry["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return json_response({"files": files, "commitOid": commit.id})

    def on_commit(self, repo: str, rev: str) -> Response:
        self.require_auth()
        r = self.repo(repo)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        commit, ref = self.store.commit(r, rev, lines, self.flag("create_pr") and self.store.pull_requests)
        data = {"success": True, "commitOid": commit.id, "commitUrl": f"{self.web_url(r.id)}/commit/{commit.id}"}
        if ref.startswith("refs/pr/"):
            data["pullRequestUrl"] = f"{self.web_url(r.id)}/discussions/{ref.removeprefix('refs/pr/')}"
        return json_response(data)

    def _add_ref(self, repo: str, ref: str, rev: str) -> Response:
        self.require_auth()
        r = self.repo(repo)
        with self.store.lock:
            target = r.resolve(rev)
            if ref in r.refs:
                raise HubError(409, f"Reference already exists: {ref}")
            r.refs[ref] = target.id
        return json_response({})

    def _delete_ref(self, repo: str, ref: str) -> Response:
        self.require_auth()
        r = self.repo(repo)
        with self.store.lock:
            if r.refs.pop(ref, None) is None:
                raise revision_not_found(ref)
        return json_response({})

    def on_create_branch(self, repo: str, name: str) -> Response:
        return self._add_ref(repo, f"refs/heads/{name}", self.json_body().get("startingPoint") or "main")

    def on_delete_branch(self, repo: str, name: str) -> Response:
        return self._delete_ref(repo, f"refs/heads/{name}")

    def on_create_tag(self, repo: str, rev: str) -> Response:
        return self._add_ref(repo, f"refs/tags/{self.json_body()['tag']}", rev)

    def on_delete_tag(self, repo: str, name: str) -> Response:
        return self._delete_ref(repo, f"refs/tags/{name}")

    # LFS
    def on_lfs_batch(self, repo: str) -> Response:
        self.require_auth()
        self.repo(repo)
        body = self.json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported")
        objects = []
        for obj in body["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if self.store.object_size(obj["oid"]) != obj["size"]:  # else: already there, nothing to do
                href = f"{self.endpoint}/__lfs/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
            objects.append(entry)
        return json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def on_lfs_put(self, oid: str) -> Response:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid}")
        self.store.put_object(self.body)
        return 200, {"ETag": f'"{oid}"'}, b""

    def on_lfs_verify(self, oid: str) -> Response:
        self.require_auth()
        size = self.json_body()["size"]
        if self.store.object_size(oid) != size:
            raise HubError(404, f"LFS object {oid} of size {size} not found")
        return json_response({"success": True})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: HubStore
    token: str
    user: str
    served: list[Served]


class HubServer:
    """The server on ``127.0.0.1`` (a free port) in a background thread; a context manager."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        token: str = "hf_test_token",
        user: str = "test-user",
        lfs_threshold: int = LFS_THRESHOLD,
    ):
        self._tmp = tempfile.TemporaryDirectory(prefix="hub-server-") if root is None else None
        self.root = Path(self._tmp.name if self._tmp else root)  # type: ignore[arg-type]
        self.token, self.user = token, user
        self.store = HubStore(self.root, lfs_threshold)
        self._httpd = _Server(("127.0.0.1", 0), HubHandler)
        self._httpd.store, self._httpd.token, self._httpd.user = self.store, token, user
        self._httpd.served = []
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[Served]:
        """Requests answered so far, oldest first (``requests.clear()`` starts a new count)."""
        return self._httpd.served

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
