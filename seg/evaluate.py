"""Evaluation entry point: ``python -m seg.evaluate ckpt_path=PATH [inference=whole|slide|ms_flip] [data=...]``.

Runs the training validation (``SegModule.validation_step``) with the chosen inference mode under
``Trainer.validate``; prints the rich table and writes ``metrics.json`` (the training schema plus the confusion
matrix and how the net ran) and ``confusion_matrix.png`` into the evaluate run folder. By default the net runs on
the fastest path that keeps the accuracy on the machine at hand: bf16 autocast on a CPU with bf16 units (val mIoU
within 0.001 of fp32 on CamVid, benchmarks/RESULTS.md section 26); ``inference.precision=32`` scores it as the
fp32 training validation did, to every digit. Exact under DDP: the validation sampler never pads and the
confusion matrix is summed over processes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, RichProgressBar
from pytorch_lightning.utilities import rank_zero_only

from seg.callbacks.evaluation_report import EvaluationReport
from seg.data.datamodule import SegDataModule
from seg.inference import TRAINER_PRECISION, InferenceConfig, auto_flag, runtime_record
from seg.runs.config import run_inference_defaults
from seg.runs.loaded import LoadedModel, check_num_classes, data_config, load_model
from seg.runs.provenance import provenance
from seg.utils.cli import entry_point


def build_datamodule(cfg: DictConfig, loaded: LoadedModel) -> SegDataModule:
    """The configured data (or the training run's), set up for the evaluated split; class counts checked."""
    data_cfg = data_config(cfg, loaded)
    overrides = {
        "val_split": cfg.get("split"),
        "val_batch_size": cfg.get("batch_size"),
        "num_workers": cfg.get("num_workers"),
    }
    if cfg.get("split") is not None and data_cfg.get("extra_val_splits"):
        # one split is scored: a run's extra validation split (a held-out sequence) can be that split
        overrides["extra_val_splits"] = []
    datamodule = instantiate(data_cfg, **{k: v for k, v in overrides.items() if v is not None})
    datamodule.prepare_data()
    datamodule.setup("validate")
    check_num_classes(loaded, type(datamodule.val_set).__name__, datamodule.val_set.num_classes)
    return datamodule


def device_type(accelerator: str) -> str:
    """``"cuda"`` or ``"cpu"``: where ``trainer.accelerator`` runs the evaluation (its inference defaults differ)."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "cuda" if gpu else "cpu"


def evaluate(cfg: DictConfig) -> dict | None:
    """Score ``cfg.ckpt_path``; return the written report (None on ranks other than 0)."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # provenance.json: the code, libraries, machine, precision and command of this run, completed at its end
    with provenance(out_dir, "evaluate", write=rank_zero_only.rank == 0) as record:
        loaded = load_model(cfg.ckpt_path, out_dir, channels_last=auto_flag(cfg.inference.channels_last))
        device = device_type(cfg.trainer.get("accelerator", "cpu"))
        inference = InferenceConfig.from_options(cfg.inference, run_inference_defaults(loaded.run_cfg, device))
        folded = loaded.fold_batchnorm() if inference.fold_batchnorm else 0
        if inference.compile:
            loaded.compile()
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
            **runtime_record(inference, folded),
        }
        title = f"{extra['dataset']} {split}, {extra['images']} images, {inference.describe()} ({extra['runtime']})"
        writer = EvaluationReport(out_dir, datamodule.class_names, extra, title)
        callbacks: list[Callback] = [writer]
        if cfg.trainer.get("enable_progress_bar", True):
            callbacks.append(RichProgressBar())
        precision = TRAINER_PRECISION[inference.precision]
        record.update(precision=precision)
        trainer = pl.Trainer(
            **cfg.trainer,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        trainer.validate(loaded.module, datamodule=datamodule, verbose=False)
        if not trainer.is_global_zero:
            return None
        return json.loads((out_dir / "metrics.json").read_text())


main = entry_point("evaluate", evaluate)

if __name__ == "__main__":
    main()
