"""Checkpoint sources: where a build reads tensors from, behind one interface.

A source lists its tensors (name -> ``TensorInfo``) and reads any element range of one of them as raw
unsigned integers. ``open_source`` accepts:

- a ``.safetensors`` file, or a ``torch.save`` file (``.bin``, ``.pt``: ``checkpoints.pickled``);
- a model directory: ``model.safetensors.index.json`` with its shards (the index's weight map decides
  which shard holds which tensor; tensors in a shard but not in the map are ignored), or
  ``model.safetensors``, or else every ``*.safetensors`` file in it; without safetensors files, the same
  with ``pytorch_model.bin.index.json``, ``pytorch_model.bin`` or ``*.bin``/``*.pt`` files;
- a Hub model ``hf://org/name[@revision][/folder or file.safetensors]`` (or the bare repo id
  ``org/name[@revision]``): headers are read with HTTP range requests, and each
  shard is downloaded through huggingface_hub's cache when the build first reads from it, at the commit
  sha the revision resolved to when the source was opened;
- a state dict (name -> torch tensor or numpy array) or an ``nn.Module`` (its ``state_dict()``).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import strict_json
from ..errors import SourceError
from ..names import mapped
from .base import INDEX, UNSUPPORTED, WAY_OUT, Source, StateDictSource, assemble, check_supported
from .dtypes import dtype_named
from .safetensors_file import SafetensorsFile, TensorInfo

if TYPE_CHECKING:
    from huggingface_hub import HfApi

#: Elements ``apply`` and ``rebuild`` read per step (a multiple of 8, so chunks start on a byte of packed
#: bits): 4 Mi elements keeps the working set of the largest dtype around 100 MiB.
CHUNK_ELEMENTS = 1 << 22
SINGLE = "model.safetensors"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@\S+)?$")



class ShardedSource(Source):
    """Tensors spread over safetensors shards, each shard opened (or downloaded) on its first read.

    ``index`` is the text of the index file when the checkpoint has one (a delta records it), else None.
    """

    def __init__(self, label: str, tensors: dict[str, TensorInfo], shard_of: dict[str, str],
                 opener: Callable[[str], SafetensorsFile], provenance: dict[str, Any],
                 opened: dict[str, SafetensorsFile] | None = None, index: bytes | None = None):
        self.label, self.tensors, self.provenance, self.index = label, tensors, provenance, index
        self._shard_of, self._opener = shard_of, opener
        self._files: dict[str, SafetensorsFile] = dict(opened or {})
        self._lock = threading.Lock()

    def read(self, name: str, start: int, stop: int, buffer: np.ndarray) -> np.ndarray:
        return self._file(self._shard_of[name]).read(name, start, stop, buffer)

    def file(self, shard: str) -> SafetensorsFile:
        """The open file of ``shard`` (one of ``provenance["files"]``), opened or downloaded on first use."""
        return self._file(shard)

    def _file(self, shard: str) -> SafetensorsFile:
        with self._lock:
            if shard not in self._files:
                opened = self._opener(shard)
                for name, shard_name in self._shard_of.items():
                    if shard_name == shard and opened.tensors.get(name) != self.tensors[name]:
                        opened.close()
                        raise SourceError(f"{self.label}: shard {shard} does not hold tensor {name!r} as its header "
                                          "said when the build started; was the checkpoint changed meanwhile?")
                self._files[shard] = opened
            return self._files[shard]

    def check_unchanged(self) -> None:
        with self._lock:
            for opened in self._files.values():
                opened.check_unchanged()

    def hash_files(self) -> None:
        with self._lock:
            files = dict(self._files)
        for shard, opened in files.items():
            entry = self.provenance["files"].get(shard)
            if entry is not None and entry["sha256"] is None:
                entry["sha256"] = opened.sha256()

    def close(self) -> None:
        with self._lock:
            for opened in self._files.values():
                opened.close()
            self._files.clear()


class RenamedSource(Source):
    """Another source's tensors under the names ``names`` gives them (``submask.names.NameMap``)."""

    def __init__(self, inner: Source, names: Callable[[str], str]):
        new_names = mapped(inner.tensors, names, inner.label)
        self.inner, self._stored = inner, {new: name for name, new in new_names.items()}
        self.label, self.provenance, self.resident = inner.label, inner.provenance, inner.resident
        self.tensors = {new_names[name]: replace(info, name=new_names[name]) for name, info in inner.tensors.items()}

    def read(self, name: str, start: int, stop: int, buffer: np.ndarray) -> np.ndarray:
        return self.inner.read(self._stored[name], start, stop, buffer)

    def read_tensor(self, name: str, start: int, stop: int) -> Any:
        return self.inner.read_tensor(self._stored[name], start, stop)

    def check_unchanged(self) -> None:
        self.inner.check_unchanged()

    def hash_files(self) -> None:
        self.inner.hash_files()

    def close(self) -> None:
        self.inner.close()


