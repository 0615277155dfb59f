"""Shared output and options of CLI commands: JSON for scripts, aligned tables for people.

One number style everywhere: people read densities as percentages under headers that say "%", scripts read
fractions (0-1) in --json and --csv under the key "density".
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON (densities as fractions).")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace the output if it exists (else refused).")
progress_option = click.option("--progress/--no-progress", default=None,
                               help="Show progress bars  [default: only when stderr is a terminal].")
quiet_option = click.option("-q", "--quiet", is_flag=True,
                            help="No progress bars and no report on stdout (--json still prints; errors still go "
                                 "to stderr; the exit status says how it went).")


def show_progress(progress: bool | None, quiet: bool = False) -> bool:
    """Progress bars go to stderr: by default only when it is a terminal, never into redirected logs; when
    they are off, huggingface_hub's are too."""
    shown = False if quiet else sys.stderr.isatty() if progress is None else progress
    if not shown:
        quiet_hub_progress()
    return shown


def quiet_hub_progress() -> None:
    """Turn off huggingface_hub's progress bars: its environment switch for a later import, its call if imported."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils.tqdm import disable_progress_bars

        disable_progress_bars()


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def percent(fraction: float) -> float:
    """A density (fraction) as the number shown under a "... %" header."""
    return 100.0 * fraction


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-align text columns and right-align numeric ones."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and rows for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.2e}"
    return str(value)
