"""``--strip-prefix``, ``--add-prefix`` and ``--rename``: the name mapping options, turned into one ``names=``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ..errors import UsageError
from ..names import NameMap


def names_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the three options to a command, which receives them as ``names`` (a NameMap, or None if none given).

    ``what`` says whose names are mapped (to the mask's names), for the help text.
    """
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run(*args: Any, strip_prefix: str | None, add_prefix: str | None, rename: tuple[str, ...],
                **kwargs: Any) -> Any:
            return command(*args, names=name_map(strip_prefix, add_prefix, rename), **kwargs)

        options = [
            click.option("--strip-prefix", metavar="P", help=f"Map the names of {what}: remove P where a name "
                                                             "starts with it (DDP's 'module.').",),
            click.option("--rename", metavar="REGEX=REPLACEMENT", multiple=True,
                         help="Then replace every match of REGEX in each name (re.sub; repeatable, in order; "
                              r"PEFT LoRA: '\.base_layer\.=.')."),
            click.option("--add-prefix", metavar="P", help="Then put P in front of each name."),
        ]
        for option in reversed(options):
            run = option(run)
        return run

    return decorate


def name_map(strip_prefix: str | None, add_prefix: str | None, rename: tuple[str, ...]) -> NameMap | None:
    """The NameMap the options give, or None when none is given; a --rename without '=' is a usage error."""
    pairs = []
    for rule in rename:
        pattern, equals, replacement = rule.partition("=")
        if not equals or not pattern:
            raise click.BadParameter(f"{rule!r} is not REGEX=REPLACEMENT", param_hint="--rename")
        pairs.append((pattern, replacement))
    try:
        names = NameMap(strip_prefix=strip_prefix or "", add_prefix=add_prefix or "", rename=pairs)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--rename") from None
    return names or None
