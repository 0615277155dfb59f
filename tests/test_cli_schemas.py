"""Every command's --json output, produced for real, against its JSON Schema in spec/cli/ (one vocabulary:
count, numel, density; chance_* stratified, global_chance_* model-wide)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from submask.cli import COMMANDS, main

jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

SPEC = Path(__file__).resolve().parent.parent / "spec" / "cli"
JSON_COMMANDS = sorted(c.name for c in COMMANDS if any(p.name == "as_json" for p in c.params))  # type: ignore[misc]


def _registry() -> Any:
    resources = [(f"https://github.com/submask/submask/spec/cli/{p.name}",
                  referencing.Resource.from_contents(json.loads(p.read_text()))) for p in SPEC.glob("*.json")]
    return referencing.Registry().with_resources(resources)


def check(command: str, output: str) -> dict[str, Any]:
    """``output`` parsed and validated against spec/cli/COMMAND.schema.json (every violation reported)."""
    schema = json.loads((SPEC / f"{command}.schema.json").read_text())
    data = json.loads(output)
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]
    assert not errors, f"{command} --json does not match its schema: {errors}"
    return data


def run(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base, two finetunes (single .safetensors files) and the masks and delta built from them."""
    root = tmp_path_factory.mktemp("schemas")
    rng = np.random.default_rng(0)
    base = {"model.layers.0.mlp.up_proj.weight": rng.standard_normal((8, 16)).astype(np.float32),
            "model.layers.1.mlp.up_proj.weight": rng.standard_normal((8, 16)).astype(np.float32),
            "model.embed_tokens.weight": rng.standard_normal((10, 4)).astype(np.float32)}
    safetensors_numpy.save_file(base, root / "base.safetensors")
    for name, share in (("rl", 0.3), ("sft", 0.6)):
        changed = {k: np.where(rng.random(v.shape) < share, v + 1, v).astype(np.float32) for k, v in base.items()}
        safetensors_numpy.save_file(changed, root / f"{name}.safetensors")
    return root


def test_every_json_command_has_a_schema() -> None:
    assert {p.name.removesuffix(".schema.json") for p in SPEC.glob("*.schema.json")} == {*JSON_COMMANDS, "common"}


def test_local_commands_match_their_schemas(checkpoints: Path) -> None:
    root = checkpoints
    seen = set()

    def json_of(command: str, *args: object) -> dict[str, Any]:
        seen.add(command)
        return check(command, run(command, *args, "--json"))

    built = json_of("build", root / "base.safetensors", root / "rl.safetensors", "-o", root / "rl.smask")
    assert 0 < built["count"] < built["numel"] and built["ladder"][0]["count"] == built["count"]
    json_of("build", root / "base.safetensors", root / "sft.safetensors", "-o", root / "sft.smask")
    delta = json_of("build", root / "base.safetensors", root / "rl.safetensors", "-o", root / "rl.delta.smask",
                    "--values")
    assert "delta" in delta
    info = json_of("info", root / "rl.smask")
    assert (info["count"], info["numel"]) == (built["count"], built["numel"])
    assert "values" in json_of("info", root / "rl.delta.smask")
    assert json_of("validate", root / "rl.smask")["ok"] is True
    stats = json_of("stats", root / "rl.smask", "--by", "module")
    assert stats["groups"]["all"]["count"] == built["count"]
    pairs = json_of("compare", root / "rl.smask", root / "sft.smask", "--by", "layer")["pairs"]
    assert pairs[0]["chance_intersection"] <= pairs[0]["count_a"]
    combined = json_of("combine", "and", root / "rl.smask", root / "sft.smask", "-o", root / "both.smask")
    assert combined["count"] == pairs[0]["intersection"]
    applied = json_of("apply", root / "base.safetensors", root / "rl.safetensors", root / "rl.smask",
                      "-o", root / "sparse")
    assert (applied["count"], applied["rebuilt"]) == (built["count"], False)
    assert json_of("apply", root / "base.safetensors", root / "rl.delta.smask", "-o", root / "rebuilt")["rebuilt"]
    converted = json_of("convert", root / "rl.smask", "-o", root / "rl.npz")
    assert (converted["from"], converted["to"], converted["count"]) == ("smask", "npz", built["count"])
    assert seen == set(JSON_COMMANDS) - {"push", "pull", "ls"}


def test_hub_commands_match_their_schemas(checkpoints: Path, hub_env: Any, hub_repo: str, tmp_path: Path) -> None:
    mask = checkpoints / "rl.smask"
    if not mask.exists():
        run("build", checkpoints / "base.safetensors", checkpoints / "rl.safetensors", "-o", mask)
    pushed = check("push", run("push", hub_repo, mask, "masks/rl.smask", "--json"))
    pulled = check("pull", run("pull", hub_repo, "masks/rl.smask", "--json"))
    assert pulled["commit"] == pushed["commit"]
    listed = check("ls", run("ls", hub_repo, "--json"))
    assert [m["path"] for m in listed["masks"]] == ["masks/rl.smask"] and listed["problems"] == []


def test_a_drifted_output_fails_its_schema() -> None:
    """The schemas are strict: a renamed field (the old build --json spelling) is caught."""
    drifted = {"path": "a.smask", "tensors": 1, "changed": 3, "numel": 8, "density": 0.375, "ladder": [],
               "skipped": {}}
    with pytest.raises(AssertionError, match="changed"):
        check("build", json.dumps(drifted))
