"""A transformers ``Trainer`` callback that restricts training to a mask (see ``submask.train``).

>>> from submask.integrations import SubmaskCallback                                   # doctest: +SKIP
>>> trainer = Trainer(model, args, train_dataset=data,
...                   callbacks=[SubmaskCallback("rl.smask", mode="sparse")])           # doctest: +SKIP
>>> trainer.train(); trainer.save_model()   # saved with the model's own parameter names  # doctest: +SKIP

The restriction starts when the Trainer is built (``on_init_end``), before it creates its optimizer, so in
sparse mode the optimizer holds the masked values (the Trainer builds it from ``model.parameters()``, where
they are registered; the weights never get a gradient, so it skips them) and clips their gradients; when the
callback is added later, it starts at ``on_train_begin`` (dense mode only: sparse mode then raises). The
restriction keeps the mask at every optimizer step by itself (``submask.restrict`` before building the Trainer
works as well). Checkpoints, during training and after it,
hold the model's own parameter names; at the end of training the restriction is removed.

``UpdateDensityCallback`` follows update density over training (``submask.UpdateTracker``): every
``log_every`` steps it logs the fraction of changed values, overall, per module type and along the
tolerance ladder, to the trainer's loggers, and writes the update mask into each checkpoint and, at the end
of training, next to the final model (for a model sharded by FSDP2, every rank compares its shards and the
first rank writes the gathered mask).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UsageError
from ..io import MaskLike
from ..tracker import UpdateTracker
from ..train import Missing, Mode, restrict, restriction_of


class SubmaskCallback(TrainerCallback):
    """Restrict a Trainer's training to ``mask`` (a Mask, MaskFile or .smask path) in ``mode``."""

    def __init__(self, mask: MaskLike, mode: Mode = "dense", missing: Missing = "freeze"):
        self.mask, self.mode, self.missing = mask, mode, missing

    def _start(self, model: Any, optimizer: Any = None) -> None:
        if restriction_of(model) is None:
            if self.mode == "sparse" and optimizer is not None:
                raise UsageError("SubmaskCallback(mode='sparse') must see the model before the Trainer creates "
                                   "its optimizer: pass it in Trainer(callbacks=[...]), not add_callback later")
            restrict(model, self.mask, mode=self.mode, missing=self.missing)

    def on_init_end(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                    **kwargs: Any) -> None:
        if model is not None:
            self._start(model, optimizer)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        self._start(model, optimizer)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        restriction = restriction_of(model)
        if restriction is not None:
            restriction.remove()


class UpdateDensityCallback(TrainerCallback):
    """Log update density every ``log_every`` steps; write ``mask_name`` (unless None) into each checkpoint and,
    at the end of training, into ``args.output_dir``, where ``trainer.save_model()`` writes the final model.

    The reference is ``reference`` (a module or state dict the trainer already holds: no copy) or else the
    model's parameters when training starts (one copy, on the model's device). ``criterion``/``atol``/``rtol``
    are those of ``build_mask``; ``names`` maps the model's parameter names to the mask's (``UpdateTracker``).
    The values go to the logs as ``update_density``, ``update_density/<module type>`` and
    ``update_density@atol=<tolerance>`` (the paper's "update sparsity" is 1 - ``update_density``); built-in
    reporters (``report_to``) see them when this callback comes before them, as ``attach`` arranges:

    >>> UpdateDensityCallback(log_every=50).attach(trainer)                                 # doctest: +SKIP
    """

    def __init__(self, log_every: int = 50, mask_name: str | None = "update.smask", reference: Any = None,
                 criterion: str | None = None, atol: float | None = None, rtol: float | None = None,
                 names: Callable[[str], str] | None = None):
        if log_every < 1:
            raise UsageError(f"UpdateDensityCallback log_every must be >= 1, got {log_every}")
        self.log_every, self.mask_name, self.reference = log_every, mask_name, reference
        self._criterion: dict[str, Any] = {"criterion": criterion, "atol": atol, "rtol": rtol, "names": names}
        self.tracker: UpdateTracker | None = None
        self._pending: dict[str, float] = {}

    def attach(self, trainer: Any) -> UpdateDensityCallback:
        """Add this callback to ``trainer`` ahead of its reporters, so they log what it adds."""
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.tracker is None:
            self.tracker = UpdateTracker(model, self.reference, **self._criterion)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.tracker is not None and state.global_step % self.log_every == 0:
            self._pending = self.tracker.density().as_logs()
            control.should_log = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if self._pending and logs is not None:
            logs.update(self._pending)
            if state.log_history:  # the trainer records its entry before the callbacks see it
                state.log_history[-1].update(self._pending)
            self._pending = {}

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._write(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}", state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._write(args.output_dir, "", state)

    def _write(self, output_dir: str, folder: str, state: Any) -> None:
        """Write the update mask into ``output_dir/folder``; sharded, every rank gathers and the first writes."""
        if self.tracker is None or self.mask_name is None:
            return
        if self.tracker.sharded or state.is_world_process_zero:
            directory = os.path.join(output_dir, folder)
            os.makedirs(directory, exist_ok=True)
            self.tracker.save(os.path.join(directory, self.mask_name), overwrite=True)
