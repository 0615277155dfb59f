"""The .smask file layer (FORMAT.md): header, container, codecs per tensor, reader and writer, local files only.

Open masks through ``submask.open`` / ``submask.load`` (``submask.io``), which also take Hub URLs and masks in
memory; this package reads and writes the files themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

#: where each name lives, imported on first use: reading a mask needs no writer (nor its atomic-write helpers)
_HOMES = {
    "header": "TensorEntry ValuesEntry",
    "reader": "INDEX_SUFFIX MaskFile local_mask_path",
    "values": "TensorValues",
    "writer": "MaskWriter",
}

if TYPE_CHECKING:
    from .header import TensorEntry, ValuesEntry
    from .reader import INDEX_SUFFIX, MaskFile, local_mask_path
    from .values import TensorValues
    from .writer import MaskWriter

__all__ = ["INDEX_SUFFIX", "MaskFile", "MaskWriter", "TensorEntry", "TensorValues", "ValuesEntry", "local_mask_path"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _HOMES)
