"""The command line with deltas: build --values, info, apply BASE DELTA (local and from the Hub)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from submask.cli import main

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def delta(minilm_bf16, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A delta built with the CLI from the bf16 pair, and what the command printed."""
    out = tmp_path_factory.mktemp("cli-delta") / "rl.smask"
    result = CliRunner().invoke(main, ["build", str(minilm_bf16.base), str(minilm_bf16.finetuned), "--values",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_build_values_prints_the_delta_size_beside_the_checkpoint(minilm_bf16, delta) -> None:
    path, output = delta
    finetuned = minilm_bf16.finetuned_file.stat().st_size
    line = re.search(r"delta: ([\d,]+) bytes for a finetuned checkpoint of ([\d,]+) bytes \(([\d.]+)%\)", output)
    assert line, output
    assert int(line[1].replace(",", "")) == path.stat().st_size and int(line[2].replace(",", "")) == finetuned
    assert float(line[3]) == pytest.approx(100 * path.stat().st_size / finetuned, rel=1e-3)
    assert path.stat().st_size < finetuned / 2  # few bf16 values changed: far smaller than the checkpoint


def test_build_values_json_and_refusals(minilm_bf16, tmp_path: Path) -> None:
    args = ["build", str(minilm_bf16.base), str(minilm_bf16.finetuned), "--values"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "d.smask"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["delta"]["size"] == (tmp_path / "d.smask").stat().st_size and summary["whole"] == []
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "e.smask"), "--atol", "1e-3"])
    assert result.exit_code == 2 and "criterion must be 'exact'" in result.output  # a usage error
    assert not (tmp_path / "e.smask").exists()


def test_info_shows_values_size_dtypes_planes_and_files(delta) -> None:
    path, _ = delta
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert re.search(r"values: [\d,]+ bytes stored for [\d,]+ bytes of values \(2 dtype\(s\)\); planes per dtype, "
                     r"byte 0 first: .*BF16 \(103 tensor\(s\)\): (stored|mixed), (zstd|mixed)",
                     result.output), result.output
    assert "rebuilds 1 file(s)" in result.output and "model.safetensors" in result.output
    summary = json.loads(CliRunner().invoke(main, ["info", str(path), "--json"]).output)
    values = [t["values"] for t in summary["tensor_list"]]
    assert summary["values"]["bytes"] == sum(v["bytes"] for v in values) > 0
    itemsize = {"BF16": 2, "I64": 8}
    assert summary["values"]["size"] == sum(t["count"] * itemsize[t["values"]["dtype"]]
                                            for t in summary["tensor_list"])
    assert all(len(v["planes"]) == (itemsize[v["dtype"]] if v["size"] else 0) for v in values)


def test_apply_base_delta_rebuilds_the_weights_only(minilm_bf16, delta, tmp_path: Path) -> None:
    path, _ = delta
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["apply", str(minilm_bf16.base), str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "rebuilt" in result.output and "matches its recorded SHA-256" in result.output
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]  # config.json is not vouched for
    assert (out / "model.safetensors").read_bytes() == minilm_bf16.finetuned_file.read_bytes()
    result = CliRunner().invoke(main, ["apply", str(minilm_bf16.base), str(path), "-o", str(tmp_path / "x"),
                                       "--invert"])
    assert result.exit_code == 2 and "--invert needs FINETUNED and MASK" in result.output


def test_apply_two_inputs_refuses_a_mask_without_values(minilm_bf16, tmp_path: Path) -> None:
    mask = tmp_path / "plain.smask"
    assert CliRunner().invoke(main, ["build", str(minilm_bf16.base), str(minilm_bf16.finetuned), "-o", str(mask),
                                     "-q"]).exit_code == 0
    result = CliRunner().invoke(main, ["apply", str(minilm_bf16.base), str(mask), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "holds no checkpoint layout" in result.output
    assert not (tmp_path / "out").exists()


def test_apply_from_the_hub_in_a_fresh_process(minilm_bf16, delta, hub_api, hub_repo: str, tmp_path: Path) -> None:
    """``submask apply org/base@sha hf://org/run/deltas/step.smask -o DIR``, as a user would type it."""
    from huggingface_hub import CommitOperationAdd

    path, _ = delta
    base = hub_api.create_commit(hub_repo, [CommitOperationAdd("model.safetensors", minilm_bf16.base_file)],
                                 commit_message="base").oid
    hub_api.upload_file(path_or_fileobj=path, path_in_repo="deltas/step.smask", repo_id=hub_repo)
    env = {**os.environ, "HF_ENDPOINT": hub_api.endpoint, "HF_TOKEN": hub_api.token,
           "HF_HUB_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "submask", "apply", f"{hub_repo}@{base}",
                             f"hf://{hub_repo}/deltas/step.smask", "-o", str(out)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out / "model.safetensors").read_bytes() == minilm_bf16.finetuned_file.read_bytes()


def test_a_rebuild_starts_numba_only_from_its_start_up_size(minilm_bf16, delta, tmp_path: Path) -> None:
    """A rebuild below ``rebuild.START_UP`` elements leaves numba unstarted in a fresh process (its start would
    cost more than the numpy decode), one above it starts it; both rebuild the finetuned files byte for byte."""
    from submask.accel import numba_enabled
    from submask.rebuild import START_UP

    if not numba_enabled():
        pytest.skip("numba is not installed or switched off")
    code = ("import sys, submask, submask.accel as accel, submask.rebuild as rebuild; "
            "rebuild.START_UP = int(sys.argv[1]); submask.apply_mask(*sys.argv[2:5]); print(accel.numba_started())")
    for start_up, started in [(START_UP, "False"), (1000, "True")]:  # MiniLM: ~22M elements, far below 2^28
        out = tmp_path / f"out-{start_up}"
        result = subprocess.run([sys.executable, "-c", code, str(start_up), str(minilm_bf16.base), str(delta[0]),
                                 str(out)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == started
        rebuilt = sorted(out.glob("*.safetensors"))
        assert rebuilt and all(file.read_bytes() == (minilm_bf16.finetuned / file.name).read_bytes()
                               for file in rebuilt)
