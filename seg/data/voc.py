"""Pascal VOC 2012 layout reader: ``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/Segmentation/``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from seg.data.io import read_image, read_index_mask

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC devkit colour map (``labelcolormap.m``): class i's RGB from the bits of i, shape (n, 3) uint8."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


class VOCSegmentation:
    """A dataset in the VOC 2012 segmentation layout under ``root`` (the folder holding ``JPEGImages``).

    Returns ``(image uint8 HxWx3 RGB, mask uint8 HxW)`` when ``transform`` is None, else whatever the
    albumentations ``transform`` returns for ``image=..., mask=...`` as an ``(image, mask)`` pair.
    """

    classes: tuple[str, ...] = VOC_CLASSES
    palette: np.ndarray = voc_colormap()
    image_dir = "JPEGImages"
    mask_dir = "SegmentationClass"
    split_dir = "ImageSets/Segmentation"
    image_ext = ".jpg"
    mask_ext = ".png"

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.ids = self._read_split()
        self.files = [
            (self.root / self.image_dir / f"{i}{self.image_ext}", self.root / self.mask_dir / f"{i}{self.mask_ext}")
            for i in self.ids
        ]
        missing = [str(p) for pair in self.files for p in pair if not p.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"{type(self).__name__}: {missing[0]}{more} is listed in split '{split}' but missing; expected "
                f"{self.image_dir}/<id>{self.image_ext} and {self.mask_dir}/<id>{self.mask_ext} under {self.root}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _read_split(self) -> list[str]:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{type(self).__name__}: dataset root {self.root} does not exist; expected a folder holding "
                f"{self.image_dir}/, {self.mask_dir}/ and {self.split_dir}/<split>.txt (set data.root=...)"
            )
        split_file = self.root / self.split_dir / f"{self.split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(
                f"{type(self).__name__}: split list {split_file} does not exist; expected one image id per line"
            )
        ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise ValueError(f"{type(self).__name__}: split list {split_file} is empty")
        return ids

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read one untransformed pair and check it (sizes agree, labels are known classes or 255)."""
        image_path, mask_path = self.files[index]
        image = read_image(image_path)
        mask = read_index_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image {image_path} "
                f"size {image.shape[1]}x{image.shape[0]}"
            )
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            values = sorted(set(np.unique(mask[bad]).tolist()))[:5]
            raise ValueError(
                f"{mask_path}: label values {values} outside 0..{self.num_classes - 1} and {IGNORE_INDEX} (void)"
            )
        return image, mask

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        if self.transform is None:
            return image, mask
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"]

