"""``submask push/pull/ls`` and ``submask info hf://...`` against the loopback Hub server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from click.testing import CliRunner  # noqa: E402
from hub_server import HubServer  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402
from test_hub import make_mask, save  # noqa: E402

from submask.cli import main  # noqa: E402


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_push_pull_ls_info(hub_env: HubServer, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "rl.smask")
    code, out, _ = run("push", hub_repo, local, "--message", "Add RL mask")
    head = hub_api.model_info(hub_repo).sha
    assert (code, out) == (0, f"pushed masks/rl.smask to {hub_repo}@main (commit {head})\n")
    assert hub_api.list_repo_commits(hub_repo)[0].title == "Add RL mask"

    code, out, err = run("pull", hub_repo, "masks/rl.smask", "-o", tmp_path / "copy.smask")
    assert (code, out, err) == (0, f"{tmp_path / 'copy.smask'}\n", f"commit {head} ({hub_repo}@main)\n")
    assert (tmp_path / "copy.smask").read_bytes() == local.read_bytes()

    code, out, _ = run("ls", hub_repo)
    assert code == 0
    header, _, row = out.splitlines()
    assert header.split() == ["path", "bytes", "kind", "tensors", "density", "%", "base", "model"]
    assert row.split() == ["masks/rl.smask", str(local.stat().st_size), "update", "3",
                           f"{100 * make_mask(1).density:.4g}", "org/base-model"]
    code, out, _ = run("ls", hub_repo, "--json")
    listed = json.loads(out)
    assert listed["masks"][0]["count"] == make_mask(1).count and listed["problems"] == []

    code, out, _ = run("info", f"hf://{hub_repo}@{head}/masks/rl.smask", "--json")
    assert (code, json.loads(out)["count"], json.loads(out)["tensors"]) == (0, make_mask(1).count, 3)


def test_overwrite_pr_and_no_card(hub_env: HubServer, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "rl.smask")
    assert run("push", hub_repo, local, "m/rl.smask", "--no-card")[0] == 0
    code, _, err = run("push", hub_repo, local, "m/rl.smask")
    assert code == 1 and err.startswith(f"error: {hub_repo}@main: a mask already exists at 'm/rl.smask'")
    assert "--overwrite" in err
    code, out, _ = run("push", hub_repo, local, "m/rl.smask", "--overwrite", "--create-pr")
    assert code == 0 and out.splitlines()[1].endswith("/discussions/1")
    assert hub_api.list_repo_files(hub_repo) == [".gitattributes", "m/rl.smask"]  # no README on main
    code, out, _ = run("pull", hub_repo, "m/rl.smask", "--revision", "refs/pr/1", "--json")
    assert json.loads(out)["commit"] == hub_api.model_info(hub_repo, revision="refs/pr/1").sha


def test_explicit_endpoint_and_errors(hub_server: HubServer, hub_repo: str) -> None:
    code, out, err = run("ls", hub_repo, "--endpoint", hub_server.endpoint)
    assert (code, out) == (0, f"no masks in {hub_repo}\n")
    code, _, err = run("pull", "org/missing", "m.smask", "--endpoint", hub_server.endpoint)
    assert code == 1 and err.startswith("error: model repo 'org/missing' not found")
    code, _, err = run("ls", hub_repo, "--revision", "nope", "--endpoint", hub_server.endpoint)
    assert code == 1 and "no branch, tag or commit 'nope'" in err


def test_bad_path_overwrite_policy_and_json(hub_env: HubServer, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "rl.smask")
    code, _, err = run("push", hub_repo, local, "../x.smask")
    assert code == 1 and err.startswith("error: ") and "../x.smask" in err and len(err.splitlines()) == 1
    code, out, _ = run("push", hub_repo, local, "--json")
    pushed = json.loads(out)
    assert code == 0 and (pushed["path"], pushed["commit"]) == ("masks/rl.smask", hub_api.model_info(hub_repo).sha)
    copy = tmp_path / "copy.smask"
    copy.write_bytes(b"keep me")
    code, _, err = run("pull", hub_repo, "masks/rl.smask", "-o", copy)
    assert code == 1 and "exists" in err and "--overwrite" in err and copy.read_bytes() == b"keep me"
    code, _, _ = run("pull", hub_repo, "masks/rl.smask", "-o", copy, "--overwrite")
    assert code == 0 and copy.read_bytes() == local.read_bytes()
