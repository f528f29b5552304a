"""Experiment-tracker loggers behind optional extras (``logger=mlflow``, ``logger=wandb``): small factories that
check the package first, so a missing one ends in the single line ``pip install 'seg[extra]'``, and that name each
tracker run after its run folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from seg.utils.extras import require


def run_name(run_dir: str | Path, log_dir: str | Path) -> str:
    """The run folder relative to ``log_dir`` (``train/runs/2024-05-01_12-00-00``, ``train/multiruns/.../3``), or
    its own name when it lies elsewhere."""
    run, root = Path(run_dir).resolve(), Path(log_dir).resolve()
    return run.relative_to(root).as_posix() if run.is_relative_to(root) and run != root else run.name


def _file_uri(uri: str) -> str:
    """``file:relative/path`` -> an absolute ``file://`` URI (MLflow resolves a relative one against the cwd of
    whoever reads it); any other URI unchanged."""
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return Path(uri.removeprefix("file:")).resolve().as_uri()
    return uri


def mlflow_logger(run_dir: str, log_dir: str, name: str | None = None, **kwargs: Any):
    """Lightning's ``MLFlowLogger`` (``pip install 'seg[mlflow]'``), its run named after ``run_dir`` and tagged with
    its path; ``kwargs`` go to the logger (``tracking_uri``, ``experiment_name``, ...)."""
    require("mlflow", "mlflow")
    from pytorch_lightning.loggers import MLFlowLogger

    if kwargs.get("tracking_uri"):
        kwargs["tracking_uri"] = _file_uri(str(kwargs["tracking_uri"]))
        if kwargs["tracking_uri"].startswith("file:"):
            # MLflow >= 3.x refuses its file store ("maintenance mode") unless this is set; it still works
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    tags = {"run_dir": str(Path(run_dir).resolve()), **(kwargs.pop("tags", None) or {})}
    return MLFlowLogger(run_name=name or run_name(run_dir, log_dir), tags=tags, **kwargs)


def wandb_logger(run_dir: str, log_dir: str, name: str | None = None, **kwargs: Any):
    """Lightning's ``WandbLogger`` (``pip install 'seg[wandb]'``) writing under ``run_dir/wandb``, its run named
    after ``run_dir``; ``kwargs`` go to the logger and ``wandb.init`` (``project``, ``offline``, ...).

    A W&B run still open in this process (the previous job of a multirun) is finished first: Lightning would
    otherwise log the new job into it.
    """
    wandb = require("wandb", "wandb")
    from pytorch_lightning.loggers import WandbLogger

    if wandb.run is not None:
        wandb.finish()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(name=name or run_name(run_dir, log_dir), save_dir=run_dir, **kwargs)
