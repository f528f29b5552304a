"""A training run's saved config (``.hydra/config.yaml`` in its run folder) as the tools after training read it:
where it is, its data config with the command line's ``data.`` overrides, and what ``"auto"`` inference options
mean for it. Used by ``seg.evaluate``, ``seg.predict``, ``seg.export`` and the resume checks.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf, open_dict

from seg.data.transforms import with_model_normalization

if TYPE_CHECKING:
    from seg.checkpoint import LoadedModel

__all__ = [
    "RUN_CONFIG", "check_num_classes", "data_config", "find_run_dir", "load_run_config", "run_inference_defaults",
]  # fmt: skip

RUN_CONFIG = Path(".hydra") / "config.yaml"


def find_run_dir(ckpt_path: str | Path) -> Path | None:
    """The run folder of a checkpoint: the nearest of its parents (up to 3) holding ``.hydra/config.yaml``."""
    for parent in list(Path(ckpt_path).resolve().parents)[:3]:
        if (parent / RUN_CONFIG).is_file():
            return parent
    return None


def load_run_config(run_dir: str | Path, output_dir: str | Path | None = None) -> DictConfig:
    """The run's saved config, its data paths as the run had them; ``output_dir`` replaces the run's.

    The run's ``paths.output_dir`` is Hydra's runtime folder of that run, which only resolves inside it.
    """
    cfg = OmegaConf.load(Path(run_dir) / RUN_CONFIG)
    if "paths" in cfg:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir if output_dir is not None else run_dir)
    return cfg


def run_inference_defaults(run_cfg: DictConfig | None) -> dict:
    """What ``"auto"`` inference options mean for a run: its precision, memory format, training crop and the
    input scale its validation used."""
    if run_cfg is None:
        return {"precision": "32", "channels_last": False, "window": None, "input_scale": 1.0}
    precision = str(OmegaConf.select(run_cfg, "trainer.precision", default="32"))
    crop = OmegaConf.select(run_cfg, "data.train_transform.crop_size", default=None)
    return {
        "precision": "bf16" if precision.startswith("bf16") else "16" if precision.startswith("16") else "32",
        "channels_last": bool(OmegaConf.select(run_cfg, "model.channels_last", default=False)),
        "window": OmegaConf.to_object(crop) if OmegaConf.is_config(crop) else crop,
        "input_scale": float(OmegaConf.select(run_cfg, "model.input_scale", default=1.0)),
    }


def data_config(cfg: DictConfig, loaded: LoadedModel) -> DictConfig:
    """The data config of ``seg.evaluate``, ``seg.predict`` and ``seg.export``: with ``data=NAME``, that one (as
    composed, ``data.KEY=VALUE`` included); otherwise the training run's own, with what the command line set under
    ``data.`` replacing the run's values (``data.root=DIR``: the same dataset kept elsewhere).

    Its transforms normalise as the model's backbone expects. ValueError when neither is there (a checkpoint
    without its run folder and no ``data=NAME``).
    """
    data = cfg.get("data")
    net = loaded.net
    if data is not None and "_target_" in data:
        return with_model_normalization(data, net.input_mean, net.input_std)
    if loaded.run_cfg is None:
        raise ValueError(
            f"{loaded.ckpt_path} has no training run folder ({RUN_CONFIG} above it) to read its data config from: "
            "name the dataset, data=NAME data.root=DIR"
        )
    run_cfg = copy.deepcopy(loaded.run_cfg)  # the data node stays in its run config: its interpolations resolve
    overrides = {k: v for k, v in (data or {}).items() if v is not None}
    if overrides:
        with open_dict(run_cfg):
            run_cfg.data = OmegaConf.merge(run_cfg.data, overrides)
    with open_dict(run_cfg):
        run_cfg.data = with_model_normalization(run_cfg.data, net.input_mean, net.input_std)
    return run_cfg.data


def check_num_classes(loaded: LoadedModel, dataset_name: str, dataset_classes: int) -> None:
    """ValueError when the checkpoint's class count differs from the dataset's."""
    if loaded.num_classes != dataset_classes:
        raise ValueError(
            f"{loaded.ckpt_path} predicts {loaded.num_classes} classes but {dataset_name} has {dataset_classes}: "
            "evaluate it on the dataset it was trained for (data=...)"
        )
