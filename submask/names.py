"""Name mapping between a model (or another mask) and a mask: ``NameMap`` and the hint when names differ.

APIs that match names take ``names: Callable[[str], str] | None``: it maps the names of the thing being matched
(a model's parameter names, a checkpoint's tensor names, another mask's names) to the mask's names. ``NameMap``
is such a callable, built from the three steps the command line offers (``--strip-prefix``, ``--rename``,
``--add-prefix``), applied in that order.

>>> NameMap(strip_prefix="module.")("module.encoder.weight")
'encoder.weight'
>>> peft = NameMap(strip_prefix="base_model.model.", rename=[(r"\\.base_layer\\.", ".")])
>>> peft("base_model.model.q.base_layer.weight")
'q.weight'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .errors import MismatchError, UsageError

Names = Callable[[str], str]
MAX_SEGMENTS = 64  # dotted segments tried as the one to drop (the hint runs on error paths only)


@dataclass(frozen=True)
class NameMap:
    """Map a name: remove ``strip_prefix`` where the name starts with it, apply each ``(regex, replacement)`` of
    ``rename`` (``re.sub``, every match), then put ``add_prefix`` in front. Names without the prefix to strip
    pass that step unchanged, so one NameMap serves both sides of a comparison."""

    strip_prefix: str = ""
    add_prefix: str = ""
    rename: Sequence[tuple[str, str]] = ()
    _compiled: tuple[tuple[re.Pattern[str], str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = []
        for pattern, replacement in self.rename:
            try:
                regex = re.compile(pattern)
                regex.sub(replacement, "")  # a bad group reference in the replacement fails here, not mid-build
            except (re.error, IndexError) as exc:
                raise UsageError(f"rename {pattern!r} -> {replacement!r}: {exc}") from None
            compiled.append((regex, replacement))
        object.__setattr__(self, "rename", tuple((p, r) for p, r in self.rename))
        object.__setattr__(self, "_compiled", tuple(compiled))

    def __call__(self, name: str) -> str:
        if self.strip_prefix and name.startswith(self.strip_prefix):
            name = name[len(self.strip_prefix):]
        for regex, replacement in self._compiled:
            name = regex.sub(replacement, name)
        return self.add_prefix + name

    def __bool__(self) -> bool:
        return bool(self.strip_prefix or self.add_prefix or self.rename)

    def options(self) -> str:
        """The command-line options that give this mapping."""
        parts = [f"--strip-prefix {self.strip_prefix}"] if self.strip_prefix else []
        parts += [f"--rename '{pattern}={replacement}'" for pattern, replacement in self.rename]
        parts += [f"--add-prefix {self.add_prefix}"] if self.add_prefix else []
        return " ".join(parts)


def mapped(items: Iterable[str], names: Names | None, label: str) -> dict[str, str]:
    """Each name of ``items`` -> the name ``names`` gives it, in order; the identity when ``names`` is None.

    Two names that map to one raise MismatchError naming both.
    """
    result: dict[str, str] = {}
    taken: dict[str, str] = {}  # new name -> the name that took it
    for name in items:
        new = name if names is None else names(name)
        if new in taken:
            raise MismatchError(f"{label}: tensors {taken[new]!r} and {name!r} both map to {new!r}; "
                                "change the name mapping so that every name stays distinct")
        result[name], taken[new] = new, name
    return result


def suggest(theirs: Iterable[str], ours: Iterable[str]) -> NameMap | None:
    """A NameMap that maps every one of ``ours`` names onto one of ``theirs`` when they share none now: a prefix
    to strip or to add, and/or one dotted segment to drop (PEFT's ``.base_layer``). None if none is found."""
    targets, sources = set(theirs), list(ours)
    if not targets or not sources or targets & set(sources):
        return None
    parts = sources[0].split(".")
    strips = [".".join(parts[:k]) + "." for k in range(1, len(parts))]
    tparts = min(targets, key=len).split(".")
    candidates = [NameMap(strip_prefix=p) for p in strips]
    candidates += [NameMap(add_prefix=".".join(tparts[:k]) + ".") for k in range(1, len(tparts))]
    segments = dict.fromkeys(s for name in sources for s in name.split(".")[1:-1] if not s.isdigit())
    candidates += [NameMap(strip_prefix=strip, rename=[(rf"\.{re.escape(s)}\.", ".")])
                   for strip in ["", *strips] for s in list(segments)[:MAX_SEGMENTS]]
    for candidate in candidates:
        mapped = {candidate(name) for name in sources}
        if mapped & targets and (targets <= mapped or mapped <= targets):
            return candidate
    return None


def hint(theirs: Iterable[str], ours: Iterable[str], ours_label: str) -> str:
    """A sentence that shows the option fixing a prefix or segment difference, or "" when there is none."""
    fix = suggest(theirs, ours)
    if fix is None:
        return ""
    return (f" The names differ only by a prefix or segment: map the names of {ours_label} with {fix.options()} "
            f"(Python: names={fix!r}).")


__all__ = ["NameMap", "Names", "hint", "mapped", "suggest"]
