"""Cityscapes fine annotations: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
``gtFine/<split>/<city>/*_gtFine_labelIds.png`` mapped to the 19 train ids on the fly (255 for the rest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seg.data.base import IGNORE_INDEX, SegmentationDataset, palette_from

# cityscapesScripts helpers/labels.py: (name, id, trainId, color). License plate (id -1) is never written to
# labelIds images (json2labelImg skips negative ids), so ids 0..33 are the whole on-disk vocabulary.
LABELS: tuple[tuple[str, int, int, tuple[int, int, int]], ...] = (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
)
NUM_LABEL_IDS = len(LABELS)  # valid labelIds are 0..33

_TRAIN = sorted((train_id, name, colour) for name, _, train_id, colour in LABELS if train_id != IGNORE_INDEX)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(name for _, name, _ in _TRAIN)
CITYSCAPES_PALETTE = palette_from([colour for _, _, colour in _TRAIN])


def label_to_train_lut() -> np.ndarray:
    """256-entry uint8 lookup table labelId -> trainId (255 for ignored ids and values not in the table)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for _, label_id, train_id, _ in LABELS:
        lut[label_id] = train_id
    return lut


LABEL_TO_TRAIN = label_to_train_lut()
LABEL_FORMATS = ("labelIds", "labelTrainIds")


class CityscapesSegmentation(SegmentationDataset):
    """Cityscapes ``gtFine`` under ``root`` (the folder holding ``leftImg8bit/`` and ``gtFine/``).

    ``label_format="labelIds"`` (the official files) maps ids with cityscapesScripts' table on the fly;
    ``"labelTrainIds"`` reads masks already converted by ``createTrainIdLabelImgs.py``.
    Ids are ``<city>/<frame>``.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    layout = "leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png and gtFine/<split>/<city>/<frame>_gtFine_<format>.png"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        *,
        label_format: str = "labelIds",
        check_files: bool = True,
        **image_options: Any,
    ) -> None:
        if label_format not in LABEL_FORMATS:
            raise ValueError(f"label_format={label_format!r}; expected one of {LABEL_FORMATS}")
        self.label_format = label_format
        super().__init__(root, split, transform, check_files=check_files, **image_options)  # image_scaling, extra_bands

    def _list_pairs(self) -> list[tuple[str, Path, Path]]:
        image_root = self.root / "leftImg8bit" / self.split
        if not image_root.is_dir():
            raise FileNotFoundError(f"{self.name}: split folder {image_root} does not exist; expected {self.layout}")
        images = sorted(image_root.glob("*/*_leftImg8bit.png"))
        if not images:
            raise ValueError(f"{self.name}: no <city>/*_leftImg8bit.png images under {image_root}")
        pairs = []
        for image in images:
            city, frame = image.parent.name, image.name[: -len("_leftImg8bit.png")]
            mask = self.root / "gtFine" / self.split / city / f"{frame}_gtFine_{self.label_format}.png"
            pairs.append((f"{city}/{frame}", image, mask))
        return pairs

    def read_mask(self, path: Path) -> np.ndarray:
        mask = super().read_mask(path)
        if self.label_format == "labelTrainIds":
            return mask
        bad = (mask >= NUM_LABEL_IDS) & (mask != IGNORE_INDEX)
        if bad.any():
            values = sorted(np.unique(mask[bad]).tolist())[:5]
            raise ValueError(f"{path}: label values {values} are not Cityscapes labelIds (0..{NUM_LABEL_IDS - 1})")
        return LABEL_TO_TRAIN[mask]
