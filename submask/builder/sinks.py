"""Where a build's finished tensors go: a mask (and values) in memory, a MaskWriter, or only their counts.

``prepare`` runs on a worker thread (encoding releases the GIL), ``commit`` in tensor order on the writer
thread (``pipeline``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from ..format import MaskWriter
from ..format.diffs import Differences
from ..format.header import TensorEntry
from ..format.plane_coding import encode_pool
from ..format.tensors import encode_tensor
from ..format.values import TensorValues, encode_tensor_values
from ..mask import Mask, TensorMask
from ..metadata import MaskMetadata


class Sink(Protocol):
    """Where finished tensors go: ``prepare`` runs on a worker thread, ``commit`` in order on the writer, or
    both in the build's own thread when ``inline`` (they do no work worth a hand-off). A sink that
    ``takes_differences`` may be given a delta's values as ``Differences`` (taken in the compare pass)."""

    inline: bool
    takes_differences: bool

    def prepare(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int,
                values: TensorValues | Differences | None) -> Any: ...

    def commit(self, prepared: Any) -> None: ...


class _InMemory:
    """A sink that holds no resources and does no work worth a hand-off to the build's threads."""

    inline = True
    takes_differences = False

    def __enter__(self) -> _InMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class MemorySink(_InMemory):
    """Collects tensor masks (and values) into an in-memory Mask (the ``out=None`` case)."""

    def __init__(self, metadata: MaskMetadata):
        self.mask = Mask({}, metadata)
        self.values: dict[str, TensorValues] = {}

    def prepare(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int,
                values: TensorValues | Differences | None) -> tuple[str, TensorMask, TensorValues | None]:
        assert not isinstance(values, Differences)  # this sink does not take differences
        return name, TensorMask(shape, packed, ones), values

    def commit(self, prepared: tuple[str, TensorMask, TensorValues | None]) -> None:
        name, tensor, values = prepared
        self.mask.tensors[name] = tensor
        if values is not None:
            self.values[name] = values


class CountsSink(_InMemory):
    """Keeps only each tensor's changed count (``count_changes``)."""

    def __init__(self) -> None:
        self.changed: dict[str, int] = {}

    def prepare(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int,
                values: TensorValues | Differences | None) -> tuple[str, int]:
        return name, ones

    def commit(self, prepared: tuple[str, int]) -> None:
        name, ones = prepared
        self.changed[name] = ones


class FileSink:
    """Encodes on the workers and appends to a MaskWriter."""

    inline = False
    takes_differences = True

    def __init__(self, writer: MaskWriter):
        self.writer = writer

    def prepare(self, name: str, shape: tuple[int, ...], packed: np.ndarray, ones: int,
                values: TensorValues | Differences | None) -> tuple[TensorEntry, bytes, bytes | None]:
        if values is None:
            return (*encode_tensor(name, shape, packed, ones), None)
        mask = encode_pool().submit(encode_tensor, name, shape, packed, ones)  # beside the values, on another core
        record, values_payload = encode_tensor_values(name, values, ones, packed=packed, numel=math.prod(shape))
        entry, payload = mask.result()
        return replace(entry, values=record), payload, values_payload

    def commit(self, prepared: tuple[TensorEntry, bytes, bytes | None]) -> None:
        self.writer.add_encoded(*prepared)

    def __enter__(self) -> FileSink:
        self.writer.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.writer.__exit__(*exc)
