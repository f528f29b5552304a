"""Training entry point: ``python -m seg.train [+experiment=NAME] [overrides]``.

Composes the config, instantiates data, model, callbacks, loggers and trainer, fits, writes ``metrics.json``
into the run folder (:mod:`seg.runs.report`, as ``seg.evaluate`` does) and returns the final metrics; the command
returns ``cfg.optimized_metric`` of them to Hydra's sweepers. Bad input (data, config values, a
resume checkpoint) is found before the model is built or trained and ends with one ``error: ...`` line.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console

from seg.callbacks.final_validation import FinalValidation
from seg.callbacks.resume import ResumeState
from seg.data.base import SegmentationDataset
from seg.data.class_weights import resolve_class_weights
from seg.data.transforms import with_model_normalization
from seg.models import input_normalization
from seg.models.support.weights import safe_load
from seg.runs.checkpoint import AtomicCheckpointIO
from seg.runs.init_from import init_weights
from seg.runs.provenance import provenance
from seg.runs.report import validation_report, write_report
from seg.runs.resume import check_resume_checkpoint, check_resume_config
from seg.utils.cli import entry_point, in_multirun
from seg.utils.compose import config_tree

__all__ = ["main", "objective", "train"]
log = logging.getLogger("seg.train")  # not __name__: "__main__" under python -m seg.train


def use_sync_batchnorm(trainer_cfg: DictConfig) -> bool:
    """``trainer.sync_batchnorm``, honoured on GPUs only: SyncBatchNorm refuses CPU tensors."""
    if not trainer_cfg.get("sync_batchnorm", False):
        return False
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not on_gpu:
        log.warning("trainer.sync_batchnorm=true ignored: SyncBatchNorm runs on GPUs only (%s)", accelerator)
    return on_gpu


def check_class_count(model_cfg: DictConfig, dataset: SegmentationDataset) -> None:
    """ValueError, before any model is built, when the model's class count is not the dataset's."""
    for key in ("num_classes", "net.num_classes"):
        value = OmegaConf.select(model_cfg, key)
        if value is not None and int(value) != dataset.num_classes:
            raise ValueError(
                f"model.{key}={value} but {dataset.name} has {dataset.num_classes} classes: set it to "
                f"{dataset.num_classes} (or use a dataset with {value})"
            )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model on the configured data; return the final logged metrics (``val/mIoU``,
    ``val/mIoU_best``, ...; none when the final weights were not validated) and ``global_step``."""
    if cfg.get("init_from") and cfg.get("ckpt_path") is not None:
        raise ValueError("init_from and ckpt_path: choose one (ckpt_path resumes a run; init_from starts one)")
    if cfg.get("print_config") and rank_zero_only.rank == 0:
        Console().print(config_tree(cfg))  # print_config=false turns it off
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # provenance.json: the code, libraries, machine, precision and command of this run, completed at its end
    # (the configured precision until the trainer says which it runs)
    precision = OmegaConf.select(cfg, "trainer.precision")
    with provenance(out_dir, "train", write=rank_zero_only.rank == 0, precision=precision) as record:
        log.info("run folder: %s", out_dir)
        datamodule = build_datamodule(cfg, out_dir)  # bad data fails here, before any model is built
        ckpt_path, checkpoint = read_resume_checkpoint(cfg)
        model = build_model(cfg, datamodule, out_dir, ckpt_path, checkpoint)
        final = FinalValidation()  # validates the final step in fit when it is no validation step of its own
        trainer = build_trainer(cfg, [ResumeState(), final], ckpt_path, checkpoint)
        record.update(precision=str(trainer.precision))  # as Lightning runs it: 32-true, bf16-mixed, ...
        del checkpoint

        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        wall = time.perf_counter() - start
        if final.validated_step != trainer.global_step:  # e.g. check_val_every_n_epoch skipped the last epoch
            trainer.validate(model, datamodule=datamodule, verbose=False)  # runs nothing when validation is off

        validated = final.validated_step == trainer.global_step  # the final weights' metrics, never earlier ones
        if validated:
            write_final_report(trainer, model, datamodule, out_dir, wall)
        else:
            log.warning("no validation of the final weights (validation is off): no metrics.json written")
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1} if validated else {}
        return {**logged, "global_step": trainer.global_step}


