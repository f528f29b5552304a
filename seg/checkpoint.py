"""Checkpoint I/O: atomic checkpoint writes and models rebuilt from checkpoints for inference.

Reads Lightning checkpoints of this repository (the net is rebuilt from the run folder's ``.hydra/config.yaml``)
and torchvision ``deeplabv3_resnet*`` / ``fcn_resnet*`` state_dicts (seg's DeepLabV3 and FCN keep torchvision's
submodule names, so their keys map one to one). Everything loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from seg.atomic import atomic_write
from seg.data.transforms import with_model_normalization
from seg.models import FCN, DeepLabV3
from seg.models.weights import CheckpointError, check_state_dict, read_state_dict, safe_load
from seg.module import SegModule

__all__ = [
    "AtomicCheckpointIO", "LoadedModel", "build_module", "check_num_classes", "classifier_keys", "data_config",
    "find_run_dir", "init_weights", "load_model", "load_net_weights", "load_run_config", "newest_checkpoint",
    "run_inference_defaults", "torchvision_architecture",
]  # fmt: skip

RUN_CONFIG = Path(".hydra") / "config.yaml"
_TORCHVISION_ASPP_RATES = (12, 24, 36)  # torchvision's DeepLabHead; its dilated ResNets have output stride 8


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


def torchvision_architecture(state: Mapping[str, Tensor]) -> tuple[type[nn.Module], dict] | None:
    """(seg class, keyword arguments) matching a torchvision deeplabv3_resnet* or fcn_resnet* state_dict (seg's
    DeepLabV3 and FCN keep torchvision's submodule names); None for other layouts."""
    if "backbone.layer3.0.conv1.weight" not in state or "classifier.4.weight" not in state:
        return None
    blocks = len({k.split(".")[2] for k in state if k.startswith("backbone.layer3.")})
    bottleneck = "backbone.layer1.0.conv3.weight" in state
    depth = {(True, 6): 50, (True, 23): 101, (False, 2): 18, (False, 6): 34}.get((bottleneck, blocks))
    if depth is None:
        return None
    common = {
        "num_classes": int(state["classifier.4.weight"].shape[0]),
        "backbone": f"resnet{depth}",
        "output_stride": 8,
        "aux": "aux_classifier.4.weight" in state,
        "weights": None,
    }
    if "classifier.0.convs.0.0.weight" not in state:
        return (FCN, common) if "classifier.0.weight" in state else None
    rates = len({k.split(".")[3] for k in state if k.startswith("classifier.0.convs.")}) - 2
    if rates != len(_TORCHVISION_ASPP_RATES):
        return None
    return DeepLabV3, {**common, "aspp_rates": _TORCHVISION_ASPP_RATES}


def classifier_keys(net: nn.Module) -> list[str]:
    """State_dict keys of the last convolution of ``classifier`` and ``aux_classifier``: the class-dependent ones."""
    keys = []
    for head in ("classifier", "aux_classifier"):
        module = getattr(net, head, None)
        if module is None:
            continue
        name, conv = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)][-1]
        keys += [".".join(filter(None, (head, name, p))) for p, _ in conv.named_parameters(recurse=False)]
    return keys


def load_net_weights(
    net: nn.Module, state: Mapping[str, Tensor], source: str | Path = "checkpoint", reinit_classifier: bool = False
) -> list[str]:
    """Load ``state`` into ``net`` by key (strict); a class-count mismatch is an error unless ``reinit_classifier``.

    ``reinit_classifier=True`` (fine-tuning on another label set) keeps ``net``'s freshly initialised last
    classifier convolutions and loads everything else. An auxiliary head the net lacks is dropped (inference only).
    Returns the keys left at their fresh initialisation.
    """
    expected = net.state_dict()
    state = dict(state)
    if getattr(net, "aux_classifier", "absent") is None:
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    head = [k for k in classifier_keys(net) if k in state and state[k].shape[0] != expected[k].shape[0]
            and state[k].shape[1:] == expected[k].shape[1:]]  # fmt: skip
    if head:
        if not reinit_classifier:
            trained, built = state[head[0]].shape[0], expected[head[0]].shape[0]
            raise CheckpointError(
                f"{source} was trained for {trained} classes but the model is built for {built}: use a dataset with "
                f"{trained} classes, or load it with reinit_classifier=True to fine-tune a new classifier"
            )
        state = {k: v for k, v in state.items() if k not in head}
    check_state_dict(net, state, source, ignore=head)
    net.load_state_dict(state, strict=False)
    return head


def init_weights(net: nn.Module, path: str | Path) -> str:
    """``init_from=PATH``: start ``net`` from the weights of a seg checkpoint (a run's ``last.ckpt`` or best), or a
    torchvision ``deeplabv3_resnet50/101`` file. Every tensor whose name and shape fit is loaded; the last
    classifier convolutions (``classifier``, ``aux_classifier``) are re-initialised when the class count differs;
    anything else that does not fit is a CheckpointError naming the file and the keys. Returns a one-line summary.

    Unlike ``ckpt_path`` (which resumes the same run: optimizer, step, loader position), only weights are taken.
    """
    state = read_state_dict(path)
    file_aux = any(k.startswith("aux_classifier.") for k in state)
    before = {k: v.clone() for k, v in net.state_dict().items() if k in classifier_keys(net)}
    reinit = load_net_weights(net, state, path, reinit_classifier=True)
    loaded = sum(1 for k in net.state_dict() if k in state and k not in reinit)
    line = f"init_from {path}: loaded {loaded} tensors"
    if reinit:
        trained, built = state[reinit[0]].shape[0], before[reinit[0]].shape[0]
        layers = sorted({k.rsplit(".", 1)[0] for k in reinit})
        line += f"; re-initialised {', '.join(layers)} for {built} classes (the file has {trained})"
    if file_aux and getattr(net, "aux_classifier", None) is None:
        line += "; the file's auxiliary head is not used (model.net.aux=false)"
    return line


# SegModule arguments of run folders written before the optimizer/scheduler became _partial_ nodes: training-only
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


def newest_checkpoint(folder: str | Path) -> Path | None:
    """``last.ckpt`` (else the newest ``.ckpt``) of the run folder under ``folder`` whose checkpoint was written
    last; only run folders with ``.hydra/config.yaml`` count. None when there is none."""
    ckpts = [p for p in Path(folder).glob("**/checkpoints/*.ckpt") if (p.parents[1] / RUN_CONFIG).is_file()]
    if not ckpts:
        return None
    newest = max(ckpts, key=lambda p: p.stat().st_mtime)
    last = newest.parent / "last.ckpt"
    return last if last.is_file() else newest
