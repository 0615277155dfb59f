"""Restricted finetuning under FSDP2 beyond the plain case: HSDP (a 2-D mesh, 4 gloo processes), a
MixedPrecisionPolicy (bf16 compute, fp32 reduce) and CPU offload (2 gloo processes), dense and sparse mode
(tests/train_fsdp_variants_worker.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
distributed = pytest.importorskip("torch.distributed")
if not distributed.is_available() or not distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)
from ranks import run_ranks  # noqa: E402

RUNS = {"hsdp": 4, "mixed,offload": 2}  # setups -> processes


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("fsdp-variants")
    worker = Path(__file__).with_name("train_fsdp_variants_worker.py")
    for setups, world in RUNS.items():
        run_ranks(lambda port, world=world, setups=setups: [sys.executable, str(worker), str(out), str(port),
                                                            str(world), setups], timeout=600)
    return {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["hsdp", "mixed", "offload"])
def test_every_rank_keeps_the_mask_and_both_modes_train_the_same(results: dict[str, dict[str, Any]],
                                                                  setup: str) -> None:
    world = RUNS["hsdp" if setup == "hsdp" else "mixed,offload"]
    checksums = set()
    for mode in ("dense", "sparse"):
        for rank in range(world):
            result = results[f"{setup}-{mode}-rank{rank}"]
            assert result["broken"] == 0, f"{setup} {mode} rank {rank}: entries outside the mask moved"
            assert result["moved"] > 0.9 * result["masked"]
            checksums.add(round(result["checksum"], 6))
    assert len(checksums) == 1, checksums  # every rank in step, and sparse trains what dense does
