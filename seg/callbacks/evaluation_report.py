"""Lightning callback of ``seg.evaluate``: the report of a finished validation, written by rank 0."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torchmetrics import Metric

from seg.runs.report import validation_report, write_report


class EvaluationReport(Callback):
    """On rank 0 after validation: print the table, write ``metrics.json`` and ``confusion_matrix.png``
    (:mod:`seg.runs.report`, as ``seg.train`` does).

    A callback, so that it runs inside the (possibly spawned) rank-0 process that holds the summed matrix.
    """

    def __init__(self, out_dir: str | Path, class_names: list[str], extra: dict, title: str) -> None:
        self.out_dir, self.class_names, self.extra, self.title = Path(out_dir), class_names, extra, title
        self.start = 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()
        # ddp_spawn pickles the module through torch.multiprocessing, which moves CPU tensors into shared memory:
        # every process would then add into one confusion matrix. reset() gives each process tensors of its own.
        for metric in pl_module.modules():
            if isinstance(metric, Metric):
                metric.reset()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        wall = round(time.perf_counter() - self.start, 2)
        report = validation_report(pl_module, self.class_names, **self.extra, eval_wall_s=wall)
        write_report(self.out_dir, report, self.title, pl_module.last_val_confmat, self.class_names)
