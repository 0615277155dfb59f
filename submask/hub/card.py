"""The masks section of a repo's model card (README.md), between two HTML comments.

Everything outside the markers is kept byte for byte; a card without them gets the section appended.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import HubError
from .listing import MaskListing

CARD_PATH = "README.md"
START = "<!-- submask:start -->"
END = "<!-- submask:end -->"


def render_section(repo_id: str, masks: Sequence[MaskListing]) -> str:
    """The markdown section (markers included) listing ``masks``."""
    rows = [f"| `{_cell(m.path)}` | {_cell(m.kind)} | {_cell(m.base_model)} | {m.density:.4%} "
            f"| {m.count:,} / {m.numel:,} | {m.tensors} |" for m in masks]
    example = _cell(masks[0].path) if masks else "masks/NAME.smask"
    return "\n".join([
        START,
        "## Masks",
        "",
        "Parameter-update masks stored in this repo (written by submask; do not edit between these markers).",
        f"Load one with `submask pull {repo_id} {example}` or `submask.load(\"hf://{repo_id}/{example}\")`.",
        "",
        "| path | kind | base model | density | set / total | tensors |",
        "|---|---|---|---:|---:|---:|",
        *rows,
        END,
    ])


def replace_section(card: str | None, section: str, repo_id: str) -> str:
    """``card`` with its masks section replaced by ``section`` (appended when absent; a new card if None)."""
    if card is None:
        return f"# {repo_id}\n\n{section}\n"
    start, end = card.find(START), card.find(END)
    if start < 0 and end < 0:
        return card + ("" if card.endswith("\n") or not card else "\n") + "\n" + section + "\n"
    if start < 0 or end < start or card.count(START) > 1 or card.count(END) > 1:
        raise HubError(f"{repo_id}: {CARD_PATH} has unpaired or repeated '{START}' / '{END}' markers; fix them by "
                       "hand, or push with --no-card")
    return card[:start] + section + card[end + len(END):]


def _cell(text: str | None) -> str:
    """``text`` as one table cell: no "|" or line breaks, and no "<" (so never a START or END marker)."""
    if text is None:
        return ""
    return text.replace("<", "&lt;").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
