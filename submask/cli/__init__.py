"""The ``submask`` command line: thin click commands over the Python API, registered here in one list.

Each command's module is imported only when that command runs (or ``--help`` lists them all), so a command
line pays for its own imports only: ``submask compare`` loads no Hub client, checkpoint reader or torch.

>>> submask build base/ rl-step-1000/ -o rl.smask          # doctest: +SKIP
>>> submask compare rl.smask seed2.smask dpo.smask --by module   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .root import main

if TYPE_CHECKING:
    import click

#: command name: (module of submask.cli, click command in it)
main.lazy_commands.update({
    "info": ("inspect", "info"),                  # summarise a mask from its header
    "validate": ("inspect", "validate"),          # decode and check every tensor
    "build": ("build", "build"),                  # the update mask of two checkpoints
    "stats": ("analysis", "stats"),               # densities per layer, module type or tensor
    "compare": ("analysis", "compare_command"),   # overlap and Jaccard of every pair, beside chance
    "combine": ("analysis", "combine"),           # and, or, xor, diff, not of mask files
    "plot": ("plot", "plot"),                     # density heatmaps, per-layer lines, the ladder, the overlap matrix
    "apply": ("apply", "apply_command"),          # a sparse-update model: base + mask * (finetuned - base)
    "convert": ("convert", "convert_command"),    # masks from and for other tools' formats
    "push": ("hub", "push"),                      # a mask next to a model on the Hub
    "pull": ("hub", "pull"),                      # a mask from the Hub, pinned to a commit
    "ls": ("hub", "ls"),                          # the masks in a Hub repo, from their headers
    "demo": ("demo", "demo"),                     # the whole story on a real model
})


def __getattr__(name: str) -> tuple[click.Command, ...]:
    """``COMMANDS``: every command, each module imported (for tests and documentation tools)."""
    if name != "COMMANDS":
        raise AttributeError(f"module 'submask.cli' has no attribute {name!r}")
    return tuple(main.load_command(command) for command in main.lazy_commands)


__all__ = ["COMMANDS", "main"]
