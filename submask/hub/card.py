"""The model card (README.md) a push maintains: the masks section between two HTML comments, and two keys of the
YAML front matter (``base_model`` and the ``submask`` tag), merged in without touching the rest.

Everything outside the markers and those keys is kept byte for byte; a card without markers gets the section
appended.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from ..errors import HubError
from .listing import MaskListing
from .paths import HubPath

CARD_PATH = "README.md"
START = "<!-- submask:start -->"
END = "<!-- submask:end -->"
TAG = "submask"
PICTURE_SUFFIX = ".density.png"
_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)


def picture_path(mask_path: str) -> str:
    """Where a mask's density picture sits in the repo: next to it."""
    return mask_path + PICTURE_SUFFIX


def render_section(repo_id: str, masks: Sequence[MaskListing], pictures: Collection[str] = ()) -> str:
    """The markdown section (markers included) listing ``masks`` (a table of masks, a table of deltas), with the
    density picture of each mask whose ``picture_path`` is in ``pictures``."""
    plain = [m for m in masks if not m.delta]
    deltas = [m for m in masks if m.delta]
    lines = [START, "## Masks", "",
             ("Parameter-update masks stored in this repo (written by submask; do not edit between these markers). "
             "A mask says which entries of the base model changed; density = changed / all entries."), ""]
    if plain:
        example = plain[0].path
        lines += [(f"Load one with `submask.load(\"hf://{repo_id}/{_cell(example)}\")` or "
                  f"`submask pull hf://{repo_id}/{_cell(example)}`."), "",
                  "| mask | kind | base model | density | changed / all | tensors |",
                  "|---|---|---|---:|---:|---:|",
                  *(f"| `{_cell(m.path)}` | {_cell(m.kind)} | {_base(m)} | {m.density:.4%} | {m.count:,} / "
                    f"{m.numel:,} | {m.tensors} |" for m in plain), ""]
    if deltas:
        lines += ["### Deltas", "",
                  ("A delta also stores the changed values: with its base model it rebuilds the finetuned weight files "
                  "byte for byte (`submask apply BASE DELTA -o DIR`, every file checked against its SHA-256)."), "",
                  "| delta | base model (repo@revision) | density | changed / all | bytes | rebuild with |",
                  "|---|---|---:|---:|---:|---|",
                  *(f"| `{_cell(m.path)}` | {_base(m)} | {m.density:.4%} | {m.count:,} / {m.numel:,} | {m.size:,} | "
                    f"{_rebuild(repo_id, m)} |" for m in deltas), ""]
    shown = [m for m in masks if picture_path(m.path) in pictures]
    for m in shown:
        lines += [f"![density of {_cell(m.path)} by layer and module]({_cell(picture_path(m.path))})", ""]
    return "\n".join([*lines[:-1], END] if lines[-1] == "" else [*lines, END])


def _base(listing: MaskListing) -> str:
    return f"`{_cell(listing.base_model)}`" if listing.base_model else "not recorded (built from local files)"


def _rebuild(repo_id: str, listing: MaskListing) -> str:
    if not listing.base_model:
        return "`submask apply BASE " + _cell(HubPath(repo_id, listing.path).url) + " -o DIR`"
    return f"`submask apply hf://{_cell(listing.base_model)} {_cell(HubPath(repo_id, listing.path).url)} -o DIR`"


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


def merge_metadata(card: str, base_model: str | None) -> str:
    """``card`` with ``base_model: ORG/NAME`` (when given and absent) and the ``submask`` tag (when absent) in its
    YAML front matter (created when missing); every other line is kept as it is."""
    import yaml  # type: ignore[import-untyped]  # huggingface_hub depends on PyYAML

    match = _FRONT.match(card)
    block = match.group(1) if match else ""
    newline = "\r\n" if "\r\n" in (block or card) else "\n"
    try:
        data = yaml.safe_load(block) if block.strip() else {}
    except yaml.YAMLError as exc:
        raise HubError(f"{CARD_PATH}: its YAML front matter does not parse ({str(exc).splitlines()[0]}); fix it, or "
                       "push with --no-card") from None
    if not isinstance(data, dict):
        raise HubError(f"{CARD_PATH}: its YAML front matter is not a mapping; fix it, or push with --no-card")
    lines = block.splitlines(keepends=True)
    if block and not block.endswith("\n"):
        lines[-1] += newline
    if base_model and "base_model" not in data:
        lines.append(f"base_model: {base_model.split('@')[0]}{newline}")
    tags = data.get("tags")
    if "tags" not in data:
        lines += [f"tags:{newline}", f"- {TAG}{newline}"]
    elif isinstance(tags, list) and TAG not in tags:
        lines = _with_tag(lines, newline)
    new_block = "".join(lines)
    if new_block == block:
        return card
    rest = card[match.end():] if match else card
    return f"---{newline}{new_block}---{newline}{rest}"


def _with_tag(lines: list[str], newline: str) -> list[str]:
    """The front matter lines with ``submask`` added to the ``tags`` list, block (``- x``) or flow (``[x]``)."""
    at = next(i for i, line in enumerate(lines) if re.match(r"tags\s*:", line))
    flow = re.match(r"(tags\s*:\s*\[)(.*)\](\s*)$", lines[at].rstrip("\r\n"))
    if flow:
        items = flow.group(2).strip()
        lines[at] = f"{flow.group(1)}{items + ', ' if items else ''}{TAG}]{flow.group(3)}{newline}"
        return lines
    end, indent = at + 1, ""
    while end < len(lines) and (item := re.match(r"(\s*)- ", lines[end])):
        indent, end = item.group(1), end + 1
    return [*lines[:end], f"{indent}- {TAG}{newline}", *lines[end:]]


def _cell(text: str | None) -> str:
    """``text`` as one table cell: no "|" or line breaks, and no "<" (so never a START or END marker)."""
    if text is None:
        return ""
    return text.replace("<", "&lt;").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
