"""Lightning callback of ``seg.train``: the final weights of a fit are validated, so that ``metrics.json`` and the
sweep objective describe them (never the sanity check, nor an earlier validation)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class FinalValidation(Callback):
    """Validates the step that reaches ``trainer.max_steps`` inside fit, and records which step was validated last.

    A run that ends on ``max_steps`` in mid-epoch (shorter than an epoch, no ``val_check_interval``) would end
    unvalidated: at that step this asks Lightning to stop (``trainer.should_stop``), which runs the validation
    there, inside fit, so the best and last checkpoints follow it as after any other validation.

    ``validated_step`` is the global step of the last validation (None before the first; the sanity check does not
    count). ``seg.train`` validates once more after fit when it is not the final step (e.g.
    ``check_val_every_n_epoch`` skipped the last epoch).
    """

    def __init__(self) -> None:
        self.validated_step: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_step = trainer.global_step
