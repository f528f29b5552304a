"""Albumentations pipelines built from config: the DeepLab training augmentation and the validation pipeline,
normalised as the model's backbone expects (:func:`with_model_normalization`)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2
from omegaconf import DictConfig, open_dict

from seg.data.base import IGNORE_INDEX
from seg.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD  # the defaults here; seg's tools pass the backbone's
from seg.utils.sizes import pair

TRANSFORM_KEYS = ("train_transform", "val_transform")
log = logging.getLogger(__name__)


class CatMaxRatioCrop(A.RandomCrop):
    """A random crop redrawn (up to ``tries`` times) while one class fills ``cat_max_ratio`` or more of its labelled
    pixels, or it holds a single class: mmsegmentation's ``RandomCrop(cat_max_ratio=...)``, so that road and sky do
    not fill whole crops and the rare classes are seen more often. The last draw is kept when none qualifies."""

    def __init__(
        self, height: int, width: int, cat_max_ratio: float = 0.75, ignore_index: int = IGNORE_INDEX, tries: int = 10
    ) -> None:
        super().__init__(height=height, width=width, p=1.0)
        self.cat_max_ratio, self.ignore_index, self.tries = cat_max_ratio, ignore_index, tries

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        mask = data["mask"]
        for _ in range(self.tries):
            out = super().get_params_dependent_on_data(params, data)
            x0, y0, x1, y1 = out["crop_coords"]
            crop = mask[y0:y1, x0:x1]
            _, counts = np.unique(crop[crop != self.ignore_index], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return out


def train_transforms(
    crop_size: int | Sequence[int] = 513,
    scale_range: Sequence[float] = (0.5, 2.0),
    hflip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    color_jitter: Sequence[float] | None = None,
    cat_max_ratio: float | None = None,
) -> A.Compose:
    """Random scale, pad (image 0, mask 255), random crop (H, W), horizontal flip, photometric jitter, normalise,
    to tensor.

    Args:
        crop_size: (H, W) of the crop, or one side.
        scale_range: factors the image is resized by first, drawn uniformly.
        hflip: flip left-right with probability 0.5.
        mean, std: normalisation of 0-1 scaled images (the backbone's; set by the data module).
        color_jitter: ``[brightness, contrast, saturation, hue]``, each drawn per image from ``1 +- value``
            (hue: a shift of ``+- value`` of the colour circle, at most 0.5), applied to the image only, in a random
            order (albumentations' ``ColorJitter``); ``null``: none. Streets shot in other light are the case
            (issue 34: the unseen CamVid sequence).
        cat_max_ratio: redraw a crop (up to 10 times) while one class fills this share of it or more
            (:class:`CatMaxRatioCrop`, mmsegmentation's 0.75); ``null``: any crop.
    """
    h, w = pair(crop_size)
    lo, hi = scale_range
    if cat_max_ratio is not None and not 0 < float(cat_max_ratio) <= 1:
        raise ValueError(f"cat_max_ratio={cat_max_ratio}: expected a share in (0, 1], or null")
    steps = [
        # RandomScale's scale_limit is offset by 1: (lo - 1, hi - 1) draws factors in [lo, hi]
        A.RandomScale(
            scale_limit=(lo - 1.0, hi - 1.0),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
        A.RandomCrop(height=h, width=w) if cat_max_ratio is None else CatMaxRatioCrop(h, w, float(cat_max_ratio)),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if color_jitter is not None:
        values = [float(v) for v in color_jitter]
        if len(values) != 4 or min(values) < 0 or max(values[:3]) >= 1 or values[3] > 0.5:
            raise ValueError(
                f"color_jitter={list(color_jitter)}: expected [brightness, contrast, saturation, hue] with the "
                "first three in [0, 1) and hue in [0, 0.5]"
            )
        b, c, sat, hue = values
        ranges = {"brightness": (1 - b, 1 + b), "contrast": (1 - c, 1 + c), "saturation": (1 - sat, 1 + sat)}
        steps.append(A.ColorJitter(**ranges, hue=(-hue, hue), p=1.0))
    steps += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    # strict=True: albumentations 2.x only warns about unknown arguments (e.g. the pre-2.0 `mask_value`)
    return A.Compose(steps, strict=True)


def val_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Normalise and convert at full resolution: the label is never resized."""
    return A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()], strict=True)


def with_model_normalization(data_cfg: DictConfig, mean: Sequence[float], std: Sequence[float]) -> DictConfig:
    """A copy of ``data_cfg`` whose transforms normalise with the model's ``mean`` / ``std`` (its backbone's:
    ``net.input_mean``, :func:`seg.models.input_normalization`), so a model and its inputs cannot disagree.

    A transform that sets ``mean`` / ``std`` itself keeps them, with a warning when they differ from the model's.
    """
    data_cfg = copy.deepcopy(data_cfg)
    model = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    with open_dict(data_cfg):
        for key in TRANSFORM_KEYS:
            node = data_cfg.get(key)
            if node is None or "_target_" not in node:
                continue
            for name, value in model.items():
                own = node.get(name)
                if own is None:
                    node[name] = value
                elif [round(float(v), 6) for v in own] != [round(v, 6) for v in value]:
                    log.warning(
                        "data.%s.%s=%s differs from the backbone's %s=%s: the inputs are not normalised "
                        "as the weights expect",
                        key,
                        name,
                        list(own),
                        name,
                        value,
                    )
    return data_cfg
