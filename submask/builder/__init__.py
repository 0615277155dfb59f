"""Masks from checkpoint diffs: ``build_mask(base, finetuned)`` sets a bit where a value changed.

Modules: ``criteria`` (exact/atol/rtol and the tolerance ladder, defined in its docstring), ``kernels`` (the
fused numba compare, optional), ``backends`` (CPU and torch/CUDA compare), ``pipeline`` (opening and matching
the checkpoints, the build's front door), ``run`` (the streaming, multi-threaded compare of a build), ``sinks``
(where its finished tensors go), ``values`` (what a build with values, a delta, adds). Checkpoints are read
through ``submask.checkpoints``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

#: where each name lives, imported on first use: a rebuild needs ``values`` only, not the build pipeline
_HOMES = {"criteria": "LADDER_ATOL Criterion", "pipeline": "build_mask count_changes match_tensors"}

if TYPE_CHECKING:
    from .criteria import LADDER_ATOL, Criterion
    from .pipeline import build_mask, count_changes, match_tensors

__all__ = ["LADDER_ATOL", "Criterion", "build_mask", "count_changes", "match_tensors"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _HOMES)
