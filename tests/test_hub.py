"""submask.hub against the real huggingface_hub client and the loopback Hub server (tests/hub_server.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

from hub_server import HubError as ServerError  # noqa: E402
from hub_server import HubServer  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402
from masks import random_mask  # noqa: E402

import submask  # noqa: E402
from submask import HubError, Mask, MismatchError, TensorMask, model_fingerprint  # noqa: E402
from submask.hub import HubPath, list_masks, parse_hub_url, pull_mask, push_mask  # noqa: E402
from submask.hub.card import END, START, replace_section  # noqa: E402

SHAPES = {"encoder.w": (64, 48), "encoder.b": (48,), "head.w": (10, 48)}


def make_mask(seed: int, density: float = 0.1, shapes: dict[str, tuple[int, ...]] = SHAPES) -> Mask:
    return random_mask(shapes, density, seed, provenance={"base": {"source": "org/base-model"}},
                       model={"fingerprint": model_fingerprint(shapes)})


def save(mask: Mask, path: Path, **kwargs: object) -> Path:
    submask.save(mask, path, **kwargs)
    return path


@pytest.fixture
def hub(hub_server: HubServer, hub_api: HfApi) -> dict[str, object]:
    """Keyword arguments that point the submask.hub functions at the test server."""
    return {"endpoint": hub_server.endpoint, "token": hub_server.token}


def test_push_then_pull_is_byte_identical(hub: dict, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(0), tmp_path / "rl.smask")
    original = local.read_bytes()
    pushed = push_mask(local, hub_repo, commit_message="Add the RL mask", **hub)
    assert (pushed.path, pushed.revision, pushed.files) == ("masks/rl.smask", "main", ("masks/rl.smask",))
    assert pushed.commit == hub_api.model_info(hub_repo).sha
    assert hub_api.list_repo_commits(hub_repo)[0].title == "Add the RL mask"
    pulled = pull_mask(hub_repo, "masks/rl.smask", **hub)
    assert pulled.local_path.read_bytes() == original
    assert pulled.source == {"repo": hub_repo, "repo_type": "model", "path": "masks/rl.smask", "commit": pushed.commit}
    copy = pull_mask(hub_repo, "masks/rl.smask", local_path=tmp_path / "out" / "copy.smask", **hub)
    assert copy.local_path == tmp_path / "out" / "copy.smask" and copy.local_path.read_bytes() == original
    assert local.read_bytes() == original


def test_pull_at_tag_branch_and_commit(hub: dict, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    v1, v2, dev = (save(make_mask(seed), tmp_path / f"{seed}" / "m.smask") for seed in (1, 2, 3))
    first = push_mask(v1, hub_repo, "m.smask", **hub).commit
    hub_api.create_tag(hub_repo, tag="v1.0")
    hub_api.create_branch(hub_repo, branch="dev")
    second = push_mask(v2, hub_repo, "m.smask", overwrite=True, **hub).commit
    on_dev = push_mask(dev, hub_repo, "m.smask", revision="dev", overwrite=True, **hub)
    assert on_dev.revision == "dev"
    for revision, expected, commit in [("v1.0", v1, first), (first, v1, first), ("dev", dev, on_dev.commit),
                                       (on_dev.commit, dev, on_dev.commit), (None, v2, second), ("main", v2, second)]:
        pulled = pull_mask(hub_repo, "m.smask", revision=revision, **hub)
        assert (pulled.local_path.read_bytes(), pulled.commit) == (expected.read_bytes(), commit), revision
        assert pulled.revision == (revision or "main")


def test_overwrite_is_refused_unless_asked(hub: dict, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    old, new = save(make_mask(1), tmp_path / "old.smask"), save(make_mask(2), tmp_path / "new.smask")
    push_mask(old, hub_repo, "masks/m.smask", **hub)
    head = hub_api.model_info(hub_repo).sha
    with pytest.raises(HubError, match=r"already exists at 'masks/m.smask'.*--overwrite"):
        push_mask(new, hub_repo, "masks/m.smask", **hub)
    assert hub_api.model_info(hub_repo).sha == head
    pushed = push_mask(new, hub_repo, "masks/m.smask", overwrite=True, **hub)
    assert pushed.commit != head and hub_api.list_repo_commits(hub_repo)[0].title == "Update mask masks/m.smask"
    assert pull_mask(hub_repo, "masks/m.smask", **hub).local_path.read_bytes() == new.read_bytes()


def test_model_card_section_keeps_the_rest_byte_for_byte(hub: dict, hub_api: HfApi, hub_repo: str,
                                                         tmp_path: Path) -> None:
    head = b"---\r\nlicense: apache-2.0\r\nbase_model: org/base-model\r\ntags:\r\n- rl\r\n---\r\n\r\n# My model\r\n\r\n"
    tail = b"\r\n\r\n## Citation\r\n\r\nPlease cite us.  \r\n\xe2\x9c\x93 done"  # CRLF, no final newline, UTF-8
    hub_api.upload_file(path_or_fileobj=head + tail, path_in_repo="README.md", repo_id=hub_repo)
    push_mask(save(make_mask(1, 0.25), tmp_path / "a.smask"), hub_repo, **hub)
    card = pull_readme(hub_api, hub_repo, tmp_path)
    head = head.replace(b"- rl\r\n", b"- rl\r\n- submask\r\n")  # the tag joins the front matter, nothing else moves
    assert card.startswith(head + tail + b"\n\n" + START.encode()) and card.endswith(END.encode() + b"\n")
    # move the section into the middle by hand; the next push must keep both sides intact
    section = card[len(head + tail) + 2:]
    hub_api.upload_file(path_or_fileobj=head + section + tail, path_in_repo="README.md", repo_id=hub_repo)
    push_mask(save(make_mask(2, 0.5), tmp_path / "b.smask"), hub_repo, "masks/b.smask", **hub)
    card = pull_readme(hub_api, hub_repo, tmp_path)
    assert card.startswith(head + START.encode()) and card.endswith(END.encode() + b"\n" + tail)
    rows = [line for line in card.decode().splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `masks/a.smask` | update | `org/base-model` |")
    assert rows[1].startswith("| `masks/b.smask` | update | `org/base-model` |")
    masks = {m.path: m for m in list_masks(hub_repo, **hub)}
    assert f"{masks['masks/b.smask'].density:.4%}" in rows[1] and "| 3 |" in rows[1]


def pull_readme(api: HfApi, repo: str, tmp_path: Path) -> bytes:
    return Path(api.hf_hub_download(repo, "README.md", cache_dir=tmp_path / "cache")).read_bytes()


def test_push_without_card_and_refused_card(hub: dict, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "a.smask")
    push_mask(local, hub_repo, update_card=False, **hub)
    assert hub_api.list_repo_files(hub_repo) == [".gitattributes", "masks/a.smask"]
    hub_api.upload_file(path_or_fileobj=f"# card\n{START}\nno end".encode(), path_in_repo="README.md",
                        repo_id=hub_repo)
    head = hub_api.model_info(hub_repo).sha
    with pytest.raises(HubError, match="unpaired or repeated.*--no-card"):
        push_mask(local, hub_repo, "masks/b.smask", **hub)
    assert hub_api.model_info(hub_repo).sha == head


def test_missing_repo_file_and_revision(hub: dict, hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "a.smask")
    push_mask(local, hub_repo, **hub)
    with pytest.raises(HubError, match=r"model repo 'org/no-such-repo' not found on http://127\.0\.0\.1:\d+.*token"):
        pull_mask("org/no-such-repo", "masks/a.smask", **hub)
    with pytest.raises(HubError, match=rf"{hub_repo}@main: no mask 'masks/zz.smask'.*submask ls {hub_repo}"):
        pull_mask(hub_repo, "masks/zz.smask", **hub)
    with pytest.raises(HubError, match=r"no branch, tag or commit 'v9'"):
        pull_mask(hub_repo, "masks/a.smask", revision="v9", **hub)
    with pytest.raises(HubError, match=r"no branch, tag or commit '0{40}'"):
        pull_mask(hub_repo, "masks/a.smask", revision="0" * 40, **hub)
    with pytest.raises(HubError, match="not found"):
        push_mask(local, "org/no-such-repo", **hub)
    with pytest.raises(HubError, match="no branch, tag or commit 'feature'"):
        push_mask(local, hub_repo, "masks/b.smask", revision="feature", **hub)
    with pytest.raises(HubError, match="cannot reach http://127.0.0.1:9"):
        pull_mask(hub_repo, "masks/a.smask", endpoint="http://127.0.0.1:9")


def test_create_repo_and_pull_request(hub: dict, hub_api: HfApi, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "a.smask")
    push_mask(local, "org/fresh-repo", create_repo=True, **hub)
    main = hub_api.model_info("org/fresh-repo").sha
    proposal = push_mask(save(make_mask(2), tmp_path / "b.smask"), "org/fresh-repo", create_pr=True, **hub)
    assert proposal.revision == "refs/pr/1" and proposal.pr_url.endswith("/discussions/1")
    assert hub_api.model_info("org/fresh-repo").sha == main
    assert pull_mask("org/fresh-repo", "masks/b.smask", revision="refs/pr/1", **hub).commit == proposal.commit
    hub_api.delete_repo("org/fresh-repo")


def test_failed_commit_leaves_remote_and_local_unchanged(hub: dict, hub_server: HubServer, hub_api: HfApi,
                                                         hub_repo: str, tmp_path: Path) -> None:
    push_mask(save(make_mask(1), tmp_path / "a.smask"), hub_repo, **hub)
    local = save(make_mask(2), tmp_path / "a2.smask")
    before = (hub_api.model_info(hub_repo).sha, hub_api.list_repo_files(hub_repo), local.read_bytes())

    def fail(repo: object, lines: list[dict]) -> None:
        raise ServerError(500, "disk full")

    hub_server.store.commit_hook = fail
    try:
        with pytest.raises(HubError, match="refused the request"):
            push_mask(local, hub_repo, "masks/a.smask", overwrite=True, **hub)
    finally:
        hub_server.store.commit_hook = None
    assert (hub_api.model_info(hub_repo).sha, hub_api.list_repo_files(hub_repo), local.read_bytes()) == before


def test_push_refuses_damaged_masks(hub: dict, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "a.smask", encoding="raw")
    data = bytearray(local.read_bytes())
    data[-1] ^= 0x01  # flip a payload bit: the crc32 no longer matches
    local.write_bytes(bytes(data))
    with pytest.raises(submask.FormatError, match="refusing to push a damaged mask"):
        push_mask(local, hub_repo, **hub)
    assert hub_api.list_repo_files(hub_repo) == [".gitattributes"]


def test_lfs_sized_mask_and_ls_reads_headers_only(hub: dict, hub_server: HubServer, hub_api: HfApi,
                                                  hub_repo: str, tmp_path: Path) -> None:
    nbytes = 10 * 1024 * 1024 + 4096  # over the server's LFS threshold
    random_bits = TensorMask((nbytes * 8,), np.frombuffer(os.urandom(nbytes), dtype=np.uint8))
    big = save(Mask({"w": random_bits}), tmp_path / "big.smask", encoding="raw")
    small = save(make_mask(1), tmp_path / "small.smask")
    push_mask(big, hub_repo, **hub)
    push_mask(small, hub_repo, **hub)
    [info] = hub_api.get_paths_info(hub_repo, ["masks/big.smask"])
    assert info.lfs is not None and info.lfs.size == big.stat().st_size
    assert pull_mask(hub_repo, "masks/big.smask", **hub).local_path.read_bytes() == big.read_bytes()

    hub_server.requests.clear()
    listed = list_masks(hub_repo, **hub)
    assert [(m.path, m.size, m.kind, m.tensors, m.base_model) for m in listed] == [
        ("masks/big.smask", big.stat().st_size, "update", 1, None),
        ("masks/small.smask", small.stat().st_size, "update", 3, "org/base-model")]
    assert listed[0].count == random_bits.count and listed[0].numel == nbytes * 8
    assert listed[1].density == pytest.approx(make_mask(1).density)
    downloads = [r for r in hub_server.requests if "/resolve/" in r.path]
    assert downloads and all(r.range is not None and r.status == 206 for r in downloads)
    assert sum(r.nbytes for r in downloads) < 2048  # two headers, not 10 MiB


def test_sharded_mask_push_pull_and_overwrite(hub: dict, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    shapes = {f"layer{i}.w": (96, 64) for i in range(6)}
    mask = make_mask(4, 0.3, shapes)
    save(mask, tmp_path / "big.smask", encoding="raw", max_shard_bytes=1600)
    assert not (tmp_path / "big.smask").exists() and (tmp_path / "big.smask.index.json").exists()
    pushed = push_mask(tmp_path / "big.smask", hub_repo, "masks/sharded.smask", **hub)
    assert pushed.files[0] == "masks/sharded.smask.index.json" and len(pushed.files) == 4
    assert set(pushed.files) < set(hub_api.list_repo_files(hub_repo))
    pulled = pull_mask(hub_repo, "masks/sharded.smask", **hub)
    assert pulled.local_path.name == "sharded.smask.index.json"
    assert submask.load(pulled.local_path).tensors == mask.tensors
    copied = pull_mask(hub_repo, "masks/sharded.smask", local_path=tmp_path / "out" / "x.smask", **hub)
    assert copied.local_path == tmp_path / "out" / "x.smask.index.json"
    assert submask.load(tmp_path / "out" / "x.smask").tensors == mask.tensors
    [listing] = list_masks(hub_repo, **hub)
    assert (listing.path, listing.shards, listing.tensors, listing.count) == ("masks/sharded.smask", 3, 6, mask.count)

    smaller = make_mask(5, 0.3, {"layer0.w": (96, 64)})
    push_mask(save(smaller, tmp_path / "one.smask"), hub_repo, "masks/sharded.smask", overwrite=True, **hub)
    assert [f for f in hub_api.list_repo_files(hub_repo) if f.startswith("masks/")] == [
        "masks/sharded.smask", "masks/sharded.smask.density.png"]
    assert submask.load(pull_mask(hub_repo, "masks/sharded.smask", **hub).local_path) == smaller


def test_hf_urls_load_pinned_masks(hub_env: HubServer, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    first, second = make_mask(1), make_mask(2)
    commit = push_mask(save(first, tmp_path / "a.smask"), hub_repo, "masks/a.smask").commit
    hub_api.create_tag(hub_repo, tag="v1")
    push_mask(save(second, tmp_path / "b.smask"), hub_repo, "masks/a.smask", overwrite=True)
    assert submask.load(f"hf://{hub_repo}/masks/a.smask").tensors == second.tensors
    assert submask.load(f"hf://{hub_repo}@v1/masks/a.smask").tensors == first.tensors
    with submask.open(f"hf://{hub_repo}@{commit}/masks/a.smask") as mask_file:
        assert mask_file["head.w"] == first["head.w"]
    loaded = submask.load(f"hf://{hub_repo}@v1/masks/a.smask")
    assert loaded.tensors == first.tensors and loaded.metadata.extra["source"]["commit"] == commit
    with pytest.raises(HubError, match="no mask 'masks/b.smask'"):
        submask.load(f"hf://{hub_repo}/masks/b.smask")


def test_expect_model_checks_the_fingerprint(hub: dict, hub_repo: str, tmp_path: Path) -> None:
    push_mask(save(make_mask(1), tmp_path / "a.smask"), hub_repo, **hub)
    assert pull_mask(hub_repo, "masks/a.smask", expect_model=SHAPES, **hub).commit
    other = {**SHAPES, "head.w": (12, 48)}
    with pytest.raises(MismatchError, match=r"another model"):
        pull_mask(hub_repo, "masks/a.smask", expect_model=other, **hub)
    with pytest.raises(MismatchError, match=r"another model"):
        submask.load(f"hf://{hub_repo}/masks/a.smask", expect_model={**SHAPES, "extra.w": (3,)}, **hub)


@pytest.mark.parametrize("url, expected", [
    ("hf://org/model/masks/rl.smask", HubPath("org/model", "masks/rl.smask")),
    ("hf://org/model@v1.0/rl.smask", HubPath("org/model", "rl.smask", "v1.0")),
    ("hf://org/model@refs%2Fpr%2F3/a/b.smask", HubPath("org/model", "a/b.smask", "refs/pr/3")),
    ("hf://datasets/org/data@main/m.smask", HubPath("org/data", "m.smask", "main", "dataset")),
])
def test_parse_hub_url(url: str, expected: HubPath) -> None:
    assert parse_hub_url(url) == expected
    assert parse_hub_url(expected.url) == expected


@pytest.mark.parametrize("url", ["hf://model/rl.smask", "hf://org/model", "hf://org/model@/rl.smask",
                                 "hf://org//rl.smask", "hf://org/model/", "s3://org/model/rl.smask"])
def test_parse_hub_url_rejects_malformed(url: str) -> None:
    with pytest.raises(HubError, match="hf://ORG/NAME"):
        parse_hub_url(url)


def test_replace_section() -> None:
    section = f"{START}\nnew\n{END}"
    assert replace_section(None, section, "org/m") == f"# org/m\n\n{section}\n"
    assert replace_section("text", section, "org/m") == f"text\n\n{section}\n"
    assert replace_section(f"a\r\n{START}\r\nold\r\n{END}\r\nb", section, "org/m") == f"a\r\n{section}\r\nb"
    with pytest.raises(HubError, match="unpaired"):
        replace_section(f"{END} {START}", section, "org/m")


def sharded(seed: int, path: Path) -> tuple[Mask, Path]:
    """A 3-shard mask saved at ``path``; every call with the same file name reuses the same stem."""
    mask = make_mask(seed, 0.3, {f"layer{i}.w": (96, 64) for i in range(6)})
    submask.save(mask, path, encoding="raw", max_shard_bytes=1600)
    return mask, path


def test_sharded_masks_pushed_to_one_folder_stay_apart(hub: dict, hub_api: HfApi, hub_repo: str,
                                                        tmp_path: Path) -> None:
    a, a_path = sharded(1, tmp_path / "a" / "rl.smask")  # same local name: shards used to be named alike
    b, b_path = sharded(2, tmp_path / "b" / "rl.smask")
    pushed_a = push_mask(a_path, hub_repo, "masks/a.smask", **hub)
    pushed_b = push_mask(b_path, hub_repo, "masks/b.smask", **hub)  # no --overwrite needed: another path
    assert not set(pushed_a.files) & set(pushed_b.files)
    assert all(f.startswith("masks/b-") for f in pushed_b.files[1:])
    assert set(pushed_a.files) | set(pushed_b.files) <= set(hub_api.list_repo_files(hub_repo))
    for path, mask in (("masks/a.smask", a), ("masks/b.smask", b)):
        assert submask.load(pull_mask(hub_repo, path, **hub).local_path).tensors == mask.tensors
        assert submask.load(f"hf://{hub_repo}/{path}", **hub).tensors == mask.tensors
    counts = {m.path: m.count for m in list_masks(hub_repo, **hub)}
    assert counts == {"masks/a.smask": a.count, "masks/b.smask": b.count}

    # the same mask pushed again over itself gets fresh names; the old ones go in the same commit
    again = push_mask(a_path, hub_repo, "masks/a.smask", overwrite=True, **hub)
    files = set(hub_api.list_repo_files(hub_repo))
    assert set(again.files) <= files and not set(pushed_a.files[1:]) & files and set(pushed_b.files) <= files
    assert submask.load(f"hf://{hub_repo}/masks/a.smask", **hub).tensors == a.tensors
    assert submask.load(f"hf://{hub_repo}/masks/b.smask", **hub).tensors == b.tensors


def test_pulled_sharded_masks_stay_apart_in_one_directory(hub: dict, hub_repo: str, tmp_path: Path) -> None:
    a, a_path = sharded(1, tmp_path / "a" / "rl.smask")
    b, b_path = sharded(2, tmp_path / "b" / "rl.smask")
    push_mask(a_path, hub_repo, "masks/one/rl.smask", **hub)
    push_mask(b_path, hub_repo, "masks/two/rl.smask", **hub)  # same name in the repo, another folder
    out = tmp_path / "out"
    pull_mask(hub_repo, "masks/one/rl.smask", local_path=out / "a.smask", **hub)
    pull_mask(hub_repo, "masks/two/rl.smask", local_path=out / "b.smask", **hub)
    pull_mask(hub_repo, "masks/one/rl.smask", local_path=out / "a.smask", overwrite=True, **hub)  # again over itself
    assert submask.load(out / "a.smask").tensors == a.tensors
    assert submask.load(out / "b.smask").tensors == b.tensors
    owners = sorted(p.name.split("-")[0] for p in out.iterdir())  # the pull over itself left no old shard
    assert owners == ["a"] * 3 + ["a.smask.index.json"] + ["b"] * 3 + ["b.smask.index.json"]


def test_a_shard_of_another_mask_is_refused_on_the_hub(hub: dict, hub_api: HfApi, hub_repo: str,
                                                       tmp_path: Path) -> None:
    """The old collision by hand: mask B's shard uploaded under the name A's index gives its first shard."""
    a, a_path = sharded(1, tmp_path / "a" / "rl.smask")
    b, b_path = sharded(2, tmp_path / "b" / "rl.smask")
    pushed = push_mask(a_path, hub_repo, "masks/a.smask", **hub)
    with submask.open(b_path) as b_file:
        b_first = b_file.shards[0]
    hub_api.upload_file(path_or_fileobj=b_first, path_in_repo=pushed.files[1], repo_id=hub_repo)
    listed = list_masks(hub_repo, **hub)  # the mixed mask is left out and reported, not listed with B's bits
    assert [m.path for m in listed] == []
    assert len(listed.problems) == 1 and re.search("belongs to write .* another mask or another write",
                                                   listed.problems[0])
    with pytest.raises(submask.FormatError, match="belongs to write"):
        submask.load(f"hf://{hub_repo}/masks/a.smask", **hub)
    with pytest.raises(submask.FormatError, match="belongs to write"):
        pull_mask(hub_repo, "masks/a.smask", local_path=tmp_path / "out" / "a.smask", **hub)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_hub_errors_carry_the_repo_and_revision(hub: dict, hub_repo: str) -> None:
    with pytest.raises(HubError) as missing:
        pull_mask(hub_repo, "masks/a.smask", revision="no-such-branch", **hub)
    assert missing.value.repo_id == hub_repo and missing.value.revision == "no-such-branch"
