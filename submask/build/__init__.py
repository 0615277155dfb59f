"""Masks from checkpoint diffs: ``build_mask(base, finetuned)`` sets a bit where a value changed.

Modules: ``sources`` (safetensors files, model dirs, Hub repos, state dicts), ``safetensors_file`` (raw lazy
reads), ``dtypes`` (every safetensors dtype, fp8 decoding), ``criteria`` (exact/atol/rtol and the tolerance
ladder, defined in its docstring), ``kernels`` (the fused numba compare, optional), ``backends`` (CPU and
torch/CUDA compare), ``pipeline`` (the streaming, multi-threaded build).
"""

from .criteria import LADDER_ATOL, Criterion
from .pipeline import build_mask, match_tensors
from .sources import Source, StateDictSource, hub_source, local_source, open_source

__all__ = ["LADDER_ATOL", "Criterion", "Source", "StateDictSource", "build_mask", "hub_source", "local_source",
           "match_tensors", "open_source"]
