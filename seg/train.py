"""Training entry point: ``python -m seg.train [+experiment=NAME] [overrides]``.

Composes the config, instantiates data, model, callbacks, loggers and trainer, fits, writes ``metrics.json``
into the run folder and returns the optimised metric (for Hydra sweepers).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from seg.metrics import metrics_report, print_report


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON to a temporary file, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


def train(cfg: DictConfig) -> float:
    """Fit the configured model on the configured data; return ``cfg.optimized_metric``."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # data errors (missing root, bad split) surface before any model is built
    datamodule.setup("fit")
    model = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    wall = time.perf_counter() - start

    score = trainer.callback_metrics.get(cfg.optimized_metric)
    if model.last_val_metrics is not None and trainer.is_global_zero:
        report = metrics_report(model.last_val_metrics, datamodule.class_names)
        report.update(
            mIoU_best=float(model.val_miou_best.compute()),
            epoch=trainer.current_epoch,
            global_step=trainer.global_step,
            train_wall_s=round(wall, 1),
        )
        write_json_atomic(out_dir / "metrics.json", report)
        print_report(report, title=f"Validation after {trainer.global_step} steps ({wall:.0f} s)")
    return float(score) if score is not None else float("nan")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
