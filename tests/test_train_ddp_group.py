"""Sparse mode under DistributedDataParallel without a process_group: restrict takes the initialised default
group (else the ranks drift apart), works when every parameter is partly masked, and refuses a model DDP
already wraps. 2 gloo processes on CPU (tests/train_ddp_group_worker.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
distributed = pytest.importorskip("torch.distributed")
if not distributed.is_available() or not distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)
from ranks import run_ranks  # noqa: E402

pytestmark = pytest.mark.slow  # several processes or a whole demo run: `make test-slow` (CI runs it)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp-group")
    worker = Path(__file__).with_name("train_ddp_group_worker.py")
    run_ranks(lambda port: [sys.executable, str(worker), str(out), str(port)], timeout=300)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_ranks_stay_in_step_without_a_process_group(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    for result in ranks:
        assert result["broken"] == 0 and result["moved"] > 0.9 * result["masked"]


def test_every_parameter_partly_masked_leaves_ddp_the_smallest_in_dense_mode(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["dense"] == ranks[1]["dense"] == ["bias"]  # the 4 biases of the last layer


def test_a_model_ddp_already_wraps_is_refused(ranks: list[dict[str, Any]]) -> None:
    for result in ranks:
        assert "before it wraps the model" in result["refusal"]
