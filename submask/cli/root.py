"""The ``submask`` click group: errors and signals handled in one place; ``cli/__init__`` registers the commands."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

import click

from .. import interrupts
from .._version import __version__
from ..errors import UsageError
from .errors import render
from .output import quiet_hub_progress


class _Group(click.Group):
    """Known errors become one line and exit 1 (2 for a usage error, as click's own); SIGINT/SIGTERM one line and
    exit 130/143; no tracebacks. Commands named in ``lazy_commands`` are imported when first needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: command name: (module of submask.cli, attribute), imported by ``load_command`` (cli/__init__ fills it)
        self.lazy_commands: dict[str, tuple[str, str]] = {}

    def load_command(self, name: str) -> click.Command:
        """The command ``name``, its module imported and the command added on first use."""
        command = self.commands.get(name)
        if command is None:
            module, attribute = self.lazy_commands[name]
            command = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            return self.load_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if not sys.stderr.isatty():  # huggingface_hub's progress bars too go only to a terminal
            quiet_hub_progress()
        previous = interrupts.install()
        try:
            return super().main(*args, **kwargs)
        finally:
            interrupts.hold()  # in the submask command: no signal meets the interpreter's finalization
            interrupts.restore(previous)

    def invoke(self, ctx: click.Context) -> object:
        try:
            result = super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            interrupts.hold()
            raise
        except BaseException as exc:
            interrupts.hold()
            signum = interrupts.pending()
            if signum is None and isinstance(exc, KeyboardInterrupt):
                signum = getattr(exc, "signum", signal.SIGINT)
            if signum is not None:
                interrupts.exit_interrupted(signum)
            if isinstance(exc, BrokenPipeError):  # the reader went away (| head): nothing left to say to it
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(1)
            message = render(exc)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(2 if isinstance(exc, UsageError) else 1)
        interrupts.hold()
        signum = interrupts.pending()
        if signum is not None:  # interrupted, but the exception was swallowed on the way (numba did once)
            interrupts.exit_interrupted(signum)
        return result


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="submask")
def main() -> None:
    """Store, compare and share parameter-update masks (.smask files).

    \b
    Exit status: 0 done, 1 error (one line on stderr), 2 usage error,
    130 interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM).
    Commands that write refuse an existing output unless --overwrite.
    """
