"""Evaluation entry point: ``python -m seg.evaluate ckpt_path=PATH [inference=whole|slide|ms_flip] [data=...]``.

Runs the training validation (``SegModule.validation_step``, so the numbers agree) with the chosen inference
mode under ``Trainer.validate``; prints the rich table and writes ``metrics.json`` (the training schema plus the
confusion matrix) and ``confusion_matrix.png`` into the evaluate run folder. Exact under DDP: the validation
sampler never pads and the confusion matrix is summed over processes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, RichProgressBar
from torchmetrics import Metric

from seg.checkpoint import LoadedModel, check_num_classes, load_model, run_inference_defaults
from seg.cli import exit_on_error
from seg.data.datamodule import SegDataModule
from seg.inference import InferenceConfig, auto_flag
from seg.metrics import metrics_report, print_report
from seg.train import write_json_atomic
from seg.viz import save_confusion_matrix

TRAINER_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def build_datamodule(cfg: DictConfig, loaded: LoadedModel) -> SegDataModule:
    """The configured data (or the training run's), set up for the evaluated split; class counts checked."""
    data_cfg = cfg.get("data")
    if data_cfg is None:
        if loaded.run_cfg is None:
            raise ValueError(f"{loaded.ckpt_path} has no training run folder: choose the data, data=NAME data.root=DIR")
        data_cfg = loaded.run_cfg.data
    overrides = {"val_split": cfg.get("split"), "val_batch_size": cfg.get("batch_size"),
                 "num_workers": cfg.get("num_workers")}  # fmt: skip
    datamodule = instantiate(data_cfg, **{k: v for k, v in overrides.items() if v is not None})
    datamodule.prepare_data()
    datamodule.setup("validate")
    check_num_classes(loaded, type(datamodule.val_set).__name__, datamodule.val_set.num_classes)
    return datamodule


class EvaluationReport(Callback):
    """On rank 0 after validation: print the table, write ``metrics.json`` and ``confusion_matrix.png``.

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
        report = metrics_report(pl_module.last_val_metrics, self.class_names)
        confmat = pl_module.last_val_confmat
        report.update(self.extra, pixels=int(confmat.sum()), eval_wall_s=round(time.perf_counter() - self.start, 2))
        report["confusion_matrix"] = confmat.tolist()
        write_json_atomic(self.out_dir / "metrics.json", report)
        save_confusion_matrix(confmat, self.class_names, self.out_dir / "confusion_matrix.png")
        print_report(report, title=self.title)


def evaluate(cfg: DictConfig) -> dict | None:
    """Score ``cfg.ckpt_path``; return the written report (None on ranks other than 0)."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(cfg.ckpt_path, out_dir, channels_last=auto_flag(cfg.inference.channels_last))
    inference = InferenceConfig.from_options(cfg.inference, run_inference_defaults(loaded.run_cfg))
    datamodule = build_datamodule(cfg, loaded)
    # Lightning's precision plugin owns autocast here, exactly as during the training validation
    loaded.module.inference = dataclasses.replace(inference, precision=None)
    split = datamodule.val_split
    extra = {
        "ckpt_path": str(cfg.ckpt_path),
        "dataset": type(datamodule.val_set).__name__,
        "split": split,
        "images": len(datamodule.val_set),
        "inference": inference.describe(),
        "precision": inference.precision,
    }
    title = f"{extra['dataset']} {split}, {extra['images']} images, {inference.describe()} ({inference.precision})"
    writer = EvaluationReport(out_dir, datamodule.class_names, extra, title)
    callbacks: list[Callback] = [writer]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    trainer = pl.Trainer(
        **cfg.trainer,
        precision=TRAINER_PRECISION[inference.precision],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.validate(loaded.module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return None
    return json.loads((out_dir / "metrics.json").read_text())


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@exit_on_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
