"""PyTorch pickle checkpoints (``pytorch_model.bin``, ``.pt``, ``.pth``), single or sharded with an index.

Each file is opened with ``torch.load(weights_only=True, mmap=True)``: the tensors stay in the file, mapped, and
only the pages a build touches are read. At most ``OPEN_SHARDS`` files are held open at a time, so memory is
bounded by one or two shards, not the model. A pickle that needs more than tensors and plain containers is
refused (``weights_only``), never executed.

Pickles cannot be rebuilt byte for byte from their tensors (their bytes hold pickled structure and storage
layout), so a delta (``build --values``) refuses them; ``apply`` writes safetensors files instead
(``safetensors_shards``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from .base import WAY_OUT, Source, StateDictSource, assemble, check_supported
from .safetensors_file import TensorInfo

PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
OPEN_SHARDS = 2  # a build's threads may straddle two consecutive shards
ZIP_MAGIC, PICKLE_MAGIC = b"PK\x03\x04", b"\x80"


def is_pickle(path: Path) -> bool:
    """Whether a file starts as ``torch.save`` writes (a zip archive, or a legacy pickle)."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    return start == ZIP_MAGIC or start[:1] == PICKLE_MAGIC


def load_pickle(path: Path) -> dict[str, Any]:
    """The state dict (name -> torch tensor) in a ``torch.save`` file, memory-mapped, with ``weights_only``."""
    import pickle

    import torch

    check_supported(path)
    if not is_pickle(path):
        raise SourceError(f"{path}: not a torch.save file (nor safetensors); {WAY_OUT}")
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            loaded = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{path}: this pickle needs more than tensors to load ({reason[:200]}); submask loads "
                          "pickles with weights_only=True only. If you trust the file, load it yourself and save "
                          "its state dict with safetensors.torch.save_file") from None
    except Exception as exc:  # torch raises many kinds on a damaged archive; none must escape raw
        raise SourceError(f"{path}: not a readable torch.save file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]  # a training checkpoint that wraps the weights (Lightning and others)
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        kind = type(loaded).__name__ if not isinstance(loaded, Mapping) else "a dict with values other than tensors"
        raise SourceError(f"{path}: holds {kind}, not a state dict of tensors; save model.state_dict()")
    return {str(name): value if value.is_contiguous() else value.contiguous() for name, value in loaded.items()}


class PickleSource(Source):
    """Tensors spread over ``torch.save`` files, each mapped on first read; ``files`` are the shard file names."""

    def __init__(self, label: str, root: Path, files: list[str], weight_map: dict[str, str] | None):
        self.label, self.root, self.files = label, root, files
        self._stats = {shard: os.stat(root / shard) for shard in files}
        self.provenance = {"source": label, "revision": None, "format": "pytorch pickle",
                           "files": {shard: {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": None}
                                     for shard, st in self._stats.items()}}
        headers = {shard: StateDictSource(load_pickle(root / shard), label=str(root / shard)).tensors
                   for shard in files}
        self.tensors, self._shard_of = assemble(label, headers, weight_map, PICKLE_INDEX)
        self._open: OrderedDict[str, StateDictSource] = OrderedDict()
        self._lock = threading.Lock()

    def shard_names(self, shard: str) -> list[str]:
        """The tensors this source takes from ``shard``, in the source's order."""
        return [name for name, owner in self._shard_of.items() if owner == shard]

    def read(self, name: str, start: int, stop: int, buffer: np.ndarray) -> np.ndarray:
        return self._shard(self._shard_of[name]).read(name, start, stop, buffer)

    def _shard(self, shard: str) -> StateDictSource:
        with self._lock:
            if shard not in self._open:
                path = self.root / shard
                self._open[shard] = opened = StateDictSource(load_pickle(path), label=str(path))
                changed = [n for n in self.shard_names(shard) if opened.tensors.get(n) != self.tensors[n]]
                if changed:
                    raise SourceError(f"{path}: no longer holds tensor {changed[0]!r} as it did when the build "
                                      "started; was the checkpoint changed meanwhile?")
                while len(self._open) > OPEN_SHARDS:
                    self._open.popitem(last=False)
            self._open.move_to_end(shard)
            return self._open[shard]

    def check_unchanged(self) -> None:
        for shard, before in self._stats.items():
            try:
                now = os.stat(self.root / shard)
            except OSError as exc:
                raise SourceError(f"{self.root / shard}: the checkpoint went away during the build "
                                  f"({exc.strerror}); build again once it is no longer being written") from None
            if (now.st_size, now.st_mtime_ns, now.st_ino) != (before.st_size, before.st_mtime_ns, before.st_ino):
                raise SourceError(f"{self.root / shard}: the checkpoint changed during the build; build again "
                                  "once it is no longer being written")

    def hash_files(self) -> None:
        for shard, entry in self.provenance["files"].items():
            if entry["sha256"] is None:
                digest = hashlib.sha256()
                with open(self.root / shard, "rb") as handle:
                    while piece := handle.read(8 << 20):
                        digest.update(piece)
                entry["sha256"] = digest.hexdigest()

    def close(self) -> None:
        with self._lock:
            self._open.clear()


def safetensors_shards(source: PickleSource) -> tuple[list[tuple[str, bytes, list[str]]], bytes | None]:
    """How ``apply`` writes a pickle checkpoint as safetensors: per shard (file name, raw header with its length
    prefix, tensor names in byte order), and the index to write beside them (None for a single file)."""
    shards = []
    renamed = {shard: _safetensors_name(shard, len(source.files)) for shard in source.files}
    for shard in source.files:
        names = source.shard_names(shard)
        shards.append((renamed[shard], header_bytes([source.tensors[name] for name in names]), names))
    if len(shards) == 1:
        return shards, None
    weight_map = {name: renamed[shard] for shard in source.files for name in source.shard_names(shard)}
    total = sum(info.nbytes for info in source.tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    return shards, json.dumps(index, indent=2).encode("utf-8")


def header_bytes(infos: list[TensorInfo]) -> bytes:
    """A safetensors header (length prefix included) laying out ``infos`` back to back in this order."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for info in infos:
        header[info.name] = {"dtype": info.dtype.name, "shape": list(info.shape),
                             "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def _safetensors_name(shard: str, count: int) -> str:
    stem = shard.rsplit(".", 1)[0]
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model"):]
    return f"{stem}.safetensors" if count > 1 or stem != "model" else "model.safetensors"
