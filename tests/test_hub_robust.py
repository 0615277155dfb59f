"""submask.hub when the server or the repo misbehaves: 200 answers to range requests, damaged masks,
markers in provenance, pull requests that are not opened, path-like revisions, ``hf://`` special refs and
local paths that must not be published. Real huggingface_hub client, loopback server (tests/hub_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

from hub_server import HubServer  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from test_hub import make_mask, pull_readme, save  # noqa: E402

import submask  # noqa: E402
from submask import FormatError, HubError, Mask, TensorMask  # noqa: E402
from submask.hub import list_masks, parse_hub_url, pull_mask, push_mask  # noqa: E402
from submask.hub.card import END, START  # noqa: E402


@pytest.fixture
def hub(hub_server: HubServer, hub_api: HfApi) -> dict[str, object]:
    return {"endpoint": hub_server.endpoint, "token": hub_server.token}


@pytest.fixture
def no_ranges(hub_server: HubServer) -> Iterator[HubServer]:
    """The server answers every Range request with 200 and the whole file, as RFC 9110 allows."""
    hub_server.store.range_requests = False
    yield hub_server
    hub_server.store.range_requests = True


def cli(hub_server: HubServer, tmp_path: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """``python -m submask ARGS`` in a subprocess talking to the test server, with its own Hub cache."""
    env = {**os.environ, "HF_ENDPOINT": hub_server.endpoint, "HF_TOKEN": hub_server.token,
           "HF_HUB_CACHE": str(tmp_path / "cli-cache"), "HF_HUB_DISABLE_XET": "1"}
    return subprocess.run([sys.executable, "-m", "submask", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)


def damaged(path: Path) -> Path:
    """``path`` with one payload bit flipped: the header is fine, a tensor's checksum no longer matches."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def test_ls_and_card_accept_200_answers_streaming_only_the_header(hub: dict, no_ranges: HubServer, hub_api: HfApi,
                                                                 hub_repo: str, tmp_path: Path) -> None:
    nbytes = 4 * 1024 * 1024
    bits = TensorMask((nbytes * 8,), np.frombuffer(np.random.default_rng(0).bytes(nbytes), dtype=np.uint8))
    big = save(Mask({"w": bits}), tmp_path / "big.smask", encoding="raw")
    small = save(make_mask(1), tmp_path / "small.smask")
    push_mask(big, hub_repo, **hub)  # the card update reads no header yet; the next push reads big's
    push_mask(small, hub_repo, **hub)
    no_ranges.requests.clear()
    tracemalloc.start()
    try:
        listed = list_masks(hub_repo, **hub)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(m.path, m.size, m.tensors, m.count) for m in listed] == [
        ("masks/big.smask", big.stat().st_size, 1, bits.count), ("masks/small.smask", small.stat().st_size, 3,
                                                                  make_mask(1).count)]
    assert listed.problems == []
    downloads = [r for r in no_ranges.requests if "/resolve/" in r.path]
    assert downloads and all(r.range is not None and r.status == 200 for r in downloads)
    assert peak < nbytes // 4  # the 4 MiB body was never read whole
    rows = [line for line in pull_readme(hub_api, hub_repo, tmp_path).decode().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["masks/big.smask", "masks/small.smask"]


def test_a_damaged_mask_does_not_block_ls_or_push(hub: dict, hub_server: HubServer, hub_api: HfApi, hub_repo: str,
                                                  tmp_path: Path) -> None:
    hub_api.upload_file(path_or_fileobj=b"\xff" * 64, path_in_repo="masks/bad.smask", repo_id=hub_repo)
    hub_api.upload_file(path_or_fileobj=b"{not json", path_in_repo="masks/cut.smask.index.json", repo_id=hub_repo)
    good = save(make_mask(2), tmp_path / "good.smask")
    pushed = push_mask(good, hub_repo, **hub)
    assert pushed.commit == hub_api.model_info(hub_repo).sha
    listed = list_masks(hub_repo, **hub)
    assert [m.path for m in listed] == ["masks/good.smask"]
    assert len(listed.problems) == 2
    assert "masks/bad.smask" in listed.problems[1] and "header length" in listed.problems[1]
    assert "masks/cut.smask.index.json" in listed.problems[0] and "not valid JSON" in listed.problems[0]
    card = pull_readme(hub_api, hub_repo, tmp_path).decode()
    assert "| `masks/good.smask` |" in card and "bad.smask" not in card

    result = cli(hub_server, tmp_path, "ls", hub_repo)
    assert result.returncode == 0 and result.stdout.splitlines()[2].split()[0] == "masks/good.smask"
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2 and all(line.startswith("warning: hf://") for line in warnings)
    assert "masks/bad.smask" in result.stderr and "Traceback" not in result.stderr


def test_end_marker_in_provenance_is_escaped_in_the_card(hub: dict, hub_api: HfApi, hub_repo: str,
                                                          tmp_path: Path) -> None:
    hostile = Mask.from_numpy({"w": np.arange(64) % 3 == 0},
                              provenance={"base": {"source": f"x {END} y | {START}\nz"}})
    push_mask(save(hostile, tmp_path / "hostile.smask"), hub_repo, **hub)
    push_mask(save(make_mask(1), tmp_path / "next.smask"), hub_repo, **hub)  # failed on the repeated marker
    card = pull_readme(hub_api, hub_repo, tmp_path).decode()
    assert card.count(START) == 1 and card.count(END) == 1
    [row] = [line for line in card.splitlines() if line.startswith("| `masks/hostile.smask`")]
    assert "| not recorded (built from local files) |" in row  # a source that is no repo id is not shown


def test_pull_of_a_damaged_mask_fails_and_writes_nothing(hub: dict, hub_server: HubServer, hub_api: HfApi,
                                                         hub_repo: str, tmp_path: Path) -> None:
    broken = damaged(save(make_mask(3), tmp_path / "broken.smask", encoding="raw"))
    hub_api.upload_file(path_or_fileobj=broken.read_bytes(), path_in_repo="masks/broken.smask", repo_id=hub_repo)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FormatError, match=r"masks/broken\.smask: the mask in the repo is damaged.*CRC-32"):
        pull_mask(hub_repo, "masks/broken.smask", local_path=out / "copy.smask", **hub)
    with pytest.raises(FormatError, match="damaged"):
        pull_mask(hub_repo, "masks/broken.smask", **hub)
    assert list(out.iterdir()) == []

    result = cli(hub_server, tmp_path, "pull", hub_repo, "masks/broken.smask", "-o", out / "copy.smask")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: hf://") and "damaged" in result.stderr
    assert list(out.iterdir()) == []