def open_source(spec: Any, *, api: HfApi | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Source:
    """A Source for a path, a Hub model (``hf://org/name[@revision][/path]`` or ``org/name[@revision]``), a state
    dict, an ``nn.Module`` or a Source.

    ``api`` (an ``HfApi``, for its endpoint and token) and ``cache_dir`` apply to Hub repos only.
    """
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, str) and spec.startswith("hf://"):
        from ..hub.paths import parse_hub_ref

        target = parse_hub_ref(spec)
        return hub_source(target.repo_id, target.revision, api=api, cache_dir=cache_dir, path=target.path)
    if isinstance(spec, (str, os.PathLike)):
        if Path(spec).exists():
            return local_source(spec)
        if isinstance(spec, str) and REPO_ID.match(spec):
            repo, _, revision = spec.partition("@")
            return hub_source(repo, revision or None, api=api, cache_dir=cache_dir)
        raise SourceError(f"{spec}: no such file or directory (nor a Hub model hf://org/name[@revision][/path])")
    if isinstance(spec, Mapping):
        return StateDictSource(spec)
    if callable(getattr(spec, "state_dict", None)):
        return StateDictSource(spec.state_dict(), label=f"{type(spec).__name__} module")
    raise SourceError(f"cannot read a checkpoint from a {type(spec).__name__}: pass a .safetensors file, a model "
                      "directory, a Hub repo id, a state dict or an nn.Module")


def local_source(path: str | os.PathLike[str]) -> Source:
    """A .safetensors file, a ``torch.save`` file (.bin, .pt, .pth: ``checkpoints.pickled``) or a model directory
    of either (sharded with an index, or not). Formats submask does not read (GGUF, ONNX, TensorFlow, Flax) are
    named in the SourceError with the way out."""
    path = Path(path)
    if path.is_dir():
        root, available = path, {p.name for p in path.iterdir() if p.is_file()}
        if not _has_safetensors(available):
            return _pickled_dir(path, available)
        shards, weight_map, index = _layout(str(path), available, lambda: (path / INDEX).read_bytes())
    else:
        check_supported(path)
        from .pickled import PickleSource, is_pickle

        if path.is_file() and is_pickle(path):
            return PickleSource(str(path), path.parent, [path.name], None)
        root, shards, weight_map, index = path.parent, [path.name], None, None
    files: dict[str, SafetensorsFile] = {}
    try:
        for shard in shards:
            files[shard] = SafetensorsFile(root / shard)
    except BaseException:
        for opened in files.values():
            opened.close()
        raise
    tensors, shard_of = assemble(str(path), {shard: f.tensors for shard, f in files.items()}, weight_map)
    provenance = {"source": str(path), "revision": None,
                  "files": {shard: {"size": f.size, "mtime_ns": f.mtime_ns, "sha256": None}
                            for shard, f in files.items()}}
    # The shards are open already (their headers list the tensors), so the opener is never needed.
    return ShardedSource(str(path), tensors, shard_of, files.__getitem__, provenance, opened=files, index=index)


def _has_safetensors(available: set[str]) -> bool:
    return any(name.endswith(".safetensors") for name in available) or INDEX in available


def _pickled_dir(path: Path, available: set[str]) -> Source:
    """A model directory of ``torch.save`` files, or a SourceError that names what the directory holds."""
    from .pickled import PICKLE_INDEX, PICKLE_SINGLE, PICKLE_SUFFIXES, PickleSource

    if not any(name.endswith(PICKLE_SUFFIXES) or name == PICKLE_INDEX for name in available):
        others = sorted(name for name in available if Path(name).suffix.lower() in UNSUPPORTED)
        if others:
            raise SourceError(f"{path}: holds {UNSUPPORTED[Path(others[0]).suffix.lower()]} ({others[0]}) but no "
                              f"safetensors or torch.save weights; {WAY_OUT}")
    shards, weight_map, _ = _layout(str(path), available, lambda: (path / PICKLE_INDEX).read_bytes(),
                                    PICKLE_INDEX, PICKLE_SINGLE, PICKLE_SUFFIXES)
    return PickleSource(str(path), path, shards, weight_map)