def build_datamodule(cfg: DictConfig, out_dir: Path) -> pl.LightningDataModule:
    """The datamodule, set up for fitting, its transforms normalising as the backbone's weights expect (timm's
    mean/std for a timm encoder); the samples it trains and validates on listed under ``out_dir/splits``. Data
    errors (missing root, bad split, bad file headers, another class count than the model's) are raised here."""
    backbone = OmegaConf.select(cfg.model, "net.backbone")
    try:
        mean, std = input_normalization(backbone if isinstance(backbone, str) else None)
    except ValueError as e:  # an unknown backbone: named before the data is read
        raise ValueError(f"model.net: {e}") from e
    if OmegaConf.select(cfg.model, "net.input_mean") is not None:  # per-band (model.net.in_channels), or set
        mean, std = cfg.model.net.input_mean, cfg.model.net.input_std
    datamodule = instantiate(with_model_normalization(cfg.data, mean, std))
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_class_count(cfg.model, datamodule.val_set)
    if rank_zero_only.rank == 0:
        datamodule.write_split_lists(out_dir / "splits")
    return datamodule


def read_resume_checkpoint(cfg: DictConfig) -> tuple[str | None, dict | None]:
    """``(ckpt_path, checkpoint)`` of a resumed run, read once (weights only) and checked against the config
    (another network refused; a changed batch size, lr, seed... named); ``(None, None)`` for a new run."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None, None
    checkpoint = safe_load(ckpt_path)  # missing, unreadable or unsafe: fails before the model is built
    check_resume_config(cfg, ckpt_path)
    return ckpt_path, checkpoint


def build_model(
    cfg: DictConfig, datamodule: pl.LightningDataModule, out_dir: Path, ckpt_path: str | None, checkpoint: dict | None
) -> pl.LightningModule:
    """The LightningModule: class weights counted over the train split's masks when the config asks (cached
    under ``outputs/cache``), a resume checkpoint checked against it (class count, architecture), the net's
    weights from ``init_from`` when set."""
    extra = {}
    if "class_weights" in cfg.model:  # median_freq / inverse_log: counted once, cached
        cache = Path(cfg.paths.log_dir) / "cache" / "class_weights"
        weights = cfg.model.get("class_weights")
        extra["class_weights"] = resolve_class_weights(weights, datamodule.train_set, cache, out_dir)
    model = instantiate(cfg.model, **extra)
    if checkpoint is not None:
        check_resume_checkpoint(checkpoint, ckpt_path, model)
    if cfg.get("init_from"):
        log.info(init_weights(model.net, cfg.init_from))
    return model


def build_trainer(
    cfg: DictConfig, seg_callbacks: list[pl.Callback], ckpt_path: str | None, checkpoint: dict | None
) -> pl.Trainer:
    """The trainer with the configured callbacks and loggers, then ``seg_callbacks``; checkpoints written
    atomically, and a resume checkpoint already read handed to Lightning instead of read again."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    preloaded = (ckpt_path, checkpoint) if checkpoint is not None else None
    return instantiate(
        cfg.trainer,
        callbacks=callbacks + seg_callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO(preloaded=preloaded)],
        sync_batchnorm=use_sync_batchnorm(cfg.trainer),
    )


def write_final_report(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule, out_dir: Path, wall: float
) -> None:
    """``metrics.json`` (and the report beside it) of the final weights' validation, on the main process."""
    if model.last_val_metrics is None or not trainer.is_global_zero:
        return
    best = trainer.callback_metrics.get("val/mIoU_best")  # as logged: the same on every process
    report = validation_report(
        model,
        datamodule.class_names,
        epoch=trainer.current_epoch,
        global_step=trainer.global_step,
        train_wall_s=round(wall, 1),
        mIoU_best=float(best) if best is not None else float("nan"),
    )
    path = write_report(out_dir, report, title=f"Validation after {trainer.global_step} steps ({wall:.0f} s)")
    log.info("val mIoU %.4f after %d steps (%.0f s): %s", report["mIoU"], trainer.global_step, wall, path)
    for split, extra in report.get("extra_val", {}).items():
        log.info("%s mIoU %.4f", split, extra["mIoU"])


def objective(metrics: dict[str, float], cfg: DictConfig) -> float:
    """``cfg.optimized_metric`` of ``train``'s metrics, for Hydra's sweepers; in a multirun, a run that never
    validated or diverged is an error (Optuna refuses a NaN objective with a traceback of its own)."""
    value = metrics.get(cfg.optimized_metric, float("nan"))
    if math.isnan(value) and in_multirun():
        state = "not logged" if cfg.optimized_metric not in metrics else "nan"
        raise ValueError(
            f"optimized_metric {cfg.optimized_metric} is {state} after {metrics.get('global_step')} steps: the run "
            "never validated "
            "(trainer.limit_val_batches, check_val_every_n_epoch) or diverged"
        )
    return value


def run(cfg: DictConfig) -> float:
    """The command: train, then hand ``cfg.optimized_metric`` to Hydra."""
    return objective(train(cfg), cfg)


main = entry_point("train", run)

if __name__ == "__main__":
    main()
