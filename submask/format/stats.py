"""The build statistics of a header's ``stats`` (FORMAT.md §4.4): one schema, checked by ``validate`` and
read by ``info``.

Stats are informative: no reader needs them to decode, members not listed here are kept and ignored, and a
malformed member is reported by ``validate`` while ``info`` shows what it can.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard


def stats_problems(stats: Mapping[str, Any]) -> list[str]:
    """One message per known member of ``stats`` that does not have its documented form."""
    return [f"stats '{key}' must be {form}, got {_short(stats[key])}"
            for key, (is_valid, form) in MEMBERS.items() if key in stats and not is_valid(stats[key])]


def ladder_rungs(stats: Mapping[str, Any]) -> list[tuple[float, int]] | None:
    """(atol, changed elements overall) at each rung of the tolerance ladder; None if absent or malformed."""
    ladder = stats.get("ladder")
    if not _is_ladder(ladder):
        return None
    changed = ladder["changed"]
    overall = changed.get("__all__") if isinstance(changed, dict) else changed
    return None if overall is None else list(zip(ladder["atol"], overall))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_counts(value: Any, length: int) -> bool:
    return isinstance(value, list) and len(value) == length and all(_is_count(v) for v in value)


def _is_ladder(ladder: Any) -> TypeGuard[dict[str, Any]]:
    if not isinstance(ladder, dict) or not isinstance(ladder.get("atol"), list):
        return False
    atol, changed = ladder["atol"], ladder.get("changed")
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) and a >= 0 for a in atol):
        return False
    if isinstance(changed, dict):
        return all(_is_counts(counts, len(atol)) for counts in changed.values())
    return _is_counts(changed, len(atol))


def _is_string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


def _is_name_lists(value: Any) -> bool:
    return isinstance(value, dict) and all(_is_names(names) for names in value.values())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


MEMBERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "changed": (_is_count, "a non-negative integer (elements in the mask)"),
    "numel": (_is_count, "a non-negative integer (elements compared)"),
    "dtypes": (_is_string_map, "an object of tensor name -> dtype name"),
    "ladder": (_is_ladder, "{'atol': [finite numbers >= 0], 'changed': counts or {name: counts}}, "
                           "counts being a list of non-negative integers as long as 'atol'"),
    "backend": (lambda value: isinstance(value, str), "a string"),
    "skipped": (_is_name_lists, "an object of reason -> list of tensor names"),
    "whole": (_is_names, "a list of tensor names (tensors a delta stores whole)"),
}
