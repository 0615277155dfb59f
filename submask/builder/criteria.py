"""When a value counts as changed: the build criteria and the tolerance ladder.

A build compares a base value ``w`` and a finetuned value ``w'`` at the same position of the same tensor,
and sets the mask bit where the value CHANGED (an update mask).

- ``exact``: changed iff the stored bytes differ (bitwise equality of the element's encoding). So two NaNs
  with the same bit pattern are unchanged, NaNs with different payloads or signs are changed, and
  ``+0.0`` vs ``-0.0`` is changed. Works for every dtype and reads no values.
- ``atol``: unchanged iff ``|w' - w| <= atol``.
- ``rtol``: unchanged iff ``|w' - w| <= rtol * max(|w|, |w'|)``.

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

from ..errors import UsageError

CRITERIA = ("exact", "atol", "rtol")
LADDER_ATOL = (0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4)


@dataclass(frozen=True)
class Criterion:
    """A build criterion: ``exact``, or ``atol``/``rtol`` with its tolerance.

    >>> Criterion.make(atol=1e-5)
    Criterion(name='atol', atol=1e-05, rtol=None)
    """

    name: str = "exact"
    atol: float | None = None
    rtol: float | None = None

    @classmethod
    def make(cls, name: str | None = None, atol: float | None = None, rtol: float | None = None) -> "Criterion":
        """Validate; with no ``name``, the criterion is the one whose tolerance is given (exact if none)."""
        if name is None:
            name = "atol" if atol is not None else "rtol" if rtol is not None else "exact"
        if name not in CRITERIA:
            raise UsageError(f"criterion must be one of {list(CRITERIA)}, got {name!r}")
        given = {"atol": atol, "rtol": rtol}
        if atol is not None and rtol is not None:
            raise UsageError("atol= (--atol) and rtol= (--rtol) are not combined: numpy's allclose rule "
                             "|w' - w| <= atol + rtol * |w'| measures rtol against one side only, so it would make "
                             "base and finetuned play different roles, while rtol here is symmetric "
                             "(|w' - w| <= rtol * max(|w|, |w'|)); choose one criterion, or build one mask of each "
                             "and combine them (`submask combine and`: changed under both)")
        extra = [key for key, value in given.items() if value is not None and key != name]
        if extra:
            raise UsageError(f"criterion {name!r} takes no {' or '.join(extra)}; pass only the tolerance of the "
                               "criterion you choose")
        if name != "exact":
            value = given[name]
            if value is None or not math.isfinite(value) or value < 0:
                raise UsageError(f"criterion {name!r} needs a finite {name} >= 0, got {value!r}")
            given[name] = float(value)
        return cls(name, given["atol"] if name == "atol" else None, given["rtol"] if name == "rtol" else None)

    def to_json(self) -> dict[str, Any]:
        """The ``criterion`` object recorded in a mask's metadata."""
        return {"name": self.name, "atol": self.atol, "rtol": self.rtol}


def unchanged_within(x: Any, y: Any, criterion: Criterion, xp: Any, delta: Any = None) -> Any:
    """Boolean array: which pairs (float64 values whose bytes differ) the tolerance counts as unchanged.

    ``xp`` is the array module (numpy or torch), so every backend applies the same definition; ``delta`` is
    ``|y - x|`` if the caller has it already. A NaN or an infinity makes the difference NaN or infinite:
    never ``<= atol``, and excluded explicitly for rtol.
    """
    delta = xp.abs(y - x) if delta is None else delta
    if criterion.name == "atol":
        return delta <= criterion.atol
    return (delta <= criterion.rtol * xp.maximum(xp.abs(x), xp.abs(y))) & xp.isfinite(delta)


def ladder_changed(x: Any, y: Any, xp: Any) -> list[int]:
    """Changed counts at each rung of ``LADDER_ATOL`` among pairs (float64 values) whose bytes differ."""
    delta = xp.abs(y - x)
    differ = int(delta.shape[0])
    return [differ] + [differ - int(xp.count_nonzero(delta <= tolerance)) for tolerance in LADDER_ATOL[1:]]
