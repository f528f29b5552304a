"""Training entry point: ``python -m seg.train [+experiment=NAME] [overrides]``.

Composes the config, instantiates data, model, callbacks, loggers and trainer, fits, writes ``metrics.json``
into the run folder (:mod:`seg.report`, as ``seg.evaluate`` does) and returns the final metrics; the command
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
from seg.checkpoint import AtomicCheckpointIO
from seg.data.base import SegmentationDataset
from seg.data.class_weights import resolve_class_weights
from seg.data.transforms import with_model_normalization
from seg.hydra_utils import config_tree, entry_point, in_multirun
from seg.init_from import init_weights
from seg.models import input_normalization
from seg.models.weights import safe_load
from seg.provenance import provenance
from seg.report import validation_report, write_report
from seg.resume_check import check_resume_checkpoint, check_resume_config

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

        # the transforms normalise as the backbone's weights expect (timm's mean/std for a timm encoder)
        backbone = OmegaConf.select(cfg.model, "net.backbone")
        try:
            mean, std = input_normalization(backbone if isinstance(backbone, str) else None)
        except ValueError as e:  # an unknown backbone: named before the data is read
            raise ValueError(f"model.net: {e}") from None
        datamodule = instantiate(with_model_normalization(cfg.data, mean, std))
        datamodule.prepare_data()  # data errors (missing root, bad split, bad file headers) before any model is built
        datamodule.setup("fit")
        check_class_count(cfg.model, datamodule.val_set)
        if rank_zero_only.rank == 0:
            datamodule.write_split_lists(out_dir / "splits")  # the samples this run trains and validates on
        ckpt_path = cfg.get("ckpt_path")
        # a resume checkpoint that is missing, unreadable or unsafe fails before the model is built
        checkpoint = safe_load(ckpt_path) if ckpt_path is not None else None
        if checkpoint is not None:
            check_resume_config(cfg, ckpt_path)  # another network refused; changed batch size, lr, seed... named
        # median_freq / inverse_log: counted over the train split's masks once, cached under outputs/cache
        weights = resolve_class_weights(cfg.model.get("class_weights"), datamodule.train_set,
                                        Path(cfg.paths.log_dir) / "cache" / "class_weights", out_dir)  # fmt: skip
        model = instantiate(cfg.model, **({"class_weights": weights} if "class_weights" in cfg.model else {}))
        if checkpoint is not None:
            check_resume_checkpoint(checkpoint, ckpt_path, model)  # another class count or architecture
        if cfg.get("init_from"):
            if checkpoint is not None:
                raise ValueError("init_from and ckpt_path: choose one (ckpt_path resumes a run; init_from starts one)")
            log.info(init_weights(model.net, cfg.init_from))
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
        final = FinalValidation()  # validates the final step in fit when it is no validation step of its own
        callbacks += [ResumeState(), final]
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers,
            # Lightning's resume gets the checkpoint already read (once, weights_only) instead of reading it again
            plugins=[AtomicCheckpointIO(preloaded=(ckpt_path, checkpoint) if checkpoint is not None else None)],
            sync_batchnorm=use_sync_batchnorm(cfg.trainer),
        )
        record.update(precision=str(trainer.precision))  # as Lightning runs it: 32-true, bf16-mixed, ...

        start = time.perf_counter()
        del checkpoint
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        wall = time.perf_counter() - start
        if final.validated_step != trainer.global_step:  # e.g. check_val_every_n_epoch skipped the last epoch
            trainer.validate(model, datamodule=datamodule, verbose=False)  # runs nothing when validation is off

        # the metrics of the final weights only: never the sanity check's, nor an earlier validation's
        validated = final.validated_step == trainer.global_step
        if validated and model.last_val_metrics is not None and trainer.is_global_zero:
            best = trainer.callback_metrics.get("val/mIoU_best")  # as logged: the same on every process
            report = validation_report(model, datamodule.class_names, epoch=trainer.current_epoch,
                                       global_step=trainer.global_step, train_wall_s=round(wall, 1),
                                       mIoU_best=float(best) if best is not None else float("nan"))  # fmt: skip
            path = write_report(out_dir, report, title=f"Validation after {trainer.global_step} steps ({wall:.0f} s)")
            log.info("val mIoU %.4f after %d steps (%.0f s): %s", report["mIoU"], trainer.global_step, wall, path)
            for split, extra in report.get("extra_val", {}).items():
                log.info("%s mIoU %.4f", split, extra["mIoU"])
        elif not validated:
            log.warning("no validation of the final weights (validation is off): no metrics.json written")
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1} if validated else {}
        return {**logged, "global_step": trainer.global_step}


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
