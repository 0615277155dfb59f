"""Integrations with training frameworks; each imports its framework only when used.

``submask.integrations.SubmaskCallback`` (or ``submask.integrations.transformers.SubmaskCallback``) is the
transformers ``Trainer`` callback; transformers is imported on first access.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "SubmaskCallback":
        from .transformers import SubmaskCallback

        return SubmaskCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SubmaskCallback"]
