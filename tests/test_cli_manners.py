"""The command line's manners (-q everywhere, usage errors exit 2, messages in CLI words, progress bars only on a
terminal) and the API's hand-offs (a BuiltMask wherever a mask goes, Comparison.pair by label, help(submask))."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask.cli import COMMANDS, main

safetensors_numpy = pytest.importorskip("safetensors.numpy")

NAMES = ("layers.0.weight", "layers.0.bias", "layers.1.weight")


def cli(*args: object) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base.safetensors and rl.safetensors (30% of the values changed) in one folder."""
    root = tmp_path_factory.mktemp("manners")
    rng = np.random.default_rng(1)
    base = {"layers.0.weight": rng.standard_normal((6, 5)).astype(np.float32),
            "layers.0.bias": rng.standard_normal(6).astype(np.float32),
            "layers.1.weight": rng.standard_normal((3, 6)).astype(np.float32)}
    safetensors_numpy.save_file(base, root / "base.safetensors")
    rl = {k: np.where(rng.random(v.shape) < 0.3, v + 1, v).astype(np.float32) for k, v in base.items()}
    safetensors_numpy.save_file(rl, root / "rl.safetensors")
    return root


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_takes_quiet(command: Any) -> None:
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {"-q", "--quiet"} <= options, f"submask {command.name} lacks -q/--quiet"


def test_quiet_prints_nothing(pair: Path, tmp_path: Path) -> None:
    mask = tmp_path / "rl.smask"
    assert (cli("build", pair / "base.safetensors", pair / "rl.safetensors", "-o", mask, "-q").output) == ""
    for args in (["info", mask], ["validate", mask], ["stats", mask], ["compare", mask, mask],
                 ["combine", "not", mask, "-o", tmp_path / "not.smask"]):
        result = cli(*args, "-q")
        assert (result.exit_code, result.output) == (0, ""), args
    assert json.loads(cli("info", mask, "-q", "--json").output)["count"] > 0  # --json still prints


@pytest.mark.parametrize("args, says", [
    (["combine", "not", "{mask}", "{mask}", "-o", "{tmp}/x.smask"], "exactly one"),
    (["combine", "nand", "{mask}", "{mask}", "-o", "{tmp}/x.smask"], "nand"),
    (["build", "{base}", "{rl}", "-o", "{tmp}/x.smask", "--atol", "-1"], "atol"),
    (["build", "{base}", "{rl}", "-o", "{tmp}/x.smask", "--atol", "1e-5", "--rtol", "1e-3"], "allclose"),
    (["build", "{base}", "{rl}", "-o", "{tmp}/x.smask", "--criterion", "fuzzy"], "fuzzy"),
    (["compare", "{mask}"], "at least two"),
])
def test_usage_errors_exit_2(pair: Path, tmp_path: Path, args: list[str], says: str) -> None:
    mask = tmp_path / "m.smask"
    submask.build_mask(pair / "base.safetensors", pair / "rl.safetensors", mask)
    filled = [a.format(mask=mask, tmp=tmp_path, base=pair / "base.safetensors", rl=pair / "rl.safetensors")
              for a in args]
    result = cli(*filled)
    assert result.exit_code == 2, result.output
    assert says in result.output and not (tmp_path / "x.smask").exists()


def test_atol_with_rtol_refusal_says_why(pair: Path) -> None:
    with pytest.raises(submask.UsageError, match=r"allclose.*symmetric"):
        submask.build_mask(pair / "base.safetensors", pair / "rl.safetensors", None, atol=1e-5, rtol=1e-3)


def test_messages_speak_cli_on_the_command_line(pair: Path, tmp_path: Path) -> None:
    out = tmp_path / "rl.smask"
    args = ["build", pair / "base.safetensors", pair / "rl.safetensors", "-o", out, "-q"]
    assert cli(*args).exit_code == 0
    result = cli(*args)
    assert result.exit_code == 1 and "--overwrite" in result.output and "overwrite=True" not in result.output
    result = cli("apply", pair / "base.safetensors", out, "-o", tmp_path / "x", "--invert")
    assert result.exit_code == 2 and "--invert" in result.output and "invert=True" not in result.output
    with pytest.raises(submask.OutputError, match="overwrite=True"):  # Python callers read Python
        submask.build_mask(pair / "base.safetensors", pair / "rl.safetensors", out)


def test_messages_name_hf_commands_that_exist() -> None:
    """Every `hf ...` command a message names resolves in the installed huggingface_hub's CLI."""
    click = pytest.importorskip("click")
    hf = pytest.importorskip("huggingface_hub.cli.hf")
    source = Path(submask.__file__).parent
    named = {m for path in source.rglob("*.py") for m in re.findall(r"`hf ([a-z][a-z -]*[a-z])", path.read_text())}
    assert named, "no hf command named: this test checks nothing"
    ctx = click.Context(hf.app)
    for words in named:
        command: Any = hf.app
        for word in words.split():
            if not isinstance(command, click.Group):
                break  # an argument: the command is found
            command = command.get_command(ctx, word)
            assert command is not None, f"`hf {words}` does not exist in huggingface_hub's CLI"


