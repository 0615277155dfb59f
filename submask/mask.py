"""Masks in memory: ``TensorMask`` (one tensor's packed bits) and ``Mask`` (named tensor masks + metadata).

Bits stay packed (8 per byte, see ``submask.packed``); conversions to bool arrays, torch tensors and index
arrays happen one tensor at a time, on request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast, overload

import numpy as np

from .align import aligned_names, check_model
from .errors import MismatchError
from .metadata import MaskMetadata, combined_metadata, model_fingerprint
from .names import mapped
from .packed import apply_op, clear_padding, from_positions, pack, packed_nbytes, popcount, set_positions, unpack

if TYPE_CHECKING:
    import torch


class _SetOperators:
    """``&``, ``|``, ``^``, ``-`` (difference) and ``~`` (complement): ``combine`` of this mask and another."""

    __slots__ = ()

    def __and__(self, other: Any) -> Any:
        return combine("and", [cast(Any, self), other])

    def __or__(self, other: Any) -> Any:
        return combine("or", [cast(Any, self), other])

    def __xor__(self, other: Any) -> Any:
        return combine("xor", [cast(Any, self), other])

    def __sub__(self, other: Any) -> Any:
        return combine("diff", [cast(Any, self), other])

    def __invert__(self) -> Any:
        return combine("not", [cast(Any, self)])


class TensorMask(_SetOperators):
    """The mask of one tensor: a shape and its packed bits (C order, most significant bit first).

    >>> m = TensorMask.from_numpy(np.array([[True, False], [False, True]]))
    >>> m.count, m.density
    (2, 0.5)
    """

    __slots__ = ("shape", "packed", "_count")

    def __init__(self, shape: tuple[int, ...], packed: np.ndarray, count: int | None = None):
        shape = tuple(int(d) for d in shape)
        if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != packed_nbytes(math.prod(shape)):
            raise MismatchError(f"packed bits for shape {shape} must be {packed_nbytes(math.prod(shape))} uint8 bytes, "
                                f"got {packed.dtype} array of shape {packed.shape}")
        self.shape = shape
        self.packed = clear_padding(packed, math.prod(shape))
        self._count = count

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def count(self) -> int:
        """Number of set (masked) elements."""
        if self._count is None:
            self._count = popcount(self.packed)
        return self._count

    @property
    def density(self) -> float:
        """Fraction of elements set; 0.0 for an empty tensor."""
        return self.count / self.numel if self.numel else 0.0

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> TensorMask:
        """From a boolean (or 0/1) array of any shape."""
        array = np.asarray(array)
        return cls(array.shape, pack(array))

    @classmethod
    def from_torch(cls, tensor: torch.Tensor) -> TensorMask:
        """From a torch tensor (nonzero = set), on any device."""
        return cls.from_numpy((tensor != 0).detach().cpu().numpy())

    @classmethod
    def from_indices(cls, indices: np.ndarray, shape: tuple[int, ...]) -> TensorMask:
        """From flat (C order) indices of the set elements."""
        numel = math.prod(shape)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= numel):
            raise MismatchError(f"indices must lie in [0, {numel}) for shape {tuple(shape)}")
        return cls(tuple(shape), from_positions(indices, numel))

    @classmethod
    def full(cls, shape: tuple[int, ...], value: bool = False) -> TensorMask:
        """A mask with every element set (``value=True``) or none."""
        numel = math.prod(shape)
        packed = np.full(packed_nbytes(numel), 0xFF if value else 0, dtype=np.uint8)
        return cls(tuple(shape), packed, numel if value else 0)

    def to_numpy(self) -> np.ndarray:
        """A bool array of this mask's shape."""
        return unpack(self.packed, self.numel).reshape(self.shape)

    def to_torch(self, device: str | torch.device | None = None) -> torch.Tensor:
        """A torch bool tensor of this mask's shape."""
        import torch

        return torch.from_numpy(self.to_numpy()).to(device) if device is not None else torch.from_numpy(self.to_numpy())

    def to_indices(self) -> np.ndarray:
        """Flat (C order) int64 indices of the set elements, ascending."""
        return set_positions(self.packed, self.numel)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorMask):
            return NotImplemented
        return self.shape == other.shape and np.array_equal(self.packed, other.packed)

    def __hash__(self) -> int:  # masks are mutable containers of bits; compare with ==, do not hash
        raise TypeError("TensorMask is not hashable")

    def __repr__(self) -> str:
        return f"TensorMask(shape={self.shape}, count={self.count}, density={self.density:.4g})"