def test_create_pr_checks_that_a_pull_request_was_opened(hub: dict, hub_server: HubServer, hub_api: HfApi,
                                                         hub_repo: str, tmp_path: Path) -> None:
    hub_server.store.pull_requests = False
    try:
        with pytest.raises(HubError, match=r"asked for a pull request, but the Hub .* opened none; the commit "
                                           r"may have landed on main: check the repo"):
            push_mask(save(make_mask(1), tmp_path / "a.smask"), hub_repo, create_pr=True, **hub)
    finally:
        hub_server.store.pull_requests = True
    assert "masks/a.smask" in hub_api.list_repo_files(hub_repo)  # this server did commit to main
    proposal = push_mask(save(make_mask(2), tmp_path / "b.smask"), hub_repo, create_pr=True, **hub)
    assert proposal.pr_url and proposal.revision.startswith("refs/pr/")


@pytest.mark.parametrize("revision", ["..", "../..", "main/..", "./main", "refs/heads/../main", "a//b", "v1 "])
def test_path_like_revisions_are_refused_before_any_request(revision: str, hub: dict, hub_server: HubServer,
                                                            hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "a.smask")
    push_mask(local, hub_repo, **hub)
    hub_server.requests.clear()
    for call in (lambda: pull_mask(hub_repo, "masks/a.smask", revision=revision, **hub),
                 lambda: list_masks(hub_repo, revision, **hub),
                 lambda: push_mask(local, hub_repo, "masks/b.smask", revision=revision, **hub)):
        with pytest.raises(HubError, match="is not a branch, tag or commit name"):
            call()
    assert hub_server.requests == []


