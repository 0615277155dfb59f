"""What every checkpoint source is (``Source``), the in-memory one (``StateDictSource``), how shards' tensor
lists join into one (``assemble``) and the weight formats submask does not read. ``sources`` opens them; this
module imports none of the file formats, so each format's module (``pickled``) can build on it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import SourceError
from .dtypes import dtype_of_array
from .safetensors_file import TensorInfo

INDEX = "model.safetensors.index.json"  # a sharded safetensors checkpoint's index
_S = TypeVar("_S", bound="Source")


class Source:
    """A checkpoint to compare: ``label``, ``tensors``, ``provenance`` and lazy ``read``.

    ``resident`` names the torch device (other than the CPU) the tensors already live on, else None.
    """

    label: str
    tensors: dict[str, TensorInfo]
    provenance: dict[str, Any]
    resident: str | None = None

    def read(self, name: str, start: int, stop: int, buffer: np.ndarray) -> np.ndarray:
        """Flat elements ``[start, stop)`` of ``name`` as raw unsigned ints; may be read into ``buffer``
        (a uint8 scratch array of at least ``(stop - start) * itemsize`` bytes)."""
        raise NotImplementedError

    def read_tensor(self, name: str, start: int, stop: int) -> Any:
        """Flat elements ``[start, stop)`` of ``name`` as a torch signed-int view on the device the tensor
        lives on (no copy), for sources that hold torch tensors; None for the others."""
        return None

    def check_unchanged(self) -> None:
        """SourceError if the checkpoint changed since it was opened (files only; cheap: no data is read)."""

    def hash_files(self) -> None:
        """Fill in the provenance ``sha256`` of the files opened so far that have none (local files)."""

    def close(self) -> None:
        """Release open files."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StateDictSource(Source):
    """A mapping of names to torch tensors (any device) or numpy arrays, read slice by slice."""

    def __init__(self, state: Mapping[str, Any], label: str = "state dict"):
        self.label, self._state = label, state
        self.provenance = {"source": label, "revision": None, "files": {}}
        self.tensors = {}
        for name, value in state.items():
            if not hasattr(value, "dtype") or not hasattr(value, "shape"):
                raise SourceError(f"{label}, tensor {name!r}: {type(value).__name__} is not a tensor or array")
            if getattr(value, "is_meta", False):
                raise SourceError(f"{label}, tensor {name!r} is on the meta device and holds no values: load the "
                                  "weights (or materialise the model) before comparing it")
            self.tensors[name] = TensorInfo(name, dtype_of_array(value.dtype, f"{label}, tensor {name!r}: "),
                                            tuple(int(d) for d in value.shape))
        devices = [str(value.device) for value in state.values()
                   if not isinstance(value, np.ndarray) and str(getattr(value, "device", "cpu")) != "cpu"]
        self.resident = devices[0] if devices else None

    def read(self, name: str, start: int, stop: int, buffer: np.ndarray) -> np.ndarray:
        value, dtype = self._state[name], self.tensors[name].dtype
        if isinstance(value, np.ndarray):
            return value.reshape(-1)[start:stop].view(dtype.raw)
        return self.read_tensor(name, start, stop).cpu().numpy().view(dtype.raw)

    def read_tensor(self, name: str, start: int, stop: int) -> Any:
        value = self._state[name]
        if isinstance(value, np.ndarray):
            return None
        import torch

        return value.detach().reshape(-1)[start:stop].view(getattr(torch, self.tensors[name].dtype.signed.name))


#: Weight formats submask does not read, by file suffix: what they are and the way out.
UNSUPPORTED = {
    ".gguf": "a GGUF file (llama.cpp)", ".onnx": "an ONNX model", ".h5": "a TensorFlow/Keras checkpoint",
    ".keras": "a Keras model", ".pb": "a TensorFlow graph", ".tflite": "a TensorFlow Lite model",
    ".msgpack": "a Flax checkpoint",
}
WAY_OUT = ("submask reads safetensors and torch.save (.bin, .pt) checkpoints: load the model in PyTorch "
           "(transformers' from_pretrained reads most formats) and save it with save_pretrained() or "
           "safetensors.torch.save_file")


def check_supported(path: Path) -> None:
    """SourceError naming the format of a weights file submask cannot read, with the way out."""
    kind = UNSUPPORTED.get(path.suffix.lower())
    if kind is None and path.is_file():
        with open(path, "rb") as handle:
            kind = "a GGUF file (llama.cpp)" if handle.read(4) == b"GGUF" else None
    if kind is not None:
        raise SourceError(f"{path}: {kind}; {WAY_OUT}")


def assemble(label: str, headers: dict[str, dict[str, TensorInfo]], weight_map: dict[str, str] | None,
             index_name: str = INDEX) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensors and the shard of each, from shard headers and the index's weight map (if any)."""
    if weight_map is not None:
        absent = [(name, shard) for name, shard in weight_map.items() if name not in headers[shard]]
        if absent:
            raise SourceError(f"{label}: {index_name} puts tensor {absent[0][0]!r} in {absent[0][1]}, which does "
                              f"not hold it ({len(absent)} such tensor(s)); the index and shards do not belong "
                              "together")
        return {name: headers[shard][name] for name, shard in weight_map.items()}, dict(weight_map)
    tensors: dict[str, TensorInfo] = {}
    shard_of: dict[str, str] = {}
    for shard, infos in headers.items():
        for name, info in infos.items():
            if name in shard_of:
                raise SourceError(f"{label}: tensor {name!r} is in both {shard_of[name]} and {shard}; "
                                  f"add a {index_name} to say which one to use")
            tensors[name], shard_of[name] = info, shard
    return tensors, shard_of
