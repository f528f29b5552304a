"""A training run's saved config (``.hydra/config.yaml`` in its run folder) as the tools after training read it:
where it is, how it is loaded, and what ``"auto"`` inference options mean for it. Used by ``seg.evaluate``,
``seg.predict``, ``seg.export`` (through :mod:`seg.runs.loaded`) and the resume checks.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from seg.utils.machine import inference_precision

__all__ = ["RUN_CONFIG", "find_run_dir", "load_run_config", "run_inference_defaults"]

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


def run_inference_defaults(run_cfg: DictConfig | None, device: str = "cpu") -> dict:
    """What ``"auto"`` inference options mean for a run on a ``device`` type: its memory format, training crop and
    the input scale its validation used; its precision on a GPU, and on a CPU the machine's
    (:func:`seg.utils.machine.inference_precision`: bf16 where the CPU has bf16 units, the fastest path that keeps
    the accuracy there)."""
    cpu = device == "cpu"
    if run_cfg is None:
        precision = inference_precision() if cpu else "32"
        return {"precision": precision, "channels_last": False, "window": None, "input_scale": 1.0}
    trained = str(OmegaConf.select(run_cfg, "trainer.precision", default="32"))
    trained = "bf16" if trained.startswith("bf16") else "16" if trained.startswith("16") else "32"
    crop = OmegaConf.select(run_cfg, "data.train_transform.crop_size", default=None)
    return {
        "precision": inference_precision() if cpu else trained,
        "channels_last": bool(OmegaConf.select(run_cfg, "model.channels_last", default=False)),
        "window": OmegaConf.to_object(crop) if OmegaConf.is_config(crop) else crop,
        "input_scale": float(OmegaConf.select(run_cfg, "model.input_scale", default=1.0)),
    }
