"""The README's "Python in ten lines" block, run as written on MiniLM checkpoints (the push goes to the local Hub
server), in a fresh interpreter so that huggingface_hub reads HF_ENDPOINT and HF_TOKEN as a user's would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import submask

pytest.importorskip("torch")
pytest.importorskip("transformers")

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python in ten lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no python block under 'Python in ten lines'"
    return match.group(1)


def test_readme_python_example_runs_as_written(minilm_bf16, hub_server, hub_api, tmp_path: Path) -> None:
    shutil.copytree(minilm_bf16.base, tmp_path / "base")
    shutil.copytree(minilm_bf16.finetuned, tmp_path / "rl")
    other = submask.build_mask(tmp_path / "base", tmp_path / "rl", tmp_path / "other.smask", atol=1e-3).path
    submask.combine_files("not", [other], tmp_path / "dpo.smask")
    submask.combine_files("xor", [other, tmp_path / "dpo.smask"], tmp_path / "seed2.smask")
    repo = hub_api.create_repo("org/model", exist_ok=True).repo_id
    env = {**os.environ, "HF_ENDPOINT": hub_server.endpoint, "HF_TOKEN": hub_server.token,
           "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert [p.path for p in submask.list_masks(repo, endpoint=hub_server.endpoint, token=hub_server.token)] \
            == ["masks/rl.smask"]
    finally:
        hub_api.delete_repo(repo, missing_ok=True)
    printed = done.stdout.splitlines()
    count, numel = map(int, printed[0].split()[:2])
    assert (count, numel) == (submask.load(tmp_path / "rl.smask").count, submask.load(tmp_path / "rl.smask").numel)
    assert (tmp_path / "sparse-rl" / "model.safetensors").exists()
