"""Masks from checkpoint diffs: ``build_mask(base, finetuned)`` sets a bit where a value changed.

Modules: ``criteria`` (exact/atol/rtol and the tolerance ladder, defined in its docstring), ``kernels`` (the
fused numba compare, optional), ``backends`` (CPU and torch/CUDA compare), ``pipeline`` (the streaming,
multi-threaded build), ``sinks`` (where its finished tensors go), ``values`` (what a build with values, a delta,
adds). Checkpoints are read through ``submask.checkpoints``.
"""

from .criteria import LADDER_ATOL, Criterion
from .pipeline import build_mask, count_changes, match_tensors

__all__ = ["LADDER_ATOL", "Criterion", "build_mask", "count_changes", "match_tensors"]