def hub_source(repo: str, revision: str | None = None, *, api: HfApi | None = None,
               cache_dir: str | os.PathLike[str] | None = None, path: str = "") -> ShardedSource:
    """A Hub model repo at ``revision`` (default branch if None), pinned to the commit it resolves to now;
    ``path`` names a folder in it holding the model, or one ``.safetensors`` file."""
    from ..hub.paths import HubPath
    from ..hub.remote import Remote

    token = api.token if api and isinstance(api.token, str) else None
    remote = Remote(repo, endpoint=api.endpoint if api else None, token=token,
                    cache_dir=None if cache_dir is None else os.fspath(cache_dir))
    label = HubPath(repo, path, revision).url
    sha = remote.commit(revision)
    with remote.errors(revision=sha):
        info = remote.api.model_info(repo, revision=sha, files_metadata=True)
    single = path.rsplit("/", 1)[-1] if path.endswith(".safetensors") else None
    prefix = (path[:-len(single)] if single else path + "/") if path else ""
    siblings = {s.rfilename[len(prefix):]: s for s in info.siblings or [] if s.rfilename.startswith(prefix)}

    def download(filename: str) -> Path:
        return remote.download(prefix + filename, sha)

    if single is not None and single not in siblings:
        raise SourceError(f"{label}: no such file in the repo at commit {sha}")
    shards, weight_map, index = ([single], None, None) if single else _layout(
        label, set(siblings), lambda: download(INDEX).read_bytes())
    headers = {}
    for shard in shards:
        with remote.errors(path=prefix + shard, revision=sha):
            parsed = remote.api.parse_safetensors_file_metadata(repo, prefix + shard, revision=sha)
        headers[shard] = {name: TensorInfo(name, dtype_named(t.dtype, f"{label}, {shard}, tensor {name!r}: "),
                                           tuple(t.shape)) for name, t in parsed.tensors.items()}
    tensors, shard_of = assemble(label, headers, weight_map)
    files = {shard: {"size": siblings[shard].size,
                     "sha256": _lfs_sha256(siblings[shard])} for shard in shards}
    provenance = {"source": repo, "revision": sha, "requested_revision": revision, "files": files,
                  **({"path": path} if path else {})}
    return ShardedSource(label, tensors, shard_of, lambda shard: SafetensorsFile(download(shard)), provenance,
                         index=index)


def _lfs_sha256(sibling: Any) -> str | None:
    """The SHA-256 the Hub lists for an LFS file (None for a file kept in git)."""
    return sibling.lfs.sha256 if sibling.lfs is not None else None


def _layout(label: str, available: set[str], read_index: Callable[[], bytes], index_name: str = INDEX,
            single: str = SINGLE, suffixes: tuple[str, ...] = (".safetensors",)
            ) -> tuple[list[str], dict[str, str] | None, bytes | None]:
    """Which shards make up a checkpoint, its weight map and the index file's bytes (None without an index).

    ``index_name``, ``single`` and ``suffixes`` name the files of the format looked for (safetensors by default).
    """
    if index_name in available:
        index = read_index()
        try:
            weight_map = strict_json.loads(index)["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{label}: {index_name} is not a valid index ({type(exc).__name__}: {exc}); "
                              "it needs a 'weight_map' of tensor name -> shard file") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise SourceError(f"{label}: {index_name} has no valid 'weight_map' (tensor name -> shard file)")
        shards = list(dict.fromkeys(weight_map.values()))
        missing = [shard for shard in shards if shard not in available]
        if missing:
            raise SourceError(f"{label}: shard {missing[0]} listed in {index_name} is missing"
                              f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
                              "download every shard the index names")
        return shards, weight_map, index
    if single in available:
        return [single], None, None
    shards = sorted(name for name in available if name.endswith(suffixes))
    if not shards:
        raise SourceError(f"{label}: no {INDEX}, {SINGLE} or other .safetensors file found (nor torch.save "
                          "weights); save the model with safetensors")
    return shards, None, None


__all__ = ["CHUNK_ELEMENTS", "INDEX", "SINGLE", "UNSUPPORTED", "WAY_OUT", "RenamedSource", "ShardedSource",
           "Source", "StateDictSource", "assemble", "check_supported", "hub_source", "local_source",
           "open_source"]
