"""A transformers ``Trainer`` callback that restricts training to a mask (see ``submask.train``).

>>> from submask.integrations import SubmaskCallback                                   # doctest: +SKIP
>>> trainer = Trainer(model, args, train_dataset=data,
...                   callbacks=[SubmaskCallback("rl.smask", mode="sparse")])           # doctest: +SKIP
>>> trainer.train(); trainer.save_model()   # saved with the model's own parameter names  # doctest: +SKIP

The restriction starts when the Trainer is built (``on_init_end``), before it creates its optimizer, so in
sparse mode the optimizer holds the masked values (the Trainer builds it from ``model.parameters()``, where
they are registered; the weights never get a gradient, so it skips them) and clips their gradients; when the
callback is added later, it starts at ``on_train_begin`` (dense mode only: sparse mode then raises). In dense
mode the entries outside the mask are reset after every optimizer step (``on_optimizer_step``); in sparse
mode the values are written into the weights after each step. Checkpoints, during training and after it,
hold the model's own parameter names; at the end of training the restriction is removed.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ..errors import SubmaskError
from ..fit import MaskLike
from ..train import Missing, Mode, restrict, restriction_of


class SubmaskCallback(TrainerCallback):
    """Restrict a Trainer's training to ``mask`` (a Mask, MaskFile or .smask path) in ``mode``."""

    def __init__(self, mask: MaskLike, mode: Mode = "dense", missing: Missing = "freeze"):
        self.mask, self.mode, self.missing = mask, mode, missing

    def _start(self, model: Any, optimizer: Any = None) -> None:
        if restriction_of(model) is None:
            if self.mode == "sparse" and optimizer is not None:
                raise SubmaskError("SubmaskCallback(mode='sparse') must see the model before the Trainer creates "
                                   "its optimizer: pass it in Trainer(callbacks=[...]), not add_callback later")
            restrict(model, self.mask, mode=self.mode, missing=self.missing)

    def on_init_end(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                    **kwargs: Any) -> None:
        if model is not None:
            self._start(model, optimizer)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        self._start(model, optimizer)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        restriction = restriction_of(model)
        if restriction is not None:
            restriction.restore()

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        restriction = restriction_of(model)
        if restriction is not None:
            restriction.remove()
