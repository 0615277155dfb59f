"""What a file is, from its first bytes: the formats people hand to submask by mistake or to convert."""

from __future__ import annotations

import os

#: (magic at offset 0, what the file is); safetensors and .smask have no magic (an 8-byte header length).
MAGIC = (
    (b"\x93NUMPY", "a numpy .npy array"),
    (b"PK\x03\x04", "a zip archive (torch.save or numpy .npz)"),
    (b"\x80", "a Python pickle (legacy torch.save)"),
    (b"GGUF", "a GGUF file (llama.cpp)"),
    (b"\x89HDF", "an HDF5 file (TensorFlow/Keras)"),
)


def head(path: str | os.PathLike[str], size: int = 16) -> bytes:
    """The first ``size`` bytes of a file (fewer if it is shorter)."""
    with open(path, "rb") as handle:
        return handle.read(size)


def foreign_kind(start: bytes) -> str | None:
    """What a file starting with ``start`` is, when its magic names a format other than safetensors/.smask."""
    return next((kind for magic, kind in MAGIC if start.startswith(magic)), None)
