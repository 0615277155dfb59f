"""The ``submask`` command line: thin click commands over the Python API."""

from . import analysis, apply, build, demo, hub, inspect  # noqa: F401  (each import registers its commands on ``main``)
from .root import main

__all__ = ["main"]
