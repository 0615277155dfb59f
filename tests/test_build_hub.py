"""Building from Hub repos (``org/name@revision``) with the real huggingface_hub client on the local test server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi  # noqa: E402

import submask  # noqa: E402
from submask import HubError, SourceError, build_mask  # noqa: E402
from submask.examples.minilm import reshard  # noqa: E402


@pytest.fixture
def hub_pair(minilm_bf16, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> tuple[str, str, str]:
    """``hub_repo`` with the base model in 3 shards (first commit), then the finetuned one as a single file."""
    sharded = reshard(minilm_bf16.base_file, tmp_path / "sharded", 3)
    shards = sorted(p.name for p in sharded.glob("*.safetensors")) + ["model.safetensors.index.json"]
    first = hub_api.create_commit(hub_repo, [CommitOperationAdd(name, sharded / name) for name in shards],
                                  commit_message="base, sharded").oid
    second = hub_api.create_commit(
        hub_repo, [CommitOperationDelete(name) for name in shards]
        + [CommitOperationAdd("model.safetensors", minilm_bf16.finetuned_file)], commit_message="finetuned").oid
    return hub_repo, first, second


def test_build_from_hub_revisions(hub_pair, hub_api: HfApi, minilm_bf16, tmp_path: Path) -> None:
    repo, first, second = hub_pair
    local = build_mask(minilm_bf16.base_file, minilm_bf16.finetuned_file).mask
    mask = build_mask(f"{repo}@{first}", repo, hub_api=hub_api, cache_dir=tmp_path / "cache").mask
    assert dict(mask) == dict(local)
    base, finetuned = mask.metadata.provenance["base"], mask.metadata.provenance["finetuned"]
    assert (base["source"], base["revision"], base["requested_revision"]) == (repo, first, first)
    assert (finetuned["revision"], finetuned["requested_revision"]) == (second, None)  # the branch, pinned
    assert sorted(base["files"]) == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    size = minilm_bf16.finetuned_file.stat().st_size
    assert finetuned["files"]["model.safetensors"]["size"] == size
    assert len(finetuned["files"]["model.safetensors"]["sha256"]) == 64


def test_cli_build_from_hub(hub_pair, hub_api: HfApi, tmp_path: Path) -> None:
    """The command line in a fresh process, which finds the Hub through HF_ENDPOINT as users would."""
    repo, first, second = hub_pair
    out = tmp_path / "hub.smask"
    env = {**os.environ, "HF_ENDPOINT": hub_api.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", "from submask.cli import main; main()", "build",
                             f"{repo}@{first}", f"{repo}@{second}", "-o", str(out), "-q"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert submask.load(out).metadata.provenance["finetuned"]["revision"] == second


def test_hub_errors(hub_pair, hub_api: HfApi, tmp_path: Path) -> None:
    repo, first, _ = hub_pair
    with pytest.raises(HubError, match="org/missing-repo"):
        build_mask("org/missing-repo", repo, hub_api=hub_api, cache_dir=tmp_path).mask
    with pytest.raises(HubError, match="no-such-branch"):
        build_mask(f"{repo}@no-such-branch", repo, hub_api=hub_api, cache_dir=tmp_path).mask
    hub_api.delete_file("model.safetensors", repo)
    with pytest.raises(SourceError, match="no model.safetensors.index.json, model.safetensors"):
        build_mask(f"{repo}@{first}", repo, hub_api=hub_api, cache_dir=tmp_path).mask
