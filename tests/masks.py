"""Random masks for tests, made one way: seeded, tensor by tensor in the order of ``shapes``.

>>> random_bools({"w": (3, 4)}, 0.5, seed=1)["w"].shape
(3, 4)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from submask import Mask


def random_bools(shapes: Mapping[str, tuple[int, ...]], density: float | Mapping[str, float],
                 seed: int) -> dict[str, np.ndarray]:
    """Name -> bool array, each element set with probability ``density`` (one value, or one per tensor)."""
    rng = np.random.default_rng(seed)
    return {name: rng.random(shape) < (density[name] if isinstance(density, Mapping) else density)
            for name, shape in shapes.items()}


def random_mask(shapes: Mapping[str, tuple[int, ...]], density: float | Mapping[str, float], seed: int,
                **metadata: Any) -> Mask:
    """``random_bools`` as a Mask; keyword arguments fill its metadata."""
    return Mask.from_numpy(random_bools(shapes, density, seed), **metadata)
