"""UpdateTracker on a model sharded by FSDP2's fully_shard: 2 gloo processes on CPU (tests/tracker_fsdp_worker.py),
each comparing its own shards; the counts summed and the bits gathered over the ranks are those of the full
parameters."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from ranks import run_ranks

pytestmark = pytest.mark.slow  # several processes or a whole demo run: `make test-slow` (CI runs it)

pytest.importorskip("torch")
pytest.importorskip("transformers")
distributed = pytest.importorskip("torch.distributed")
if not distributed.is_available() or not distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("tracker-fsdp")
    worker = Path(__file__).with_name("tracker_fsdp_worker.py")
    run_ranks(lambda port: [sys.executable, str(worker), str(out), str(port)], timeout=300)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_density_of_sharded_parameters_is_that_of_the_full_ones(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        assert report["sharded"]
        assert report["tracker"] == report["expected"]
        assert report["given"] == report["expected"]  # a full reference: each rank took its rows
    expected = reports[0]["expected"]
    assert 0 < expected["overall"] < 1 and expected["tensors"]["1.weight"] == 3 / 24
    assert expected["tensors"]["0.weight"] > 0 and expected["tensors"]["2.bias"] > 0


def test_the_gathered_mask_is_that_of_the_full_parameters(reports: list[dict[str, Any]]) -> None:
    """mask() on every rank, save() written once, metadata (stats, ladder, fingerprint) as a build of the full
    parameters has them."""
    for report in reports:
        assert report["mask_equal"] and report["stats_equal"] and report["model_equal"] and report["saved_equal"]
    assert reports[0]["count"] == reports[1]["count"] > 0


def test_the_callback_writes_the_gathered_mask_into_the_checkpoint(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        assert report["callback"] == ["checkpoint-3/update.smask"]


def test_a_full_reference_of_another_shape_is_refused(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        assert "'0.weight' has shape [5, 16], the model's [24, 16]" in report["wrong_reference"]
