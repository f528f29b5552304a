"""Checkpoint files: written atomically and read safely during training, found in run folders, and turned back
into models for inference.

A Lightning checkpoint of this repository is rebuilt from its run folder's ``.hydra/config.yaml``; a torchvision
``deeplabv3_resnet*`` / ``fcn_resnet*`` state_dict from its keys (:mod:`seg.models.torchvision_layout`).
Everything loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, open_dict
from torch import nn

from seg.atomic import atomic_write
from seg.init_from import load_net_weights
from seg.models.fold_bn import fold_batchnorm
from seg.models.torchvision_layout import torchvision_architecture
from seg.models.weights import CheckpointError, read_state_dict, safe_load
from seg.module import SegModule
from seg.run_config import RUN_CONFIG, find_run_dir, load_run_config

__all__ = ["AtomicCheckpointIO", "LoadedModel", "build_module", "load_model", "newest_checkpoint"]
log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints with :func:`seg.atomic.atomic_write` and reads them with ``weights_only=True`` only.

    Lightning's own ``TorchCheckpointIO`` stages the file in the system temporary folder and moves it: a rename
    only when that folder shares the checkpoint's filesystem (otherwise a copy in place, which a kill can cut
    short), and without fsync.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        # a diverging run can poison weights or BatchNorm statistics a step before its loss turns NaN
        bad = [k for k, v in checkpoint.get("state_dict", {}).items()
               if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]  # fmt: skip
        if bad:
            raise FloatingPointError(
                f"training diverged: the weights at global step {checkpoint.get('global_step')} hold NaN or Inf "
                f"({bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); not writing {path}, the last "
                "checkpoint written is kept"
            )
        with atomic_write(path) as f:
            torch.save(checkpoint, f)

    def __init__(self, preloaded: tuple[str | Path, dict] | None = None) -> None:
        super().__init__()
        # (path, checkpoint) already read by seg.train to check it before the model is built: served once,
        # so a resume reads the file once
        self._preloaded = preloaded

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if self._preloaded is not None and Path(self._preloaded[0]).resolve() == Path(path).resolve():
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
        # whatever the caller asks, never unpickle arbitrary objects (a checkpoint may come from anywhere)
        return safe_load(path)


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, and the training run's config when there is one."""

    module: SegModule
    run_cfg: DictConfig | None
    ckpt_path: Path

    @property
    def net(self) -> nn.Module:
        return self.module.net

    @property
    def num_classes(self) -> int:
        return int(self.module.hparams.num_classes)

    def fold_batchnorm(self) -> int:
        """Replace the net by a copy with its BatchNorms folded into their convolutions (for inference only: the
        same logits to float rounding, checked on a random batch); returns how many were folded."""
        example = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
        if self.module.hparams.get("channels_last"):
            example = example.contiguous(memory_format=torch.channels_last)
        try:
            self.module.net, folded = fold_batchnorm(self.net.eval(), example)
        except ValueError as e:  # a layout the folding cannot follow: run the net as it is
            log.warning("BatchNorm not folded: %s", e)
            return 0
        return folded


def build_module(run_cfg: DictConfig, channels_last: bool | None = None) -> SegModule:
    """``instantiate(run_cfg.model)`` without fetching backbone weights (the checkpoint holds every weight)."""
    cfg = copy.deepcopy(run_cfg)
    with open_dict(cfg):
        if "weights" in cfg.model.net:
            cfg.model.net.weights = None
        if isinstance(cfg.model.get("class_weights"), str):  # computed by seg.train; only the loss uses them
            cfg.model.class_weights = None
    return instantiate(cfg.model, **({} if channels_last is None else {"channels_last": channels_last}))


def load_model(
    ckpt_path: str | Path,
    output_dir: str | Path | None = None,
    channels_last: bool | None = None,
    reinit_classifier: bool = False,
) -> LoadedModel:
    """Rebuild the model of a checkpoint (its run's config, or a torchvision layout) and load its weights.

    ``channels_last=None`` keeps the run's setting. The module comes back in eval mode on the CPU.
    """
    ckpt_path = Path(ckpt_path)
    state = read_state_dict(ckpt_path)
    run_dir = find_run_dir(ckpt_path)
    if run_dir is not None:
        run_cfg = load_run_config(run_dir, output_dir)
        module = build_module(run_cfg, channels_last)
    else:
        run_cfg = None
        arch = torchvision_architecture(state)
        if arch is None:
            raise CheckpointError(
                f"{ckpt_path}: no run config found (expected {RUN_CONFIG} in the run folder above it) and not a "
                "torchvision deeplabv3_resnet* / fcn_resnet* state_dict"
            )
        cls, kwargs = arch
        module = SegModule(cls(**kwargs), num_classes=kwargs["num_classes"], channels_last=bool(channels_last))
    load_net_weights(module.net, state, ckpt_path, reinit_classifier)
    return LoadedModel(module.eval(), run_cfg, ckpt_path)


def newest_checkpoint(folder: str | Path) -> Path | None:
    """``last.ckpt`` (else the newest ``.ckpt``) of the run folder under ``folder`` whose checkpoint was written
    last; only run folders with ``.hydra/config.yaml`` count. None when there is none."""
    ckpts = [p for p in Path(folder).glob("**/checkpoints/*.ckpt") if (p.parents[1] / RUN_CONFIG).is_file()]
    if not ckpts:
        return None
    newest = max(ckpts, key=lambda p: p.stat().st_mtime)
    last = newest.parent / "last.ckpt"
    return last if last.is_file() else newest
