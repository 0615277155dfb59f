"""The checkpoint pairs of the delta bench (``bench_delta``): synthetic finetunes in fp32, fp16 and bf16 with
Adam-like and SGD-like updates in iid, row, column and whole-tensor patterns, and the real MiniLM finetunes.

A synthetic pair starts from float32 weights N(0, 0.02), a tensor per entry of ``SHAPES``, saved in its dtype
(round to nearest). Its finetune moves a share of the weights (the pattern picks them) in float32 and rounds
to the dtype again:

- ``adam``: a small-lr Adam update: every picked weight moves by about ``lr`` (sign and size from a unit
  normal), whatever its magnitude (Adam's update is normalized per coordinate);
- ``sgd``: a larger-lr SGD update: ``lr`` times a low-rank gradient (outer products of row and column
  factors, plus noise), so moves scale with rows and columns as real gradients do.

In a low-precision dtype a move under half an ulp rounds back, so fewer values change than were picked.

``LARGE_PAIRS`` repeat the shapes (``layers`` times) for pairs of a few hundred MB, where throughput rather than
fixed costs shows; ``cached_pair`` keeps them on disk between runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPES = [(768, 768), (768, 3072), (3072, 768), (768, 768), (768, 2304), (2304, 768)]
NUMPY = {"F32": np.float32, "F16": np.float16}


@dataclass(frozen=True)
class Pair:
    """One synthetic pair: ``dtype`` (F32, F16, BF16), ``optimizer`` (adam, sgd), ``pattern`` (iid, rows,
    columns, tensors: whole tensors trained, the rest frozen), ``share`` of the weights picked, ``lr``; ``SHAPES``
    repeated ``layers`` times."""

    dtype: str
    optimizer: str
    pattern: str
    share: float
    lr: float
    layers: int = 1

    @property
    def label(self) -> str:
        label = f"{self.dtype} {self.optimizer} {self.pattern} {self.share:.0%}"
        return label if self.layers == 1 else f"{label} x{self.layers}"


PAIRS = [
    Pair("BF16", "adam", "iid", 0.3, 1e-4),
    Pair("BF16", "adam", "rows", 0.25, 1e-4),
    Pair("BF16", "sgd", "columns", 0.2, 3e-3),
    Pair("F16", "adam", "iid", 0.3, 1e-5),
    Pair("F16", "sgd", "rows", 0.25, 3e-3),
    Pair("F32", "adam", "columns", 0.25, 1e-5),
    Pair("F32", "sgd", "tensors", 0.5, 3e-3),
]

# 12 x 9.4 M weights: 227 MB a side in bf16 (not in bench_delta: zstd -19 of its peers would take minutes)
LARGE_PAIRS = [Pair("BF16", "adam", "iid", 0.3, 1e-4, layers=12)]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "submask-bench" / "pairs"


def _round(weights: np.ndarray, dtype: str) -> np.ndarray:
    """The dtype's bytes of float32 ``weights`` (round to nearest even)."""
    if dtype in NUMPY:
        return weights.astype(NUMPY[dtype])
    import torch

    return torch.from_numpy(weights).to(torch.bfloat16).view(torch.int16).numpy()


def _picked(rng: np.random.Generator, shape: tuple[int, int], pattern: str, share: float, index: int) -> np.ndarray:
    if pattern == "iid":
        return rng.random(shape) < share
    if pattern == "rows":
        return np.broadcast_to((rng.random(shape[0]) < share)[:, None], shape)
    if pattern == "columns":
        return np.broadcast_to((rng.random(shape[1]) < share)[None, :], shape)
    if pattern == "tensors":
        return np.full(shape, index % round(1 / share) == 0)
    raise ValueError(f"unknown pattern {pattern!r}")


def _move(rng: np.random.Generator, shape: tuple[int, int], optimizer: str, lr: float) -> np.ndarray:
    if optimizer == "adam":
        return (lr * rng.standard_normal(shape)).astype(np.float32)
    rows, columns = rng.standard_normal((shape[0], 4)), rng.standard_normal((4, shape[1]))
    gradient = rows @ columns / 2 + 0.1 * rng.standard_normal(shape)
    return (lr * gradient).astype(np.float32)


def write_pair(root: Path, pair: Pair, seed: int = 0) -> tuple[Path, Path]:
    """base.safetensors and finetuned.safetensors of ``pair`` under ``root``."""
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(seed)
    base, finetuned = {}, {}
    for index, shape in enumerate(SHAPES * pair.layers):
        weights = rng.normal(0.0, 0.02, size=shape).astype(np.float32)
        moved = np.where(_picked(rng, shape, pair.pattern, pair.share, index),
                         weights - _move(rng, shape, pair.optimizer, pair.lr), weights)
        name = f"layers.{index}.weight"
        for state, values in ((base, weights), (finetuned, moved)):
            tensor = torch.from_numpy(_round(values, pair.dtype))
            state[name] = tensor.view(torch.bfloat16) if pair.dtype == "BF16" else tensor
    root.mkdir(parents=True, exist_ok=True)
    save_file(base, root / "base.safetensors", metadata={"format": "pt"})
    save_file(finetuned, root / "finetuned.safetensors", metadata={"format": "pt"})
    return root / "base.safetensors", root / "finetuned.safetensors"


def cached_pair(pair: Pair, seed: int = 0) -> tuple[Path, Path]:
    """``write_pair`` into the bench's cache (``CACHE``), written once: later runs reuse the files."""
    root = CACHE / f"{pair.label.replace(' ', '-').replace('%', '')}-seed{seed}"
    if not (root / "finetuned.safetensors").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=CACHE, prefix=".writing-"))
        try:
            write_pair(staging, pair, seed)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root / "base.safetensors", root / "finetuned.safetensors"


def write_minilm_pair(root: Path, dtype: str) -> tuple[Path, Path]:
    """The MiniLM pair of the tests (``tests/minilm_fixtures.py``: 3 AdamW steps) as model.safetensors files."""
    from submask.examples import minilm

    lr = 2e-5 if dtype == "bfloat16" else 1e-5
    base = Path(minilm.write_base(root / "base", dtype=dtype)) / "model.safetensors"
    finetuned = Path(minilm.finetune(root / "finetuned", steps=3, lr=lr, seed=0, dtype=dtype)) / "model.safetensors"
    return base, finetuned
