"""Integrations with training frameworks; each imports its framework only when used.

``submask.integrations.SubmaskCallback`` (or ``submask.integrations.transformers.SubmaskCallback``) is the
transformers ``Trainer`` callback that restricts training to a mask, ``UpdateDensityCallback`` the one that
logs update density and writes update masks into checkpoints; transformers is imported on first access.
``ReferenceSyncCallback`` replaces TRL's reference-model sync for a model restricted in sparse mode (imports trl).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "ReferenceSyncCallback":
        from . import trl_sync

        return trl_sync.ReferenceSyncCallback
    if name in __all__:
        from . import transformers

        return getattr(transformers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ReferenceSyncCallback", "SubmaskCallback", "UpdateDensityCallback"]