def test_hub_progress_bars_stay_off_when_stderr_is_not_a_terminal(hub_server: Any, hub_api: Any, hub_repo: str,
                                                                   pair: Path, tmp_path: Path) -> None:
    mask = tmp_path / "rl.smask"
    submask.build_mask(pair / "base.safetensors", pair / "rl.safetensors", mask)
    submask.push_mask(mask, hub_repo, "masks/rl.smask", endpoint=hub_server.endpoint, token=hub_server.token)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    done = subprocess.run([sys.executable, "-c", "from submask.cli import main; main()", "pull", hub_repo,
                           "masks/rl.smask", "--endpoint", hub_server.endpoint, "--token", hub_server.token,
                           "-o", str(tmp_path / "copy.smask")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("commit ") and done.stderr.count("\n") == 1  # no huggingface_hub download bar
    assert (tmp_path / "copy.smask").read_bytes() == mask.read_bytes()


def test_a_built_mask_goes_wherever_a_mask_goes(pair: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    in_memory = submask.build_mask(pair / "base.safetensors", pair / "rl.safetensors")
    written = submask.build_mask(pair / "base.safetensors", pair / "rl.safetensors", tmp_path / "rl.smask")
    assert in_memory.count == written.count == submask.load(written).count

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(5, 6), torch.nn.Linear(6, 3, bias=False)])

    for built in (in_memory, written):
        model = Net()
        handle = submask.restrict(model, built)
        assert handle is not None
        submask.unrestrict(model)
    result = submask.compare([in_memory, written])
    assert result.labels == ["mask 1", str(tmp_path / "rl.smask")]
    assert result.pair(0, 1).jaccard == 1.0
    assert submask.density_breakdown(in_memory, by="tensor")["all"].count == in_memory.count
    applied = submask.apply_mask(pair / "base.safetensors", pair / "rl.safetensors", in_memory, tmp_path / "out")
    assert (applied.count, applied.density) == (in_memory.count, in_memory.density)
    with pytest.raises(submask.UsageError, match="pass the BuiltMask itself"):
        os.fspath(in_memory)


def test_comparison_pair_by_label(pair: Path, tmp_path: Path) -> None:
    rl = submask.build_mask(pair / "base.safetensors", pair / "rl.safetensors", tmp_path / "rl.smask").path
    sft = submask.combine_files("not", [rl], tmp_path / "sft.smask").path
    result = submask.compare([rl, sft], by="layer")
    assert result.pair("rl.smask", "sft.smask") == result.pair(0, 1) == result.pair(str(rl), str(sft))
    assert result.pair("sft.smask", "rl.smask", "0") == result.pair(1, 0, "0")
    for bad in (lambda: result.pair("dpo.smask", "rl.smask"), lambda: result.pair(0, 5),
                lambda: result.pair(0, 1, "layers.9"), lambda: result.matrix("nope")):
        with pytest.raises(submask.SubmaskError):
            bad()


def test_apply_from_single_files_writes_model_safetensors(minilm_bf16: Any, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    mask = submask.build_mask(minilm_bf16.base, minilm_bf16.finetuned)
    out = tmp_path / "sparse"
    submask.apply_mask(minilm_bf16.base_file, minilm_bf16.finetuned_file, mask, out)
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]
    (out / "config.json").write_bytes((minilm_bf16.finetuned / "config.json").read_bytes())
    model = transformers.AutoModel.from_pretrained(out, local_files_only=True)
    finetuned = transformers.AutoModel.from_pretrained(minilm_bf16.finetuned, local_files_only=True)
    assert all(bool((a == b).all()) for a, b in zip(model.state_dict().values(), finetuned.state_dict().values(),
                                                      strict=True))


def test_help_starts_with_a_map_of_the_api_by_task() -> None:
    doc = submask.__doc__ or ""
    assert re.findall(r"^- (\w+):", doc, re.M) == ["build", "compare", "apply", "train", "Hub", "format"]
    assert doc.index("- build:") < doc.index(">>>")
    named = set(re.findall(r"``(\w+)", doc)) - {"hf", "values", "submask", "chance_", "global_chance_"}
    assert {"build_mask", "compare", "apply_mask", "restrict", "push_mask", "load"} <= named
    assert all(hasattr(submask, name) or hasattr(submask.Mask, name) or hasattr(submask.Comparison, name)
               for name in named), sorted(n for n in named if not hasattr(submask, n))
