"""The test Hub server against the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from hub_server import LFS_THRESHOLD, HubServer  # noqa: E402
from huggingface_hub import (  # noqa: E402
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    hf_hub_url,
)
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import get_hf_file_metadata  # noqa: E402
from huggingface_hub.utils import get_session  # noqa: E402

BIG = LFS_THRESHOLD + 123  # just over the size from which the server asks for LFS


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _download(server: HubServer, repo: str, path: str, cache: Path, revision: str | None = None) -> bytes:
    local = hf_hub_download(repo, path, revision=revision, cache_dir=cache, endpoint=server.endpoint)
    return Path(local).read_bytes()


def _upload(api: HfApi, repo: str, path: str, data: bytes, **kwargs):
    return api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo, **kwargs)


def test_whoami_and_repo_lifecycle(hub_api: HfApi, hub_server: HubServer) -> None:
    assert hub_api.whoami()["name"] == hub_server.user
    url = hub_api.create_repo("org/lifecycle")
    assert (url.repo_id, url.repo_type) == ("org/lifecycle", "model")
    info = hub_api.model_info("org/lifecycle")
    assert len(info.sha) == 40 and int(info.sha, 16) >= 0
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]
    with pytest.raises(HfHubHTTPError) as exc:
        hub_api.create_repo("org/lifecycle")
    assert exc.value.response.status_code == 409
    assert hub_api.create_repo("org/lifecycle", exist_ok=True).repo_id == "org/lifecycle"
    assert hub_api.create_repo("solo").repo_id == f"{hub_server.user}/solo"  # default namespace
    hub_api.delete_repo("org/lifecycle")
    assert not hub_api.repo_exists("org/lifecycle")
    with pytest.raises(RepositoryNotFoundError):
        hub_api.delete_repo("org/lifecycle")


def test_small_file_round_trip(hub_api: HfApi, hub_server: HubServer, hub_repo: str, tmp_path: Path) -> None:
    data = b"hello hub\n"
    info = _upload(hub_api, hub_repo, "docs/hello.txt", data, commit_message="Add hello")
    assert info.oid == hub_api.model_info(hub_repo).sha
    [entry] = [f for f in hub_api.list_repo_tree(hub_repo, "docs")]
    assert (entry.path, entry.size, entry.blob_id, entry.lfs) == ("docs/hello.txt", len(data), _git_oid(data), None)
    assert _download(hub_server, hub_repo, "docs/hello.txt", tmp_path) == data
    meta = get_hf_file_metadata(hf_hub_url(hub_repo, "docs/hello.txt", endpoint=hub_server.endpoint))
    assert (meta.commit_hash, meta.etag, meta.size) == (info.oid, _git_oid(data), len(data))


def test_lfs_file_round_trip(hub_api: HfApi, hub_server: HubServer, hub_repo: str, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    sha256 = hashlib.sha256(data).hexdigest()
    _upload(hub_api, hub_repo, "weights/big.dat", data)
    [entry] = hub_api.get_paths_info(hub_repo, ["weights/big.dat"])
    assert (entry.lfs.sha256, entry.lfs.size, entry.size) == (sha256, BIG, BIG)
    meta = get_hf_file_metadata(hf_hub_url(hub_repo, "weights/big.dat", endpoint=hub_server.endpoint))
    assert (meta.etag, meta.size) == (sha256, BIG)  # X-Linked-Etag / X-Linked-Size win
    assert _download(hub_server, hub_repo, "weights/big.dat", tmp_path) == data
    # Re-uploading the same content is a no-op: no new commit
    head = hub_api.model_info(hub_repo).sha
    assert _upload(hub_api, hub_repo, "weights/big.dat", data).oid == head


def test_gitattributes_patterns_select_lfs(hub_api: HfApi, hub_repo: str) -> None:
    _upload(hub_api, hub_repo, "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    _upload(hub_api, hub_repo, "notes.md", b"# notes")
    files = {f.path: f for f in hub_api.list_repo_tree(hub_repo)}
    assert files["model.safetensors"].lfs is not None
    assert files["notes.md"].lfs is None


def test_pull_at_tag_branch_and_commit(hub_api: HfApi, hub_server: HubServer, hub_repo: str, tmp_path: Path) -> None:
    first = _upload(hub_api, hub_repo, "f.txt", b"v1").oid
    hub_api.create_tag(hub_repo, tag="v1.0")
    hub_api.create_branch(hub_repo, branch="stable")
    _upload(hub_api, hub_repo, "f.txt", b"v2")
    on_dev = _upload(hub_api, hub_repo, "f.txt", b"dev", revision="stable").oid
    assert hub_api.list_repo_refs(hub_repo).tags[0].target_commit == first
    for revision, expected in [("v1.0", b"v1"), (first, b"v1"), ("stable", b"dev"), (on_dev, b"dev"), ("main", b"v2")]:
        assert _download(hub_server, hub_repo, "f.txt", tmp_path, revision) == expected, revision
    assert hub_api.model_info(hub_repo, revision="stable").sha == on_dev
    assert hub_api.list_repo_files(hub_repo, revision="refs/tags/v1.0") == [".gitattributes", "f.txt"]


def test_create_pr_makes_pr_ref(hub_api: HfApi, hub_server: HubServer, hub_repo: str, tmp_path: Path) -> None:
    main = hub_api.model_info(hub_repo).sha
    info = _upload(hub_api, hub_repo, "proposal.txt", b"please merge", create_pr=True)
    assert (info.pr_num, info.pr_revision) == (1, "refs/pr/1")
    assert hub_api.model_info(hub_repo).sha == main  # main untouched
    assert _download(hub_server, hub_repo, "proposal.txt", tmp_path, "refs/pr/1") == b"please merge"
    refs = hub_api.list_repo_refs(hub_repo, include_pull_requests=True)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests] == [("refs/pr/1", info.oid)]
    assert _upload(hub_api, hub_repo, "second.txt", b"2", create_pr=True).pr_num == 2


def test_parent_commit_must_match_head(hub_api: HfApi, hub_repo: str) -> None:
    stale = hub_api.model_info(hub_repo).sha
    _upload(hub_api, hub_repo, "a.txt", b"a", parent_commit=stale)
    with pytest.raises(HfHubHTTPError) as exc:
        _upload(hub_api, hub_repo, "b.txt", b"b", parent_commit=stale)
    assert exc.value.response.status_code == 412
    assert hub_api.list_repo_files(hub_repo) == [".gitattributes", "a.txt"]


def test_deletions_and_tree_listing(hub_api: HfApi, hub_repo: str) -> None:
    adds = [CommitOperationAdd(p, p.encode()) for p in ("a/x.txt", "a/b/y.txt", "a/b/z.txt", "top.txt")]
    hub_api.create_commit(hub_repo, adds, commit_message="files")
    assert [e.path for e in hub_api.list_repo_tree(hub_repo, "a")] == ["a/b", "a/x.txt"]
    recursive = [e.path for e in hub_api.list_repo_tree(hub_repo, recursive=True)]
    assert recursive == ["a", "a/b", ".gitattributes", "a/b/y.txt", "a/b/z.txt", "a/x.txt", "top.txt"]
    deletes = [CommitOperationDelete("a/b/"), CommitOperationDelete("top.txt")]
    hub_api.create_commit(hub_repo, deletes, commit_message="delete")
    assert hub_api.list_repo_files(hub_repo) == [".gitattributes", "a/x.txt"]
    with pytest.raises(EntryNotFoundError):
        hub_api.create_commit(hub_repo, [CommitOperationDelete("missing.txt")], commit_message="nope")
    with pytest.raises(RemoteEntryNotFoundError):
        list(hub_api.list_repo_tree(hub_repo, "no/such/folder"))


def test_commit_history(hub_api: HfApi, hub_repo: str) -> None:
    _upload(hub_api, hub_repo, "a.txt", b"a", commit_message="first", commit_description="details")
    _upload(hub_api, hub_repo, "b.txt", b"b", commit_message="second")
    commits = hub_api.list_repo_commits(hub_repo)
    assert [c.title for c in commits] == ["second", "first", "initial commit"]
    assert commits[1].message == "details"
    assert commits[0].commit_id == hub_api.model_info(hub_repo).sha


def test_range_requests(hub_api: HfApi, hub_server: HubServer, hub_repo: str) -> None:
    data = bytes(range(256))
    _upload(hub_api, hub_repo, "r.bin", data)
    url = hf_hub_url(hub_repo, "r.bin", endpoint=hub_server.endpoint)
    for header, expected, content_range in [
        ("bytes=0-7", data[:8], "bytes 0-7/256"),
        ("bytes=250-", data[250:], "bytes 250-255/256"),
        ("bytes=-4", data[-4:], "bytes 252-255/256"),
        ("bytes=200-999", data[200:], "bytes 200-255/256"),
    ]:
        response = get_session().get(url, headers={"Range": header})
        assert (response.status_code, response.content) == (206, expected), header
        assert response.headers["Content-Range"] == content_range
    response = get_session().get(url, headers={"Range": "bytes=300-"})
    assert (response.status_code, response.headers["Content-Range"]) == (416, "bytes */256")


def test_typed_errors(hub_api: HfApi, hub_server: HubServer, hub_repo: str, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        hub_api.model_info("org/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        _download(hub_server, "org/does-not-exist", "x.txt", tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hub_api.model_info(hub_repo, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        _download(hub_server, hub_repo, ".gitattributes", tmp_path, "0" * 40)
    with pytest.raises(RemoteEntryNotFoundError):
        _download(hub_server, hub_repo, "missing.smask", tmp_path)
    with pytest.raises(RevisionNotFoundError):
        _upload(hub_api, hub_repo, "a.txt", b"a", revision="no-such-branch")
    assert not hub_api.file_exists(hub_repo, "missing.smask")
    assert not hub_api.revision_exists(hub_repo, "v9")


def test_writes_need_the_token(hub_server: HubServer, hub_repo: str) -> None:
    intruder = HfApi(endpoint=hub_server.endpoint, token="hf_wrong")
    with pytest.raises(HfHubHTTPError) as exc:
        _upload(intruder, hub_repo, "a.txt", b"a")
    assert exc.value.response.status_code == 401
    assert HfApi(endpoint=hub_server.endpoint, token=False).list_repo_files(hub_repo) == [".gitattributes"]


def test_commit_rejects_lfs_pointer_without_upload(hub_server: HubServer, hub_repo: str) -> None:
    lines = [
        {"key": "header", "value": {"summary": "sneaky"}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "ab" * 32, "size": 3}},
    ]
    response = get_session().post(
        f"{hub_server.endpoint}/api/models/{hub_repo}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Authorization": f"Bearer {hub_server.token}", "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 422


def test_request_log_counts_body_bytes(hub_api: HfApi, hub_server: HubServer, hub_repo: str) -> None:
    _upload(hub_api, hub_repo, "r.bin", bytes(100))
    url = hf_hub_url(hub_repo, "r.bin", endpoint=hub_server.endpoint)
    hub_server.requests.clear()
    get_session().get(url, headers={"Range": "bytes=0-9"})
    get_session().head(url)
    served = [(r.method, r.path, r.range, r.status, r.nbytes) for r in hub_server.requests]
    path = f"/{hub_repo}/resolve/main/r.bin"
    assert served == [("GET", path, "bytes=0-9", 206, 10), ("HEAD", path, None, 200, 0)]
