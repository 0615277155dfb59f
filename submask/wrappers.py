"""Models wrapped by PEFT: the parameter names of their base model, which masks use.

A PEFT model (``peft.PeftModel``, e.g. LoRA) names the base model's parameters ``base_model.model.<name>``
and, in a layer it adapts, moves the base weight under ``.base_layer.``; the adapters' own parameters (LoRA's
``lora_A``/``lora_B``) have no base name. ``restrict`` and ``UpdateTracker`` map the names with ``peft_names``
when given a PEFT model and no ``names``; ``restrict`` leaves the adapters trainable, and ``UpdateTracker``
compares the base model's weights as the adapters make them (``effective_parameters``), so its masks are
those of the merged model against the base, in the base model's names.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PEFT_PREFIX = "base_model.model."
PEFT_BASE_LAYER = ".base_layer."


def is_peft_model(module: Any) -> bool:
    """True for a ``peft.PeftModel`` (peft is not imported unless the caller has imported it)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(module, peft.PeftModel)


def peft_names(name: str) -> str:
    """The base model's name of a PEFT model's parameter (adapters keep their name, less the prefix)."""
    return name.removeprefix(PEFT_PREFIX).replace(PEFT_BASE_LAYER, ".")


def names_for(module: Any, names: Callable[[str], str] | None) -> Callable[[str], str] | None:
    """``names``, or for a PEFT model given none, ``peft_names``."""
    if names is None and is_peft_model(module):
        return peft_names
    return names


def adapter_parameters(module: Any) -> set[int]:
    """The ids of a PEFT model's adapter parameters (none for another module)."""
    if not is_peft_model(module):
        return set()
    markers = [f".{adapter}." for adapter in module.peft_config]
    return {id(p) for name, p in module.named_parameters() if any(marker in name for marker in markers)}


def effective_parameters(module: Any, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``saved`` (a module's saved parameters by name) with a PEFT model's adapters folded in: each adapted
    layer's base weight as the active adapters make it (base + their delta, unless merged into it already),
    and the adapters' own parameters left out. Another module's ``saved`` is returned as it is."""
    if not is_peft_model(module):
        return saved
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapters = adapter_parameters(module)
    effective = {name: value for name, value in saved.items() if id(value) not in adapters}
    with torch.no_grad():
        for prefix, layer in module.named_modules():
            if not isinstance(layer, BaseTunerLayer) or layer.merged or not hasattr(layer, "get_delta_weight"):
                continue
            name = f"{prefix}{PEFT_BASE_LAYER}weight"
            if name in effective:
                weight = effective[name].detach()
                for adapter in layer.active_adapters:
                    if adapter in getattr(layer, "lora_A", {}):
                        weight = weight + layer.get_delta_weight(adapter).to(weight.dtype)
                effective[name] = weight
    return effective
