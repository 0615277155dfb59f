"""Masks on the Hugging Face Hub: push, pull (pinned to a commit), list from headers, one ``hf://`` grammar
(``hf://[datasets/]ORG/NAME[@REVISION][/path]``).

>>> push_mask("rl.smask", "org/model", "masks/rl.smask")                 # doctest: +SKIP
>>> mask = submask.load("hf://org/model@v1.0/masks/rl.smask")           # doctest: +SKIP
>>> mask.metadata.extra["source"]["commit"]                              # doctest: +SKIP
>>> submask.open("hf://org/model@v1.0/masks/rl.smask")                   # doctest: +SKIP

Needs huggingface_hub (``pip install 'submask[hub]'``), imported on first use. Endpoint: the ``endpoint``
argument, else ``HF_ENDPOINT`` read at call time, else huggingface_hub's default; token: ``token``, else
``HF_TOKEN`` or the saved login.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

#: where each name lives, imported on first use: the command line's Hub options need only ``paths`` and ``remote``
_HOMES = {
    "card": "render_section replace_section",
    "listing": "MaskListing MaskListings list_masks",
    "paths": "HubPath hub_target parse_hub_ref parse_hub_url",
    "pull": "PulledMask pull_mask pull_url",
    "push": "PushedMask push_mask",
    "remote": "hub_settings",
}

if TYPE_CHECKING:
    from .card import render_section, replace_section
    from .listing import MaskListing, MaskListings, list_masks
    from .paths import HubPath, hub_target, parse_hub_ref, parse_hub_url
    from .pull import PulledMask, pull_mask, pull_url
    from .push import PushedMask, push_mask
    from .remote import hub_settings

__all__ = [
    "HubPath",
    "MaskListing",
    "MaskListings",
    "PulledMask",
    "PushedMask",
    "hub_settings",
    "hub_target",
    "list_masks",
    "parse_hub_ref",
    "parse_hub_url",
    "pull_mask",
    "pull_url",
    "push_mask",
    "render_section",
    "replace_section",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _HOMES)
