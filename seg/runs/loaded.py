"""A trained model rebuilt from its checkpoint for the tools after training (``seg.evaluate``, ``seg.predict``,
``seg.export``): the network from the run folder's ``.hydra/config.yaml`` (or a torchvision ``deeplabv3_resnet*`` /
``fcn_resnet*`` state_dict from its keys, :mod:`seg.models.support.torchvision_layout`), its weights loaded
strictly, and the data config and class count it is scored with.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from seg.data.transforms import with_model_normalization
from seg.models.support.compile import compile_for_inference
from seg.models.support.fold_bn import fold_batchnorm
from seg.models.support.torchvision_layout import torchvision_architecture
from seg.models.support.weights import CheckpointError, read_state_dict
from seg.module import SegModule
from seg.runs.config import RUN_CONFIG, find_run_dir, load_run_config
from seg.runs.init_from import load_net_weights

__all__ = ["LoadedModel", "build_module", "check_num_classes", "data_config", "load_model"]
log = logging.getLogger(__name__)


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
        bands = len(self.net.input_mean)  # 3, or model.net.in_channels
        example = torch.randn(1, bands, 128, 128, generator=torch.Generator().manual_seed(0))
        if self.module.hparams.get("channels_last"):
            example = example.contiguous(memory_format=torch.channels_last)
        try:
            self.module.net, folded = fold_batchnorm(self.net.eval(), example)
        except ValueError as e:  # a layout the folding cannot follow: run the net as it is
            log.warning("BatchNorm not folded: %s", e)
            return 0
        return folded

    def compile(self) -> None:
        """Replace the net by its compiled self (:func:`seg.models.support.compile.compile_for_inference`): the
        same scores to float rounding, faster once compiled for an input shape."""
        self.module.net = compile_for_inference(self.net)


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