@dataclass
class Mask(_SetOperators, Mapping[str, TensorMask]):
    """A model's mask: parameter name -> ``TensorMask``, plus file-level ``metadata``.

    >>> mask = Mask({"w": TensorMask.from_numpy(np.eye(3, dtype=bool))})
    >>> mask.count, round(mask.density, 3)
    (3, 0.333)
    """

    tensors: dict[str, TensorMask] = field(default_factory=dict)
    metadata: MaskMetadata = field(default_factory=MaskMetadata)

    def __getitem__(self, name: str) -> TensorMask:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in this mask ({len(self.tensors)} tensors)") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def count(self) -> int:
        """Set elements over all tensors."""
        return sum(mask.count for mask in self.tensors.values())

    @property
    def numel(self) -> int:
        """Elements over all tensors."""
        return sum(mask.numel for mask in self.tensors.values())

    @property
    def density(self) -> float:
        numel = self.numel
        return self.count / numel if numel else 0.0

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: mask.shape for name, mask in self.tensors.items()}

    @classmethod
    def from_numpy(cls, arrays: Mapping[str, np.ndarray], **metadata: Any) -> Mask:
        """From a mapping of names to boolean arrays; keyword arguments fill ``MaskMetadata``."""
        return cls({name: TensorMask.from_numpy(array) for name, array in arrays.items()}, MaskMetadata(**metadata))

    @classmethod
    def from_torch(cls, tensors: Mapping[str, torch.Tensor], **metadata: Any) -> Mask:
        """From a mapping of names to torch tensors (nonzero = set)."""
        return cls({name: TensorMask.from_torch(t) for name, t in tensors.items()}, MaskMetadata(**metadata))

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {name: mask.to_numpy() for name, mask in self.tensors.items()}

    def to_torch(self, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        return {name: mask.to_torch(device) for name, mask in self.tensors.items()}

    @property
    def counts(self) -> dict[str, int]:
        """Tensor name -> number of set elements."""
        return {name: mask.count for name, mask in self.tensors.items()}

    def rename(self, names: Callable[[str], str]) -> Mask:
        """The same tensors under the names ``names`` gives them (``submask.names.NameMap``, or any str -> str).

        >>> list(Mask.from_numpy({"module.w": np.ones(2, bool)}).rename(lambda name: name.removeprefix("module.")))
        ['w']
        """
        new_names = mapped(self.tensors, names, "the mask")
        tensors = {new_names[name]: tensor for name, tensor in self.tensors.items()}
        return Mask(tensors, renamed_metadata(self.metadata, {name: t.shape for name, t in tensors.items()}))

    def check_model(self, shapes: Mapping[str, tuple[int, ...]], what: str = "the model") -> None:
        """Raise MismatchError unless every masked tensor exists in ``shapes`` with the same shape, and the
        recorded model fingerprint (if any) matches."""
        check_model(self, shapes, what)

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, count={self.count}, numel={self.numel}, kind={self.metadata.kind!r})"


def renamed_metadata(metadata: MaskMetadata, shapes: Mapping[str, tuple[int, ...]]) -> MaskMetadata:
    """``metadata`` for the same mask under other names: a recorded model fingerprint follows the names."""
    if not (metadata.model or {}).get("fingerprint"):
        return metadata
    return replace(metadata, model={**(metadata.model or {}), "fingerprint": model_fingerprint(shapes)})


def check_same_shape(a: TensorMask, b: TensorMask, name: str | None = None) -> None:
    if a.shape != b.shape:
        label = f"tensor {name!r}: " if name else ""
        raise MismatchError(f"{label}shapes differ ({a.shape} vs {b.shape}); these masks are for different models")


@overload
def combine(op: str, masks: Sequence[TensorMask], *, common: bool = False) -> TensorMask: ...


@overload
def combine(op: str, masks: Sequence[Mask], *, common: bool = False) -> Mask: ...


def combine(op: str, masks: Sequence[TensorMask] | Sequence[Mask], *, common: bool = False) -> TensorMask | Mask:
    """Apply ``op`` to TensorMasks or Masks; a Mask result keeps its inputs' provenance in its metadata."""
    tensor_masks = [m for m in masks if isinstance(m, TensorMask)]
    if len(tensor_masks) == len(masks):
        for other in tensor_masks[1:]:
            check_same_shape(tensor_masks[0], other)
        first = tensor_masks[0]
        return TensorMask(first.shape, apply_op(op, [m.packed for m in tensor_masks], first.numel))
    masks = cast(Sequence[Mask], masks)
    names = aligned_names([m.shapes for m in masks], common=common)
    tensors = {name: combine(op, [m[name] for m in masks]) for name in names}
    inputs = [{"provenance": m.metadata.provenance} for m in masks]
    return Mask(tensors, combined_metadata(op, [m.metadata for m in masks], inputs))
