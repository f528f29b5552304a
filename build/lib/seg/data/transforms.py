"""Albumentations pipelines built from config: the DeepLab training augmentation and the validation pipeline."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from seg.data.base import IGNORE_INDEX
from seg.inference import pair

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transforms(
    crop_size: int | Sequence[int] = 513,
    scale_range: Sequence[float] = (0.5, 2.0),
    hflip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Random scale, pad (image 0, mask 255), random crop (H, W), horizontal flip, normalise, to tensor."""
    h, w = pair(crop_size)
    lo, hi = scale_range
    steps = [
        # RandomScale's scale_limit is offset by 1: (lo - 1, hi - 1) draws factors in [lo, hi]
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
        A.RandomCrop(height=h, width=w),
    ]  # fmt: skip
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    steps += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    # strict=True: albumentations 2.x only warns about unknown arguments (e.g. the pre-2.0 `mask_value`)
    return A.Compose(steps, strict=True)


def val_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Normalise and convert at full resolution: the label is never resized."""
    return A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()], strict=True)
