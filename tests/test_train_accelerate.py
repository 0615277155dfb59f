"""``accelerate launch`` with 2 CPU processes (gloo) runs a Trainer on a model restricted before the Trainer
(and torch.distributed) exist: every entry outside the mask keeps its bits on every rank, the ranks stay in
step, and sparse mode works with every parameter partly masked (tests/train_accelerate_script.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")
distributed = pytest.importorskip("torch.distributed")
if not distributed.is_available() or not distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)
from ranks import run_ranks  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("accelerate")
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    script = Path(__file__).with_name("train_accelerate_script.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    run_ranks(lambda port: [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                            str(script), str(out)], timeout=600, env=env)
    return {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_every_rank_keeps_the_mask_and_the_ranks_stay_in_step(ranks: dict[str, dict[str, Any]], mode: str) -> None:
    results = [ranks[f"{mode}-rank{rank}"] for rank in (0, 1)]
    for result in results:
        assert result["world"] == 2
        assert result["broken"] == 0, f"{mode}: {result['broken']} entries outside the mask moved"
        assert result["moved"] > 0.9 * result["masked"]
    assert results[0]["checksum"] == results[1]["checksum"]
