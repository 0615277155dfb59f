"""Packages whose public names are imported on first use (PEP 562), so that importing a package, or one of its
modules, costs only what is used: ``import submask`` loads no numpy, ``submask compare`` no Hub client.

A package lists where each name lives and keeps the real imports under ``TYPE_CHECKING`` for type checkers:

>>> _HOMES = {"paths": "HubPath hub_target", "pull": "pull_mask"}      # doctest: +SKIP
>>> if not TYPE_CHECKING:                                               # doctest: +SKIP
...     __getattr__, __dir__ = lazy_names(__name__, _HOMES)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_names(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose names (space-separated in ``homes``, by module of
    the package) are imported on first use and then kept in the package's namespace."""
    where = {name: module for module, names in homes.items() for name in names.split()}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
