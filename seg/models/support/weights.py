"""The one weight loader: read checkpoint files safely, unwrap their state_dict, check it against a model with a
report that names the file and the offending keys, and find torchvision weights in the local hub cache.

Everything loads with ``torch.load(weights_only=True)``; weights missing from the cache are fetched there on first use
(:mod:`seg.utils.download`), unless ``SEG_OFFLINE`` / ``HF_HUB_OFFLINE`` is set. ``seg.runs.checkpoint``
(whole segmenters from run folders) and the backbone families (``seg.models.backbones``) all load through here;
each family converts its own file layouts.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum, get_model_weights

from seg.utils.download import DownloadError, download, hash_prefix, offline, offline_reason

_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_LIGHTNING_PREFIX = "net."  # SegModule.net
_WRAPPER_PREFIXES = ("module.", "model.")  # DistributedDataParallel / wrapped models saved whole
_SHOW = 5  # offending keys listed in an error


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[0]) if lines else type(exc).__name__


def safe_load(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file.

    ``weights_only`` (plus ``argparse.Namespace``, which torchvision's reference scripts store) unpickles only
    tensors and plain containers: a file holding any other pickled object is refused, and its code never runs.
    A ``.safetensors`` file is read with safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":  # timm's hub files: tensors only by construction
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path}: not a readable safetensors file (corrupt or truncated): {_first_line(e)}"
            ) from e
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"{path}: refused by torch.load(weights_only=True): it pickles a {found.group(1)} object; "
                "only tensors and plain containers are loaded"
            ) from e
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (corrupt?): {_first_line(e)}") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or truncated): {_first_line(e)}"
        ) from e


def unwrap_state_dict(obj: object, path: str | Path = "checkpoint") -> dict[str, Tensor]:
    """Find the state_dict in a loaded checkpoint and strip a prefix all its keys share ("net.", "module.", ...)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):  # Lightning; torchvision's reference scripts
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state_dict (a mapping of parameter names to tensors)")
    state = dict(obj)
    if any(k.startswith(_LIGHTNING_PREFIX) for k in state):
        # a SegModule's: keep the net's keys (the module may hold other state next to them)
        state = {k[len(_LIGHTNING_PREFIX) :]: v for k, v in state.items() if k.startswith(_LIGHTNING_PREFIX)}
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a Lightning checkpoint, a torchvision reference checkpoint or a plain state_dict file."""
    return unwrap_state_dict(safe_load(path), path)


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str | Path, ignore=()) -> None:
    """CheckpointError naming ``source`` and the first offending keys when ``state`` does not fit ``model``:
    missing keys, unexpected keys, shape mismatches. Keys in ``ignore`` are not reported missing."""
    expected = model.state_dict()
    # BatchNorm fills in num_batches_tracked itself when an old checkpoint lacks it
    missing = [k for k in expected if k not in state and k not in ignore and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
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
        raise CheckpointError(f"{source} does not fit the model ({type(model).__name__}); " + "; ".join(problems))


def _looks_like_path(weights: str) -> bool:
    """Tell a file path from a torchvision enum name such as "ResNet50_Weights.IMAGENET1K_V1" or a package name."""
    return "/" in weights or os.sep in weights or weights.endswith(_FILE_SUFFIXES) or os.path.exists(weights)


def local_weights_file(weights: str) -> Path | None:
    """The file ``weights`` names when it reads as a path (a separator, a weights suffix, an existing path);
    FileNotFoundError when that file is missing; None when ``weights`` names something else (an enum, a package).
    The one place where every backbone family tells a local file from a name."""
    if not _looks_like_path(weights):
        return None
    path = Path(os.path.expanduser(weights))
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def hub_cache_file(url: str) -> Path:
    """Where the torch hub cache keeps the file of ``url`` (``<hub dir>/checkpoints/<file name>``), present or not."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _cached_file(w: WeightsEnum) -> Path:
    """Path of ``w`` in the torch hub cache, fetched there on first use (checked against the hash prefix of its
    file name, as torch.hub does); offline, a missing file is a FileNotFoundError saying how to provide it."""
    path = hub_cache_file(w.url)
    if path.is_file():
        return path
    if offline():
        raise FileNotFoundError(
            f"{type(w).__name__}.{w.name} is not in the torch hub cache: expected {path}; {offline_reason()}. "
            f"On a machine with internet fetch {w.url} and copy it to {path.parent}/, "
            "or pass a local state_dict file as model.net.weights=/path/to/file.pth"
        )
    try:
        return download(w.url, path, sha256_prefix=hash_prefix(path.name))
    except DownloadError as e:  # no network, say: the same way out as offline
        how = f"on a machine with internet fetch {w.url} and copy it to {path.parent}/, or pass a local file"
        raise DownloadError(f"{e}. {how.capitalize()} as model.net.weights=/path/to/file.pth") from e


def torchvision_weights_file(weights: str, arch: str) -> Path:
    """The file behind ``weights`` for torchvision model ``arch``: a local path as is, or the hub-cache file of
    an enum ("ResNet50_Weights.IMAGENET1K_V1", "IMAGENET1K_V1", "DEFAULT"; "imagenet" is IMAGENET1K_V1, the
    weights DeepLab and torchvision's segmentation models start from), fetched into the cache on first use."""
    weights = "IMAGENET1K_V1" if weights == "imagenet" else str(weights)
    path = local_weights_file(weights)
    if path is not None:
        return path
    enum_cls = get_model_weights(arch)
    enum_name, _, member = weights.rpartition(".")
    if (enum_name and enum_name != enum_cls.__name__) or member not in enum_cls.__members__:
        raise ValueError(
            f"unknown weights {weights!r} for {arch}; expected {enum_cls.__name__}.<NAME> with NAME in "
            f"{sorted(enum_cls.__members__)}, or a path to a local .pth file"
        )
    return _cached_file(enum_cls[member])
