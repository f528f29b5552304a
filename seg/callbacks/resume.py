"""What makes a killed training run resumable, exactly: checkpoints every N steps and after every validation,
and the random-number state in the checkpoint (the atomic checkpoint files are ``seg.runs.checkpoint``'s).

Together with the stateful train loader (``seg.data.datamodule``: sampler position and epoch in the checkpoint,
augmentation drawn from (seed, epoch, sample index)), a run killed mid-epoch and restarted from its last
checkpoint ends at the same step with the same weights and metrics as an uninterrupted run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from seg.callbacks.job_status import record_checkpoint, signals_deferred


class LastCheckpoint(Callback):
    """Keeps ``dirpath/last.ckpt`` the newest state of the run: after every validation, at the end of training
    and, with ``every_n_train_steps`` (``None`` or 0: off), every N optimizer steps, so a crash loses at most N.

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` rewrites last.ckpt only when it also saves a top-k
    checkpoint, i.e. when the monitored metric improved: its last.ckpt can be epochs old. seg turns that off and
    writes last.ckpt here. ``after_validation=False`` writes on the step schedule only.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_train_steps: int | None = None,
        filename: str = "last.ckpt",
        after_validation: bool = True,
    ):
        if every_n_train_steps is not None and every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be a number of steps or null, got {every_n_train_steps}")
        self.path = Path(dirpath) / filename
        self.every_n_train_steps = every_n_train_steps
        self.after_validation = after_validation
        self._saved_step = -1

    def _save(self, trainer: pl.Trainer) -> None:
        with signals_deferred():  # a Ctrl-C or SIGTERM now stops the job once the checkpoint is written and recorded
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state: resumable
            self._saved_step = trainer.global_step
            record_checkpoint(self.path, trainer.global_step)  # for job_status.json, should a signal stop the job

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        n, step = self.every_n_train_steps, trainer.global_step
        if n and step % n == 0 and step != self._saved_step:  # global_step stays put while gradients accumulate
            self._save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.after_validation and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.after_validation and trainer.global_step != self._saved_step:  # no validation after the last step
            self._save(trainer)


def rng_states() -> dict[str, Any]:
    """The global torch (CPU and CUDA), numpy and Python RNG states, as types ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


class ResumeState(Callback):
    """Stores in each checkpoint what Lightning leaves out and an exact resume needs: the RNG states (dropout
    draws from the global torch generator) and the best validation mIoU so far (``SegModule.val_miou_best`` is
    not part of the state_dict). Both are put back just before the first training batch after a resume.
    """

    def __init__(self) -> None:
        self._module: pl.LightningModule | None = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._module = pl_module

    def state_dict(self) -> dict[str, Any]:
        best = getattr(self._module, "val_miou_best", None)
        return {"rng": rng_states(), "val_mIoU_best": float(best.max_value) if best is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2.6 drops the train loader's saved position when configure_optimizers reads
        # trainer.estimated_stepping_batches (SegModule's poly schedule does): that builds the loader before the
        # checkpoint is restored, and the restored position is then never applied (Lightning issue #20550).
        # Apply it here, before the first batch is fetched, and start the iterator again from it.
        fit_loop = trainer.fit_loop
        pending = bool(fit_loop._combined_loader_states_to_load)
        fit_loop._load_combined_loader_states()  # a no-op unless restarting mid-epoch with saved states
        if pending and not fit_loop._combined_loader_states_to_load and fit_loop._data_fetcher is not None:
            iter(fit_loop._data_fetcher)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._pending is None:
            return
        # here rather than at load time: nothing between the checkpoint and this batch may draw from them
        set_rng_states(self._pending["rng"])
        best = self._pending.get("val_mIoU_best")
        if best is not None and np.isfinite(best) and hasattr(pl_module, "val_miou_best"):
            pl_module.val_miou_best.update(torch.tensor(best))
        self._pending = None
