"""Lightning callback: a fixed set of validation images as image | ground truth | prediction | errors grids, after
every validation, in each active logger that shows images (TensorBoard, MLflow, W&B), so the masks can be watched
improving (``tensorboard --logdir outputs``, ``mlflow ui --backend-store-uri outputs/mlflow``)."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

from seg.inference import class_map, infer
from seg.viz import ERROR_LEGEND, PANEL_TITLES, sample_panels, tile


def fixed_indices(length: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(length)``, first and last included; the same every time."""
    if length <= 0 or count <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, length - 1, min(count, length)).round()})


class ValidationImageLogger(Callback):
    """After each validation (not the sanity check), on rank 0, predict ``num_samples`` fixed validation images
    and log one grid image under ``tag``: a row per sample, columns image | ground truth | prediction | errors.

    The images are spread evenly over the validation split and predicted with the module's own inference
    settings (those of the validation). Panels are shrunk to at most ``max_side`` px. TensorBoard gets an image
    per step under ``tag``; MLflow an image artifact per step (``images/<tag with ~ for />+step+N...``, the step
    slider of the run's Artifacts tab); W&B a ``wandb.Image`` under ``tag``. The column legend goes once to each
    (TensorBoard text, MLflow ``<tag>_legend.txt``, the W&B image's caption). Without such a logger it does
    nothing.
    """

    def __init__(self, num_samples: int = 4, max_side: int | None = 256, tag: str = "val/samples") -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples={num_samples}; expected >= 0 (0 turns the image logger off)")
        self.num_samples, self.max_side, self.tag = num_samples, max_side, tag
        self._legend_written = False

    @staticmethod
    def _dataset(trainer: pl.Trainer):
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        dataset = getattr(loader, "dataset", None)
        if not all(getattr(dataset, a, None) is not None for a in ("load", "transform", "palette")):
            return None
        return dataset

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.num_samples == 0:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, IMAGE_LOGGERS)]
        if not loggers:
            return
        dataset = self._dataset(trainer)
        if dataset is None:
            rank_zero_warn("ValidationImageLogger: the validation dataset has no load/transform/palette; no images")
            return
        rows = []
        for index in fixed_indices(len(dataset), self.num_samples):
            image, mask = dataset.load(index)
            sample = dataset.transform(image=image, mask=mask)  # as the validation sees it
            x = sample["image"].unsqueeze(0).to(pl_module.device)
            target = np.asarray(sample["mask"], dtype=np.uint8)
            with trainer.precision_plugin.val_step_context():  # the validation's autocast
                scores = infer(pl_module, x, pl_module.inference, out_size=target.shape)
            pred = class_map(scores)[0].to(torch.uint8).cpu().numpy()
            rows.append(sample_panels(image, target, pred, dataset.palette, self.max_side))
        grid = tile(rows)
        legend = f"Columns: {' | '.join(PANEL_TITLES)}. {ERROR_LEGEND}."
        for logger in loggers:
            self._log(logger, grid, legend, trainer.global_step)
        self._legend_written = True

    def _log(self, logger: Logger, grid: np.ndarray, legend: str, step: int) -> None:
        """Send the HWC uint8 ``grid`` (and, the first time, ``legend``) to one logger."""
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment
            if not self._legend_written:
                writer.add_text(f"{self.tag}/legend", legend, global_step=step)
            writer.add_image(self.tag, grid, global_step=step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            client, run_id = logger.experiment, logger.run_id
            if not self._legend_written:
                client.log_text(run_id, legend, f"{self.tag}_legend.txt")
            client.log_image(run_id, grid, key=self.tag, step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(self.tag, [grid], step=step, caption=[legend])


# the loggers ValidationImageLogger writes to
IMAGE_LOGGERS = (TensorBoardLogger, MLFlowLogger, WandbLogger)