@pytest.mark.parametrize("url, repo_id, path, revision", [
    ("hf://org/model@refs/pr/1/masks/rl.smask", "org/model", "masks/rl.smask", "refs/pr/1"),
    ("hf://org/model@refs/pr/12/rl.smask", "org/model", "rl.smask", "refs/pr/12"),
    ("hf://org/model@refs%2Fpr%2F1/masks/rl.smask", "org/model", "masks/rl.smask", "refs/pr/1"),
    ("hf://org/model@refs/convert/parquet/m.smask", "org/model", "m.smask", "refs/convert/parquet"),
    ("hf://org/model@feature%2Fx/m.smask", "org/model", "m.smask", "feature/x"),
    ("hf://org/model/masks/v@2.smask", "org/model", "masks/v@2.smask", None),
])
def test_hf_urls_follow_huggingface_hubs_grammar(url: str, repo_id: str, path: str, revision: str | None) -> None:
    parsed = parse_hub_url(url)
    assert (parsed.repo_id, parsed.path, parsed.revision) == (repo_id, path, revision)
    assert parse_hub_url(parsed.url) == parsed
    from huggingface_hub.utils import parse_hf_uri

    theirs = parse_hf_uri(url)
    assert (theirs.id, theirs.path_in_repo, theirs.revision) == (repo_id, path, revision)


def test_hf_url_with_a_pull_request_ref(hub_env: HubServer, hub_repo: str, tmp_path: Path) -> None:
    push_mask(save(make_mask(1), tmp_path / "a.smask"), hub_repo)
    proposed = make_mask(2)
    push_mask(save(proposed, tmp_path / "b.smask"), hub_repo, create_pr=True)
    assert submask.load(f"hf://{hub_repo}@refs/pr/1/masks/b.smask").tensors == proposed.tensors
    assert submask.load(f"hf://{hub_repo}@refs%2Fpr%2F1/masks/b.smask").tensors == proposed.tensors


def test_push_publishes_no_local_paths(hub: dict, hub_server: HubServer, hub_api: HfApi, hub_repo: str,
                                       tmp_path: Path) -> None:
    base, tuned = tmp_path / "ckpt" / "base.safetensors", tmp_path / "ckpt" / "tuned.safetensors"
    base.parent.mkdir()
    weights = {"w": np.zeros((8, 8), np.float32)}
    save_file(weights, base)
    save_file({"w": np.eye(8, dtype=np.float32)}, tuned)
    built = submask.build_mask(base, tuned, tmp_path / "rl.smask").path
    with submask.open(built) as mask_file:
        assert mask_file.metadata.provenance["base"]["source"] == str(base)  # the file keeps where it came from
    push_mask(built, hub_repo, **hub)
    hub_api.upload_file(path_or_fileobj=built.read_bytes(), path_in_repo="masks/copy.smask", repo_id=hub_repo)
    card = pull_readme(hub_api, hub_repo, tmp_path).decode()
    assert "| `masks/rl.smask` | update | not recorded (built from local files) |" in card
    assert str(tmp_path) not in card and "None" not in card
    assert [m.base_model for m in list_masks(hub_repo, **hub)] == [None] * 2
    result = cli(hub_server, tmp_path, "ls", hub_repo, "--json")
    assert result.returncode == 0 and str(tmp_path) not in result.stdout
    assert [m["base_model"] for m in json.loads(result.stdout)["masks"]] == [None] * 2

    pinned = Mask.from_numpy({"w": np.eye(4, dtype=bool)},
                             provenance={"base": {"source": "org/base", "revision": "a" * 40}},
                             model={"name": "/home/someone/run-7"})
    push_mask(save(pinned, tmp_path / "pinned.smask"), hub_repo, **hub)
    unnamed = Mask.from_numpy({"w": np.eye(4, dtype=bool)}, model={"name": "/home/someone/run-7/"})
    push_mask(save(unnamed, tmp_path / "unnamed.smask"), hub_repo, **hub)
    published = {m.path: m.base_model for m in list_masks(hub_repo, **hub)}
    assert published["masks/pinned.smask"] == f"org/base@{'a' * 40}"
    assert published["masks/unnamed.smask"] is None  # a model name is not the base model


def test_max_bits_guards_hf_urls_before_any_decoding(hub: dict, hub_api: HfApi, hub_repo: str,
                                                     tmp_path: Path) -> None:
    """A damaged file from the Hub is refused by max_bits before a single tensor is decoded."""
    data = bytearray(save(make_mask(3), tmp_path / "m.smask").read_bytes())
    data[-1] ^= 0xFF  # payload damage: decoding would report it
    hub_api.upload_file(path_or_fileobj=bytes(data), path_in_repo="masks/m.smask", repo_id=hub_repo)
    with pytest.raises(submask.LimitError):
        submask.load(f"hf://{hub_repo}/masks/m.smask", max_bits=10, **hub)
    with pytest.raises(FormatError):
        submask.load(f"hf://{hub_repo}/masks/m.smask", **hub)
