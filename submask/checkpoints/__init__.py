"""Reading model checkpoints: safetensors files, sharded model dirs, Hub repos, state dicts and modules.

Modules: ``safetensors_file`` (one file: validated header, raw lazy reads), ``sources`` (everything a build or
``apply`` reads from, behind one ``Source`` interface), ``dtypes`` (every safetensors dtype, fp8 decoding),
``layout`` (a file's bytes as its header lays them out, for deltas).
Used by ``submask.build`` (diffs) and ``submask.apply`` (sparse-update models), and by the benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

#: where each name lives, imported on first use (a mask's reader needs only ``layout``, not the sources)
_HOMES = {
    "dtypes": "DTYPES DType dtype_named",
    "safetensors_file": "SafetensorsFile TensorInfo",
    "sources": "Source StateDictSource hub_source local_source open_source",
}

if TYPE_CHECKING:
    from .dtypes import DTYPES, DType, dtype_named
    from .safetensors_file import SafetensorsFile, TensorInfo
    from .sources import Source, StateDictSource, hub_source, local_source, open_source

__all__ = ["DTYPES", "DType", "SafetensorsFile", "Source", "StateDictSource", "TensorInfo", "dtype_named",
           "hub_source", "local_source", "open_source"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _HOMES)
