"""Load ImageNet (or any local) ResNet weights into a DilatedResNet without ever downloading."""

import os
import pickle
from collections.abc import Mapping
from urllib.parse import urlparse

import torch
from torch import Tensor
from torchvision.models import WeightsEnum, get_model_weights

from seg.models.backbone import DilatedResNet

_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_SHOW = 5  # how many offending keys an error message lists


def _looks_like_path(weights: str) -> bool:
    """Tell a file path from a torchvision enum name such as "ResNet50_Weights.IMAGENET1K_V1"."""
    return "/" in weights or os.sep in weights or weights.endswith(_FILE_SUFFIXES) or os.path.exists(weights)


def _resolve_enum(weights: str, depth: int) -> WeightsEnum:
    """Map "ResNetXX_Weights.NAME", "NAME" or "DEFAULT" to the enum member for a resnet of this depth."""
    enum_cls = get_model_weights(f"resnet{depth}")
    enum_name, _, member = weights.rpartition(".")
    if enum_name and enum_name != enum_cls.__name__:
        raise ValueError(
            f"weights {weights!r} do not fit the resnet{depth} backbone; expected {enum_cls.__name__}.<NAME>"
        )
    if member not in enum_cls.__members__:
        raise ValueError(
            f"unknown weights {weights!r} for resnet{depth}; known: {sorted(enum_cls.__members__)} "
            "(or pass a path to a local .pth file)"
        )
    return enum_cls[member]


def _cached_file(w: WeightsEnum) -> str:
    """Path of `w` in the torch hub cache, or FileNotFoundError explaining how to provide it."""
    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(cache_dir, os.path.basename(urlparse(w.url).path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{type(w).__name__}.{w.name} is not in the torch hub cache: expected {path}. "
            f"Nothing is downloaded here; on a machine with internet fetch {w.url} "
            f"and copy it to {cache_dir}/, "
            "or pass a local state_dict file as model.net.weights=/path/to/file.pth"
        )
    return path


def _read_state_dict(path: str) -> dict[str, Tensor]:
    """torch.load a file restricted to tensors (weights_only) and unwrap common checkpoint layouts."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"could not load {path} as a plain tensor state_dict with torch.load(weights_only=True) "
            f"(arbitrary pickled objects are refused): {exc}"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not contain a state_dict (a mapping of names to tensors)")
    return {k: v for k, v in obj.items() if not k.startswith("fc.")}


def _check_keys(backbone: DilatedResNet, state: Mapping[str, Tensor], path: str) -> None:
    """Raise ValueError naming the file and the first offending keys if `state` does not fit `backbone`."""
    expected = backbone.state_dict()
    # BatchNorm fills in num_batches_tracked itself when an old checkpoint lacks it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} ({len(keys)}): {keys[:_SHOW]}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (file vs model)", shapes),
        )
        if keys
    ]
    if problems:
        raise ValueError(f"{path} does not fit the resnet{backbone.depth} backbone; " + "; ".join(problems))


def load_backbone_weights(backbone: DilatedResNet, weights: str) -> None:
    """Load a torchvision enum's cached file or a local state_dict into `backbone` (strict, fc dropped)."""
    weights = str(weights)
    if _looks_like_path(weights):
        path = os.path.expanduser(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"backbone weights file not found: {path}")
    else:
        path = _cached_file(_resolve_enum(weights, backbone.depth))
    state = _read_state_dict(path)
    _check_keys(backbone, state, path)
    backbone.load_state_dict(state, strict=True)
