"""The model card a push writes: YAML metadata merged in, masks and deltas tables, the density picture, and the
check of a mask against the repo's safetensors weights (headers only); against the loopback Hub server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

from click.testing import CliRunner
from hub_server import HubServer
from huggingface_hub import HfApi
from safetensors.numpy import save_file

import submask
from submask.cli import main
from submask.hub import push_mask
from submask.hub.card import END, START, merge_metadata, render_section
from submask.hub.listing import MaskListing


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("card, expected", [
    ("# m\n", "---\nbase_model: org/base\ntags:\n- submask\n---\n# m\n"),
    ("---\nlicense: mit\n---\n# m\n", "---\nlicense: mit\nbase_model: org/base\ntags:\n- submask\n---\n# m\n"),
    ("---\r\ntags:\r\n  - rl\r\n  - grpo\r\nlicense: mit\r\n---\r\n",
     "---\r\ntags:\r\n  - rl\r\n  - grpo\r\n  - submask\r\nlicense: mit\r\nbase_model: org/base\r\n---\r\n"),
    ("---\ntags: [rl, grpo]\nbase_model: other/model\n---\n",
     "---\ntags: [rl, grpo, submask]\nbase_model: other/model\n---\n"),
])
def test_metadata_is_merged_without_touching_the_rest(card: str, expected: str) -> None:
    assert merge_metadata(card, "org/base@" + "a" * 40) == expected
    assert merge_metadata(expected, "org/base") == expected  # nothing left to add: the card is unchanged


def test_metadata_without_a_known_base_gets_only_the_tag() -> None:
    assert merge_metadata("# m\n", None) == "---\ntags:\n- submask\n---\n# m\n"
    with pytest.raises(submask.HubError, match="front matter"):
        merge_metadata("---\n[unclosed\n---\n", None)


def listing(path: str, base: str | None, delta: bool = False) -> MaskListing:
    return MaskListing(path, 1000, "update", 3, 25, 100, base, 1, delta)


def test_section_shows_masks_and_deltas_apart() -> None:
    listings = [listing("masks/a.smask", None), listing("deltas/d.smask", "org/base@abc", True)]
    section = render_section("org/rl", listings,
                             {"masks/a.smask.density.png"})
    assert section.startswith(START) and section.endswith(END) and "None" not in section
    assert "| `masks/a.smask` | update | not recorded (built from local files) | 25.0000% | 25 / 100 | 3 |" in section
    assert "### Deltas" in section and "| `deltas/d.smask` | `org/base@abc` |" in section
    assert "`submask apply hf://org/base@abc hf://org/rl/deltas/d.smask -o DIR`" in section
    assert "![density of masks/a.smask by layer and module](masks/a.smask.density.png)" in section
    assert "deltas/d.smask.density.png" not in section


NAMES = {"model.layers.0.mlp.up_proj.weight": (16, 8), "model.layers.1.mlp.up_proj.weight": (16, 8)}


def weights_and_mask(tmp_path: Path, shapes: dict[str, tuple[int, int]]) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / f"m{len(list(tmp_path.glob('*.smask')))}.smask"
    submask.save(submask.Mask.from_numpy({n: rng.random(s) < 0.3 for n, s in shapes.items()},
                                         provenance={"base": {"source": "/home/me/base", "revision": None}}), path)
    return path


def test_push_checks_the_repo_weights_from_headers(hub_env: HubServer, hub_api: HfApi, hub_repo: str,
                                                   tmp_path: Path) -> None:
    save_file({n: np.zeros(s, np.float32) for n, s in NAMES.items()}, tmp_path / "model.safetensors")
    hub_api.upload_file(path_or_fileobj=tmp_path / "model.safetensors", path_in_repo="model.safetensors",
                        repo_id=hub_repo)
    head = hub_api.model_info(hub_repo).sha
    other = weights_and_mask(tmp_path, {"model.layers.0.mlp.up_proj.weight": (8, 16)})
    hub_env.requests.clear()
    code, _, err = run("push", hub_repo, other)
    assert code == 1 and "model.layers.0.mlp.up_proj.weight" in err and "--force" in err
    assert hub_api.model_info(hub_repo).sha == head
    weights = [r for r in hub_env.requests if r.path.endswith("/model.safetensors")]
    assert weights and all(r.range is not None for r in weights if r.method == "GET")  # headers only

    code, _, err = run("push", hub_repo, other, "--force")
    assert code == 0 and "warning: " in err and "--force" in err
    fitting = weights_and_mask(tmp_path, dict(list(NAMES.items())[:1]))
    code, _out, err = run("push", hub_repo, fitting, "masks/fit.smask", "--base-model", "org/base@v1")
    assert (code, err) == (0, "")


def test_card_has_metadata_picture_and_rows(hub_env: HubServer, hub_api: HfApi, hub_repo: str,
                                            tmp_path: Path) -> None:
    hub_api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# RL run\n", path_in_repo="README.md",
                        repo_id=hub_repo)
    local = weights_and_mask(tmp_path, NAMES)
    pushed = push_mask(local, hub_repo, "masks/rl.smask", base_model="org/base@" + "b" * 40)
    assert pushed.picture == "masks/rl.smask.density.png" and pushed.files == ("masks/rl.smask",)
    files = hub_api.list_repo_files(hub_repo)
    assert "masks/rl.smask.density.png" in files
    picture = Path(hub_api.hf_hub_download(hub_repo, "masks/rl.smask.density.png", cache_dir=tmp_path / "c"))
    assert picture.read_bytes().startswith(b"\x89PNG")
    card = Path(hub_api.hf_hub_download(hub_repo, "README.md", cache_dir=tmp_path / "c")).read_text()
    assert card.startswith("---\nlicense: mit\nbase_model: org/base\ntags:\n- submask\n---\n# RL run\n")
    assert f"| `masks/rl.smask` | update | `org/base@{'b' * 40}` |" in card
    assert "](masks/rl.smask.density.png)" in card and "None" not in card

    second = weights_and_mask(tmp_path, NAMES)
    push_mask(second, hub_repo, "masks/sft.smask")  # built from local files, no --base-model
    card = Path(hub_api.hf_hub_download(hub_repo, "README.md", cache_dir=tmp_path / "c")).read_text()
    assert "| `masks/sft.smask` | update | not recorded (built from local files) |" in card
    assert card.count("base_model:") == 1 and "](masks/sft.smask.density.png)" in card
