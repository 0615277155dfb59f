"""When a value counts as changed: the build criteria and the tolerance ladder.

A build compares a base value ``w`` and a finetuned value ``w'`` at the same position of the same tensor,
and sets the mask bit where the value CHANGED (an update mask).

- ``exact``: changed iff the stored bytes differ (bitwise equality of the element's encoding). So two NaNs
  with the same bit pattern are unchanged, NaNs with different payloads or signs are changed, and
  ``+0.0`` vs ``-0.0`` is changed. Works for every dtype and reads no values.
- ``atol``: unchanged iff ``|w' - w| <= atol``.
- ``rtol``: unchanged iff ``|w' - w| <= rtol * max(|w|, |w'|)``.
- ``min_abs``: set iff ``|w' - w| >= min_abs`` (a magnitude mask, as merging methods keep the large changes;
  ``min_abs > 0``). A NaN or infinite difference is set.
- ``isclose_bf16``: the RL-subnetworks paper's released rule, ``not torch.isclose(delta, 0, atol=atol)`` on a
  bf16 delta (default ``atol=1e-5``): both values are rounded to bf16, subtracted in float32 and the difference
  rounded to bf16 (as torch computes ``finetuned - base`` on bf16 tensors), then compared with the tolerance
  rounded to bf16 (1e-5 becomes 1.00136e-5). A NaN or infinite difference is changed. On bf16 checkpoints this
  reproduces the paper's counts to the element; ``atol`` (float64, unrounded) may differ from it in a few.

For both tolerances, values are decoded to float64 (bf16, fp16, fp8 and float32 exactly; integers and bool
as numbers, exact up to 2^53) and the difference is taken in float64. Pairs with identical bytes are always
unchanged; a pair that differs bitwise and involves a NaN or an infinity is always changed (so NaN vs NaN
with another payload is changed, and ``inf`` never hides behind ``rtol * inf``). ``+0.0`` vs ``-0.0`` is
unchanged under both tolerances (their difference is 0), even with ``atol=0``.

The tolerance ladder: every build also counts, per tensor and overall, the changed elements at each
absolute tolerance of ``LADDER_ATOL``. Its first rung, 0, counts bitwise changes (the ``exact`` criterion);
the others apply the ``atol`` rule above. This shows how much the answer depends on the tolerance (the
RL-subnetworks paper's Table 6 reports 1e-8 ... 1e-5) without rebuilding. Only elements whose bytes differ
are decoded, so the ladder costs time in proportion to the changed fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError

CRITERIA = ("exact", "atol", "rtol", "min_abs", "isclose_bf16")
PAPER_ATOL = 1e-5  # the isclose_bf16 tolerance the paper's script uses
LADDER_ATOL = (0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4)


@dataclass(frozen=True)
class Criterion:
    """A build criterion: ``exact``, or ``atol``/``rtol`` with its tolerance.

    >>> Criterion.make(atol=1e-5)
    Criterion(name='atol', atol=1e-05, rtol=None, min_abs=None)
    """

    name: str = "exact"
    atol: float | None = None
    rtol: float | None = None
    min_abs: float | None = None

    @classmethod
    def make(cls, name: str | None = None, atol: float | None = None, rtol: float | None = None,
             min_abs: float | None = None) -> Criterion:
        """Validate; with no ``name``, the criterion is the one whose tolerance is given (exact if none).
        ``isclose_bf16`` takes ``atol`` (default 1e-5); ``min_abs`` its threshold."""
        if name is None:
            name = ("atol" if atol is not None else "rtol" if rtol is not None
                    else "min_abs" if min_abs is not None else "exact")
        if name not in CRITERIA:
            raise UsageError(f"criterion must be one of {list(CRITERIA)}, got {name!r}")
        if name == "isclose_bf16" and atol is None:
            atol = PAPER_ATOL
        if atol is not None and rtol is not None:
            raise UsageError("atol= (--atol) and rtol= (--rtol) are not combined: numpy's allclose rule "
                             "|w' - w| <= atol + rtol * |w'| measures rtol against one side only, so it would make "
                             "base and finetuned play different roles, while rtol here is symmetric "
                             "(|w' - w| <= rtol * max(|w|, |w'|)); choose one criterion, or build one mask of each "
                             "and combine them (`submask combine and`: changed under both)")
        given = {"atol": atol, "rtol": rtol, "min_abs": min_abs}
        takes = {"atol": "atol", "rtol": "rtol", "min_abs": "min_abs", "isclose_bf16": "atol"}.get(name)
        extra = [key for key, value in given.items() if value is not None and key != takes]
        if extra:
            raise UsageError(f"criterion {name!r} takes no {' or '.join(extra)}; pass only the tolerance of the "
                               "criterion you choose")
        if takes is not None:
            value = given[takes]
            if value is None or not math.isfinite(value) or value < 0 or (name == "min_abs" and value == 0):
                bound = "> 0" if name == "min_abs" else ">= 0"
                raise UsageError(f"criterion {name!r} needs a finite {takes} {bound}, got {value!r}")
            given[takes] = float(value)
        return cls(name, given["atol"] if takes == "atol" else None, given["rtol"] if takes == "rtol" else None,
                   given["min_abs"] if takes == "min_abs" else None)

    def to_json(self) -> dict[str, Any]:
        """The ``criterion`` object recorded in a mask's metadata."""
        recorded: dict[str, Any] = {"name": self.name, "atol": self.atol, "rtol": self.rtol}
        if self.name == "min_abs":
            recorded["min_abs"] = self.min_abs
        if self.name == "isclose_bf16":
            recorded["rule"] = (f"not torch.isclose(bf16(finetuned) - bf16(base), 0, atol={self.atol!r}) computed "
                                "in bf16 (atol rounded to bf16)")
        return recorded


