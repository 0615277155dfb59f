"""TRL's reference-model sync (``sync_ref_model=True``: TR-DPO, and GRPO's) for a model restricted by submask.

TRL's ``SyncRefModelCallback`` mixes the policy into the reference model after every ``ref_model_sync_steps``
steps, pairing ``model.parameters()`` with the reference's by position. Sparse mode registers each restricted
weight's masked values next to it (``<name>_submask_values``), so the policy has more parameters than the
reference and TRL's pairing fails (``zip(..., strict=True)``: "argument 2 is longer than argument 1").
``ReferenceSyncCallback`` pairs them by name and leaves the values out: the weights hold every trained entry
after each optimizer step, when the sync runs. Dense mode works with TRL's own callback too.

>>> trainer = trl.DPOTrainer(model=model, args=DPOConfig(..., sync_ref_model=True), ...)  # doctest: +SKIP
>>> ReferenceSyncCallback().attach(trainer)                                              # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from trl.trainer.callbacks import SyncRefModelCallback

from ..errors import MismatchError
from ..train.sparse import VALUES


class ReferenceSyncCallback(SyncRefModelCallback):
    """TRL's ``SyncRefModelCallback``, pairing the policy's parameters with the reference's by name (sparse
    mode's values left out). Not for DeepSpeed ZeRO-3, whose parameters are gathered by TRL's own callback."""

    def __init__(self, ref_model: Any = None, accelerator: Any = None):
        super().__init__(ref_model=ref_model, accelerator=accelerator)

    def attach(self, trainer: Any) -> ReferenceSyncCallback:
        """Take the place of the ``SyncRefModelCallback`` that TRL gave ``trainer`` (with its reference model
        and accelerator); a trainer built without ``sync_ref_model`` has none, and is left as it is."""
        for callback in list(trainer.callback_handler.callbacks):
            if type(callback) is SyncRefModelCallback:
                self.ref_model, self.accelerator = callback.ref_model, callback.accelerator
                trainer.remove_callback(callback)
                trainer.add_callback(self)
        return self

    @staticmethod
    def sync_target_model(model: Any, target_model: Any, alpha: float) -> None:
        """``target = (1 - alpha) * target + alpha * model`` for each parameter of ``target_model``, in place,
        taking the parameter of the same name from ``model``."""
        sources = {name: p for name, p in model.named_parameters() if not name.endswith(VALUES)}
        targets = dict(target_model.named_parameters())
        if sources.keys() != targets.keys():
            differ = sorted(sources.keys() ^ targets.keys())
            raise MismatchError(f"the reference model's parameters are not the policy's ({len(differ)} names in "
                                f"one only, e.g. {differ[:3]}): load the reference from the policy's own "
                                "checkpoint, so that TRL's sync_ref_model can mix them")
        for name, target in targets.items():
            target.data.mul_(1.0 - alpha).add_(sources[name].data, alpha=alpha)
