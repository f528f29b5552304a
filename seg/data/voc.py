"""Pascal VOC 2012 reader: ``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/Segmentation/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.data.base import SegmentationDataset, read_list, voc_colormap

__all__ = ["VOC_CLASSES", "VOCSegmentation", "voc_colormap"]

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class VOCSegmentation(SegmentationDataset):
    """A dataset in the VOC 2012 segmentation layout.

    ``root`` may be ``VOCdevkit/VOC2012`` (the folder holding ``JPEGImages``), ``VOCdevkit`` or the folder
    holding ``VOCdevkit``. Masks are palette PNGs read as indices 0..20, with 255 (void) kept as the ignore
    label.
    """

    classes: tuple[str, ...] = VOC_CLASSES
    palette: np.ndarray = voc_colormap()
    image_dir = "JPEGImages"
    mask_dir = "SegmentationClass"
    split_dir = "ImageSets/Segmentation"
    image_ext = ".jpg"
    mask_ext = ".png"

    layout = "JPEGImages/<id>.jpg, SegmentationClass/<id>.png and ImageSets/Segmentation/<split>.txt"

    def _resolve_root(self, root: Path) -> Path:
        for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
            if (candidate / self.image_dir).is_dir():
                return candidate
        return root

    def _list_pairs(self) -> list[tuple[str, Path, Path]]:
        ids = read_list(self.root / self.split_dir / f"{self.split}.txt", self.name)
        return [(i, self.image_path(i), self.root / self.mask_dir / f"{i}{self.mask_ext}") for i in ids]

    def image_path(self, sample_id: str) -> Path:
        return self.root / self.image_dir / f"{sample_id}{self.image_ext}"
