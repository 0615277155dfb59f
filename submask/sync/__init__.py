"""Per-step weight sync for RL: ship each optimizer step's changed entries from a trainer to its inference
copies, bit for bit (README, "Syncing RL weights"; FORMAT.md §13).

``WeightSync`` (sender: ``diff``, ``snapshot``; receiver: ``resume``), ``Patch`` (``to_bytes``,
``from_bytes``, ``apply_to``) and ``PatchFolder`` (a folder of step patches, the file transport).
"""

from .content import PatchTensor
from .folder import PatchFolder
from .patch import Patch
from .sender import WeightSync

__all__ = ["Patch", "PatchFolder", "PatchTensor", "WeightSync"]
