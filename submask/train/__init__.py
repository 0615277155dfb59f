"""Finetuning restricted to a mask: every parameter entry outside the mask keeps its exact starting value.

``restrict(model, mask, mode="dense" | "sparse")`` returns a ``Restriction``; ``unrestrict(model)`` lifts it.
How each mode keeps the guarantee, what it costs, and how it works under DDP and FSDP2: docs/restriction.md.

>>> handle = submask.restrict(model, "rl.smask", mode="sparse")                       # doctest: +SKIP
>>> optimizer = torch.optim.AdamW(handle.parameters(), lr=1e-5, weight_decay=0.1)    # doctest: +SKIP
>>> ...  # train as usual
>>> submask.unrestrict(model)                                                         # doctest: +SKIP
"""

from .restriction import Missing, Mode, Restriction, restrict, restriction_of, unrestrict

__all__ = ["Missing", "Mode", "Restriction", "restrict", "restriction_of", "unrestrict"]