def unchanged_within(x: Any, y: Any, criterion: Criterion, xp: Any, delta: Any = None) -> Any:
    """Boolean array: which pairs (float64 values whose bytes differ) the tolerance counts as unchanged.

    ``xp`` is the array module (numpy or torch), so every backend applies the same definition; ``delta`` is
    ``|y - x|`` if the caller has it already. A NaN or an infinity makes the difference NaN or infinite:
    never ``<= atol``, and excluded explicitly for rtol.
    """
    if criterion.name == "isclose_bf16":
        return _isclose_bf16(x, y, criterion.atol, xp)
    delta = xp.abs(y - x) if delta is None else delta
    if criterion.name == "atol":
        return delta <= criterion.atol
    if criterion.name == "min_abs":
        return delta < criterion.min_abs  # NaN compares False: set
    return (delta <= criterion.rtol * xp.maximum(xp.abs(x), xp.abs(y))) & xp.isfinite(delta)


def _isclose_bf16(x: Any, y: Any, atol: Any, xp: Any) -> Any:
    """``torch.isclose(bf16(y) - bf16(x), 0, atol=atol)`` as torch computes it on bf16 tensors."""
    if xp is np:
        with np.errstate(invalid="ignore", over="ignore"):
            x32, y32 = _to_bf16(x.astype(np.float32)), _to_bf16(y.astype(np.float32))
            delta = _to_bf16(y32 - x32)
        tolerance = _to_bf16(np.array([atol], dtype=np.float32))[0]
        return np.abs(delta) <= tolerance  # NaN: False, so changed
    bf16 = xp.bfloat16
    delta = y.to(bf16) - x.to(bf16)
    return xp.isclose(delta, xp.zeros_like(delta), atol=atol)


def _to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bf16 (ties to even), as float32; NaN stays NaN."""
    bits = values.view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000))
    out = rounded.view(np.float32)
    return np.where(np.isnan(values), values, out)


def ladder_changed(x: Any, y: Any, xp: Any) -> list[int]:
    """Changed counts at each rung of ``LADDER_ATOL`` among pairs (float64 values) whose bytes differ."""
    delta = xp.abs(y - x)
    differ = int(delta.shape[0])
    return [differ] + [differ - int(xp.count_nonzero(delta <= tolerance)) for tolerance in LADDER_ATOL[1:]]
