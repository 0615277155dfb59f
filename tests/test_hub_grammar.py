"""One Hub grammar (``hf://ORG/NAME[@REV][/path]``) on every command, repo paths refused before any request, and
``ls`` / the card update going on past a file they cannot read; against the loopback Hub server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from click.testing import CliRunner
from hub_server import HubServer
from huggingface_hub import CommitOperationAdd, HfApi
from test_hub import make_mask, save

from submask import HubError
from submask.cli import main
from submask.hub import HubPath, list_masks, pull_mask, push_mask
from submask.hub.paths import hub_target, parse_hub_ref, repo_path


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("path", ["masks/./y.smask", "masks//y.smask", "masks/", "/masks/y.smask", "masks\\y.smask",
                                  "masks/../y.smask", ".", "", "a/\x01.smask"])
def test_repo_paths_are_refused_unless_written_as_stored(path: str) -> None:
    with pytest.raises(HubError, match="not a path in the repo"):
        repo_path(path)


def test_refusal_suggests_the_clean_path() -> None:
    with pytest.raises(HubError, match="write 'masks/y.smask'"):
        repo_path("masks/./y.smask")


@pytest.mark.parametrize("text, expected", [
    ("hf://org/m", HubPath("org/m", "")),
    ("hf://org/m@v1", HubPath("org/m", "", "v1")),
    ("hf://org/m@refs/pr/2/sub", HubPath("org/m", "sub", "refs/pr/2")),
    ("hf://datasets/org/d/x.smask", HubPath("org/d", "x.smask", None, "dataset")),
])
def test_parse_hub_ref(text: str, expected: HubPath) -> None:
    assert parse_hub_ref(text) == expected
    assert parse_hub_ref(expected.url) == expected


def test_hub_target_merges_and_refuses_disagreement() -> None:
    assert hub_target("org/m@v1", "masks/a.smask") == HubPath("org/m", "masks/a.smask", "v1")
    assert hub_target("hf://org/m/masks/a.smask", revision="v2") == HubPath("org/m", "masks/a.smask", "v2")
    with pytest.raises(HubError, match="revision 'v1' and 'v2'"):
        hub_target("hf://org/m@v1/a.smask", revision="v2")
    with pytest.raises(HubError, match="path 'a.smask' and 'b.smask'"):
        hub_target("hf://org/m/a.smask", "b.smask")


def test_push_refuses_a_bad_path_before_any_request(hub_env: HubServer, hub_repo: str, tmp_path: Path) -> None:
    local = save(make_mask(1), tmp_path / "y.smask")
    for bad in ("masks/./y.smask", "masks//y.smask", "masks/", "masks\\y.smask"):
        before = len(hub_env.requests)
        code, _, err = run("push", hub_repo, local, bad)
        assert code == 1 and "not a path in the repo" in err and len(err.splitlines()) == 1
        assert len(hub_env.requests) == before
        with pytest.raises(HubError):
            push_mask(local, f"hf://{hub_repo}/{bad}")
        assert len(hub_env.requests) == before


def test_ls_and_card_skip_an_entry_they_cannot_read(hub_env: HubServer, hub_api: HfApi, hub_repo: str,
                                                    tmp_path: Path) -> None:
    good = save(make_mask(1), tmp_path / "good.smask")
    hub_api.create_commit(hub_repo, [CommitOperationAdd("masks/./y.smask", good.read_bytes())],
                          commit_message="a path stored literally, as an old push did")
    if "masks/./y.smask" not in hub_api.list_repo_files(hub_repo):
        pytest.skip("this huggingface_hub normalises paths itself")
    code, out, err = run("push", hub_repo, good)
    assert code == 0 and out.startswith("pushed masks/good.smask")
    assert "warning: " in err and "masks/./y.smask" in err and "left out" in err
    code, out, err = run("ls", hub_repo, "--json")
    listed = json.loads(out)
    assert code == 0 and [m["path"] for m in listed["masks"]] == ["masks/good.smask"]
    assert (listed["repo"], listed["revision"]) == (hub_repo, None)
    assert len(listed["problems"]) == 1 and "masks/./y.smask" in listed["problems"][0]
    assert "warning: " in err


def test_push_pull_ls_take_hf_urls(hub_env: HubServer, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    hub_api.create_branch(hub_repo, branch="dev")
    local = save(make_mask(2), tmp_path / "rl.smask")
    code, out, _ = run("push", f"hf://{hub_repo}@dev/runs/rl.smask", local)
    dev = hub_api.model_info(hub_repo, revision="dev").sha
    assert (code, out) == (0, f"pushed runs/rl.smask to {hub_repo}@dev (commit {dev})\n")
    assert "runs/rl.smask" not in hub_api.list_repo_files(hub_repo)  # main untouched

    code, _, err = run("push", local, hub_repo)  # the order before hf upload's
    assert code == 2 and f"submask push {hub_repo} {local}" in err
    code, out, err = run("pull", f"hf://{hub_repo}@dev/runs/rl.smask")
    assert code == 0 and len(out.splitlines()) == 1 and Path(out.strip()).read_bytes() == local.read_bytes()
    assert err == f"commit {dev} ({hub_repo}@dev)\n"
    assert run("pull", f"hf://{hub_repo}/runs/rl.smask", "--revision", "dev")[1] == out
    assert run("pull", hub_repo, "runs/rl.smask", "--revision", "dev")[1] == out
    code, _, err = run("pull", f"hf://{hub_repo}@main/runs/rl.smask", "--revision", "dev")
    assert code == 1 and "revision 'main' and 'dev'" in err

    code, out, _ = run("ls", f"hf://{hub_repo}@dev/runs")
    assert code == 0 and out.splitlines()[2].split()[0] == "runs/rl.smask"
    assert run("ls", f"hf://{hub_repo}@dev/other")[1] == f"no masks in hf://{hub_repo}@dev/other\n"
    assert [m.path for m in list_masks(f"hf://{hub_repo}@dev")] == ["runs/rl.smask"]
    assert pull_mask(f"{hub_repo}@dev", "runs/rl.smask").commit == dev


def test_mask_commands_show_the_url_and_take_hub_options(hub_server: HubServer, hub_api: HfApi, hub_repo: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = save(make_mask(1), tmp_path / "rl.smask")
    push_mask(local, hub_repo, endpoint=hub_server.endpoint, token=hub_server.token)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    options = ["--endpoint", hub_server.endpoint, "--token", hub_server.token]
    url = f"hf://{hub_repo}/masks/rl.smask"
    code, out, _ = run("info", url, "--json", *options, "--revision", "main")
    assert code == 0 and json.loads(out)["path"] == f"hf://{hub_repo}@main/masks/rl.smask"
    code, out, _ = run("info", url, *options)
    assert code == 0 and out.startswith(f"{url}: update mask")
    code, out, _ = run("stats", url, "--json", *options)
    assert code == 0 and json.loads(out)["groups"]
    code, _, err = run("info", local, "--revision", "main")
    assert code == 2 and "--revision applies to Hub inputs" in err

    damaged = bytearray(local.read_bytes())
    damaged[20] ^= 0xFF  # inside the header: its checksum no longer matches
    hub_api.upload_file(path_or_fileobj=bytes(damaged), path_in_repo="masks/bad.smask", repo_id=hub_repo)
    code, _, err = run("info", f"hf://{hub_repo}/masks/bad.smask", *options)
    assert code == 1 and err.startswith(f"error: hf://{hub_repo}/masks/bad.smask") and "snapshots" not in err


def test_build_and_apply_take_hf_urls(hub_env: HubServer, hub_api: HfApi, hub_repo: str, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    base, tuned = tmp_path / "base.safetensors", tmp_path / "tuned.safetensors"
    save_file({"w": np.zeros((4, 4), np.float32)}, base)
    save_file({"w": np.eye(4, dtype=np.float32)}, tuned)
    first = hub_api.create_commit(hub_repo, [CommitOperationAdd("base/model.safetensors", base)],
                                  commit_message="base").oid
    hub_api.create_commit(hub_repo, [CommitOperationAdd("tuned.safetensors", tuned)], commit_message="tuned")
    out = tmp_path / "m.smask"
    code, printed, err = run("build", f"hf://{hub_repo}/base", f"hf://{hub_repo}/tuned.safetensors", "-o", out,
                             "--json", "--revision", "main")
    assert code == 0, err
    assert json.loads(printed)["density"] == 4 / 16
    code, _, err = run("build", f"hf://{hub_repo}/tuned.safetensors", f"{hub_repo}/x", "-o", tmp_path / "n.smask",
                     "--revision", first)
    assert code == 1 and "tuned.safetensors" in err and first in err  # the file is not there at that commit
    code, _, err = run("build", f"hf://{hub_repo}@{first}/nothing", tuned, "-o", tmp_path / "n.smask")
    assert code == 1 and f"hf://{hub_repo}@{first}/nothing" in err
    delta = tmp_path / "d.smask"
    assert run("build", f"hf://{hub_repo}@{first}/base", tuned, "-o", delta, "--values")[0] == 0
    code, _, err = run("apply", f"hf://{hub_repo}/base", delta, "-o", tmp_path / "model", "--revision", first)
    assert code == 0, err
    assert (tmp_path / "model" / "tuned.safetensors").read_bytes() == tuned.read_bytes()


def test_validate_names_the_url_of_a_damaged_hub_mask(hub_env: HubServer, hub_api: HfApi, hub_repo: str,
                                                      tmp_path: Path) -> None:
    import submask

    local = save(make_mask(1), tmp_path / "rl.smask")
    data = bytearray(local.read_bytes())
    with submask.open(local) as mask_file:
        name = next(iter(mask_file.entries))
        at = bytes(data).index(mask_file.payload(name))
    data[at] ^= 0x01  # a payload bit: the header still parses, the tensor's checksum fails
    hub_api.upload_file(path_or_fileobj=bytes(data), path_in_repo="masks/bad.smask", repo_id=hub_repo)
    url = f"hf://{hub_repo}/masks/bad.smask"
    code, _, err = run("validate", url)
    assert code == 1 and f"hf://{hub_repo}/masks/bad.smask" in err and "snapshots" not in err
