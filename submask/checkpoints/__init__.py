"""Reading model checkpoints: safetensors files, sharded model dirs, Hub repos, state dicts and modules.

Modules: ``safetensors_file`` (one file: validated header, raw lazy reads), ``sources`` (everything a build or
``apply`` reads from, behind one ``Source`` interface), ``dtypes`` (every safetensors dtype, fp8 decoding),
``layout`` (a file's bytes as its header lays them out, for deltas).
Used by ``submask.build`` (diffs) and ``submask.apply`` (sparse-update models), and by the benchmarks.
"""

from .dtypes import DTYPES, DType, dtype_named
from .safetensors_file import SafetensorsFile, TensorInfo
from .sources import Source, StateDictSource, hub_source, local_source, open_source

__all__ = ["DTYPES", "DType", "SafetensorsFile", "Source", "StateDictSource", "TensorInfo", "dtype_named",
           "hub_source", "local_source", "open_source"]
