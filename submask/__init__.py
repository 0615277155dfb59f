"""submask: store, compare and share parameter-update masks.

The API by task (count = set entries, numel = all entries, density = count / numel):

- build:   ``build_mask(base, finetuned, out)`` -> ``BuiltMask``; ``count_changes`` (counts only);
           ``combine_files(op, inputs, out)``; in memory ``Mask``, ``TensorMask``, ``Mask.from_numpy``.
- compare: ``compare(masks, by=...)`` -> ``Comparison`` (``.pair("a.smask", "b.smask")`` -> ``PairStats``:
           overlap, jaccard, ``chance_*`` stratified baseline, ``global_chance_*`` model-wide);
           ``pair_stats``, ``overlap``, ``jaccard``, ``intersection``, ``union``, ``difference``,
           ``symmetric_difference``, ``complement``; ``density_breakdown(mask, by=...)``.
- apply:   ``apply_mask(base, finetuned, mask, out_dir)`` -> ``AppliedModel``; ``apply_to_state_dict``,
           ``apply_to_module``; ``apply_delta`` (a delta built with ``values=True``).
- train:   ``restrict(module, mask)`` / ``unrestrict``; ``UpdateTracker`` (update density while training);
           ``submask.integrations.transformers`` for the Trainer.
- Hub:     ``push_mask``, ``pull_mask``, ``list_masks``; ``hf://org/model[@rev]/path.smask`` wherever a path is.
- format:  ``save``, ``load``, ``open`` / ``open_mask`` (lazy), ``load_delta``; ``MaskFile``, ``MaskWriter``,
           ``MaskMetadata`` (FORMAT.md). Every error is a ``SubmaskError``.

Wherever a mask is taken, a ``MaskLike`` is: a ``Mask``, an open ``MaskFile``, a ``BuiltMask``, or a path or
hf:// URL.

>>> import numpy as np, submask
>>> mask = submask.Mask.from_numpy({"w": np.array([True, False, False, True])})
>>> submask.save(mask, "w.smask")                                   # doctest: +SKIP
>>> submask.load("w.smask")["w"].to_numpy()                         # doctest: +SKIP
array([ True, False, False,  True])
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from . import interrupts as _interrupts  # noqa: F401  (first: as `submask`, a Ctrl-C while importing is one line)
from ._lazy import lazy_names
from ._version import __version__
from .errors import (
    ChecksumError,
    FormatError,
    HeaderChecksumError,
    HubError,
    LimitError,
    MismatchError,
    OutputError,
    SourceError,
    SubmaskError,
    UnknownEncodingError,
    UsageError,
    VersionError,
)

#: where each public name lives, imported on its first use (PEP 562): ``import submask`` itself loads no numpy,
#: and a command line imports only what its command needs. Keep in step with the imports under TYPE_CHECKING.
_HOMES = {
    "algebra": "Counts PairStats chance_jaccard complement difference intersection intersection_count jaccard "
               "overlap pair_stats symmetric_difference union",
    "apply": "AppliedModel apply_mask apply_to_module apply_to_state_dict",
    "breakdown": "density_breakdown",
    "builder": "build_mask count_changes",
    "built": "BuiltMask",
    "combine": "combine_files",
    "compare": "Comparison compare",
    "delta": "Delta",
    "format": "MaskFile MaskWriter TensorEntry TensorValues",
    "hub": "HubPath MaskListing PulledMask PushedMask list_masks pull_mask push_mask",
    "io": "MaskLike load load_delta open open_mask save",
    "mask": "Mask TensorMask",
    "metadata": "CheckpointFile MaskMetadata model_fingerprint",
    "rebuild": "apply_delta",
    "sync": "Patch PatchFolder WeightSync",
    "tracker": "UpdateDensity UpdateTracker",
    "train": "Restriction restrict unrestrict",
}

if TYPE_CHECKING:  # the real imports, for type checkers and IDEs (an unknown name stays an error for them)
    from .algebra import (
        Counts,
        PairStats,
        chance_jaccard,
        complement,
        difference,
        intersection,
        intersection_count,
        jaccard,
        overlap,
        pair_stats,
        symmetric_difference,
        union,
    )
    from .apply import AppliedModel, apply_mask, apply_to_module, apply_to_state_dict
    from .breakdown import density_breakdown
    from .builder import build_mask, count_changes
    from .built import BuiltMask
    from .combine import combine_files
    from .compare import Comparison, compare
    from .delta import Delta
    from .format import MaskFile, MaskWriter, TensorEntry, TensorValues
    from .hub import HubPath, MaskListing, PulledMask, PushedMask, list_masks, pull_mask, push_mask
    from .io import MaskLike, load, load_delta, open, open_mask, save
    from .mask import Mask, TensorMask
    from .metadata import CheckpointFile, MaskMetadata, model_fingerprint
    from .rebuild import apply_delta
    from .sync import Patch, PatchFolder, WeightSync
    from .tracker import UpdateDensity, UpdateTracker
    from .train import Restriction, restrict, unrestrict

__all__ = [
    "Comparison",
    "Counts",
    "PairStats",
    "Patch",
    "PatchFolder",
    "chance_jaccard",
    "combine_files",
    "compare",
    "complement",
    "density_breakdown",
    "difference",
    "intersection",
    "intersection_count",
    "jaccard",
    "overlap",
    "pair_stats",
    "symmetric_difference",
    "union",
    "AppliedModel",
    "BuiltMask",
    "CheckpointFile",
    "ChecksumError",
    "Delta",
    "FormatError",
    "HeaderChecksumError",
    "HubError",
    "OutputError",
    "HubPath",
    "LimitError",
    "Mask",
    "MaskFile",
    "MaskLike",
    "MaskListing",
    "MaskMetadata",
    "MaskWriter",
    "MismatchError",
    "PulledMask",
    "PushedMask",
    "Restriction",
    "SourceError",
    "SubmaskError",
    "TensorEntry",
    "TensorMask",
    "TensorValues",
    "UnknownEncodingError",
    "UsageError",
    "UpdateDensity",
    "UpdateTracker",
    "VersionError",
    "WeightSync",
    "__version__",
    "apply_delta",
    "apply_mask",
    "apply_to_module",
    "apply_to_state_dict",
    "build_mask",
    "count_changes",
    "list_masks",
    "load",
    "load_delta",
    "model_fingerprint",
    "open",
    "open_mask",
    "pull_mask",
    "push_mask",
    "restrict",
    "save",
    "unrestrict",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _HOMES)


class _Package(types.ModuleType):
    """``submask.compare`` is the function, although ``submask/compare.py`` is also a module: importing that
    module binds its name on the package (the import system does so), so the function is bound instead, as the
    eager ``from .compare import compare`` did."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "compare" and isinstance(value, types.ModuleType):
            value = value.compare
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
