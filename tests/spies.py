"""Callbacks that record what a training run did, for tests that add them to a run's config
(``+callbacks.spy._target_=tests.spies.TrainSpy +callbacks.spy.out=PATH``) and read the file back with ``torch.load``.

They write to a file rather than keep a registry: Hydra imports ``tests.spies`` by that name, which need not be the
module object pytest imported.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class TrainSpy(Callback):
    """Writes to ``out`` at the end of training (and when it fails):

    - ``start``: at ``on_train_start``, after any resume checkpoint was restored: ``global_step``, the module's
      ``state_dict``, the optimizer's ``state_dict``, the scheduler's ``last_epoch``;
    - ``batches``: ``{global_step: (epoch, batch_idx, image sum, mask sum)}`` for every training batch the process
      ran (what its loader fetched), fingerprinting the batch's content;
    - ``lrs``: ``{global_step: [lr of each parameter group]}``, the learning rates that step trains with.

    ``poison_step`` (optional): at the start of that step, set the first BatchNorm's ``running_var`` to +inf (the loss
    stays finite: training mode normalises with the batch's statistics).
    """

    def __init__(self, out: str, poison_step: int | None = None) -> None:
        self.out = Path(out)
        self.poison_step = poison_step
        self.record: dict[str, Any] = {"start": None, "batches": {}, "lrs": {}}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        self.record["start"] = {
            "global_step": trainer.global_step,
            "state_dict": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
            "scheduler_last_epoch": scheduler.last_epoch if scheduler is not None else None,
        }

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        x, y = batch
        step = trainer.global_step
        self.record["batches"][step] = (trainer.current_epoch, batch_idx, float(x.double().sum()), int(y.long().sum()))
        self.record["lrs"][step] = [float(g["lr"]) for g in trainer.optimizers[0].param_groups]
        if self.poison_step is not None and step == self.poison_step:
            bn = next(m for m in pl_module.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))

    def _write(self) -> None:
        torch.save(self.record, self.out)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._write()
