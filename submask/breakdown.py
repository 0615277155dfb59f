"""Where a tensor sits in a model, parsed from its name: layer index and module type; grouping; densities per group.

>>> locate("model.layers.12.self_attn.q_proj.weight")
Location(layer=12, module='self_attn.q_proj')
>>> locate("encoder.layer.3.attention.self.query.weight")
Location(layer=3, module='attention.self.query')
>>> locate("model.embed_tokens.weight")
Location(layer=None, module='embeddings')
>>> group_of("transformer.h.5.mlp.c_fc.weight", "layer")
'5'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .algebra import Counts
from .errors import UsageError
from .io import MaskLike, open_mask

GroupBy = Literal["overall", "tensor", "layer", "module"]
GROUP_BY: tuple[str, ...] = ("overall", "tensor", "layer", "module")
OVERALL = "all"

# "<anything>.layers.12.<rest>" and the other usual spellings of a block list (BERT layer, GPT-2 h, ViT blocks)
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.(.+)$")
_OUTSIDE_LAYERS = (  # (pattern, module type) for tensors outside the numbered blocks, first match wins
    (re.compile(r"embed|wte|wpe|tok_emb|pos_emb"), "embeddings"),
    (re.compile(r"lm_head|output\.weight$|classifier"), "lm_head"),
    (re.compile(r"norm|ln_f|ln_out"), "norm"),
    (re.compile(r"pooler"), "pooler"),
)
#: a module's weight and bias share its module type
_PARAMETER_SUFFIXES = (".weight", ".bias")


@dataclass(frozen=True)
class Location:
    """A tensor's layer index (None outside the numbered blocks) and module type."""

    layer: int | None
    module: str


def locate(name: str) -> Location:
    """Layer index and module type of a parameter name.

    Inside a block, the module type is the rest of the name after the layer index without ".weight" or
    ".bias" ("self_attn.q_proj", "mlp.up_proj"); outside, one of "embeddings", "lm_head", "norm", "pooler",
    or the name itself without ".weight" or ".bias".
    """
    match = _LAYER.search(name)
    if match:
        return Location(int(match.group(1)), _strip_suffix(match.group(2)))
    for pattern, module in _OUTSIDE_LAYERS:
        if pattern.search(name):
            return Location(None, module)
    return Location(None, _strip_suffix(name))


def _strip_suffix(name: str) -> str:
    for suffix in _PARAMETER_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def group_of(name: str, by: str) -> str:
    """The group a tensor falls in: "all" (overall), its name (tensor), its layer index or, outside the
    layers, its module type (layer), or its module type (module)."""
    if by == "overall":
        return OVERALL
    if by == "tensor":
        return name
    location = locate(name)
    if by == "layer":
        return str(location.layer) if location.layer is not None else location.module
    if by == "module":
        return location.module
    raise UsageError(f"unknown grouping {by!r}; use one of {', '.join(GROUP_BY)}")


def sort_groups(groups: Iterable[str], by: str) -> list[str]:
    """Groups in display order: numbered layers ascending, then the others in first-seen order."""
    groups = list(dict.fromkeys(groups))
    if by != "layer":
        return groups
    return sorted((g for g in groups if g.isdigit()), key=int) + [g for g in groups if not g.isdigit()]


def density_breakdown(mask: MaskLike, by: str = "layer") -> dict[str, Counts]:
    """Set and total elements per group ("all" first), from the file header alone for files."""
    with open_mask(mask) as opened:
        groups: dict[str, Counts] = {OVERALL: Counts(0, 0)}
        for name, shape in opened.shapes.items():
            counts = Counts(math.prod(shape), opened.counts[name])
            for group in dict.fromkeys((OVERALL, group_of(name, by))):
                groups[group] = groups.get(group, Counts(0, 0)) + counts
    order = [OVERALL] + sort_groups([g for g in groups if g != OVERALL], by)
    return {group: groups[group] for group in order}
