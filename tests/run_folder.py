"""Test helper: a run folder as ``seg.train`` leaves it, with untrained weights (no training needed)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def fake_run(cfg: DictConfig, run_dir: Path, seed: int = 0) -> Path:
    """Write ``run_dir/.hydra/config.yaml`` and ``run_dir/checkpoints/last.ckpt``; return the checkpoint path."""
    torch.manual_seed(seed)
    module = instantiate(cfg.model)
    for m in module.net.modules():  # non-trivial BatchNorm statistics, so that loading them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    return ckpt
