"""Shared output helpers for CLI commands: JSON for scripts, aligned tables for people."""

from __future__ import annotations

import json
from typing import Any, Sequence

import click


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


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
