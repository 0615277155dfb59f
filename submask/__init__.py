"""submask: store, compare and share parameter-update masks.

>>> import numpy as np, submask
>>> mask = submask.Mask.from_numpy({"w": np.array([True, False, False, True])})
>>> mask.save("w.smask")                                            # doctest: +SKIP
>>> submask.load("w.smask")["w"].to_numpy()                         # doctest: +SKIP
array([ True, False, False,  True])
"""

from ._version import __version__
from .errors import (
    ChecksumError,
    FormatError,
    HubError,
    MismatchError,
    SourceError,
    SubmaskError,
    UnknownEncodingError,
    VersionError,
)
from .format import MaskFile, MaskMetadata, MaskWriter, TensorEntry, load, model_fingerprint, open, save
from .mask import Mask, TensorMask

__all__ = [
    "ChecksumError",
    "FormatError",
    "HubError",
    "Mask",
    "MaskFile",
    "MaskMetadata",
    "MaskWriter",
    "MismatchError",
    "SourceError",
    "SubmaskError",
    "TensorEntry",
    "TensorMask",
    "UnknownEncodingError",
    "VersionError",
    "__version__",
    "load",
    "model_fingerprint",
    "open",
    "save",
]
