"""The ``submask`` click group; command modules attach their commands to ``main``."""

from __future__ import annotations

import sys

import click

from .._version import __version__
from ..errors import SubmaskError


class _Group(click.Group):
    """Turns SubmaskError into a one-line message and exit status 1 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SubmaskError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="submask")
def main() -> None:
    """Store, compare and share parameter-update masks (.smask files)."""
