"""Parsing JSON read from files: the one door for every header and index submask reads (FORMAT.md §2.2).

``json.loads`` alone accepts what JSON does not (``NaN``, ``Infinity``, numbers that overflow to infinity),
keeps the last of duplicate keys, raises RecursionError on deep nesting and a bare ValueError on integers
of more than 4,300 digits. ``loads`` turns each of these into InvalidJSON, which callers re-raise as their
own typed error naming the file.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # nesting of objects and arrays; submask's own headers need 6


class InvalidJSON(ValueError):
    """The text is not strict JSON, or nests deeper than MAX_DEPTH; the message says where and why."""


def loads(text: str | bytes) -> Any:
    """Parse strict JSON: no NaN or Infinity, no duplicate keys, at most MAX_DEPTH levels, UTF-8 if bytes."""
    try:
        value = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text,
                           object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"not UTF-8 ({exc})") from None
    except InvalidJSON:
        raise
    except ValueError as exc:  # JSONDecodeError, and int() of a number over the interpreter's digit limit
        raise InvalidJSON(str(exc).split(";")[0]) from None
    _check_depth(value)
    return value


def dumps(value: Any) -> str:
    """Serialize compactly (``","`` and ``":"`` separators) as strict JSON; InvalidJSON for NaN, Infinity,
    and values JSON cannot hold."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidJSON(str(exc)) from None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise InvalidJSON(f"duplicate key {duplicate!r}")
    return result


def _constant(name: str) -> Any:
    raise InvalidJSON(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON(f"number {text[:40]} is out of range")
    return value


def _check_depth(value: Any) -> None:
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:  # breadth first, one level at a time: no recursion, whatever the input
        depth += 1
        if depth > MAX_DEPTH:
            raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels")
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, (dict, list))]
