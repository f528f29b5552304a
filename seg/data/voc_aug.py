"""VOC 2012 + SBD "train_aug" (10,582 images): (VOC train ∪ SBD train ∪ SBD val) − VOC val.

Two on-disk forms are accepted for the extra masks: a ``SegmentationClassAug/`` folder of index PNGs next to
``JPEGImages/`` with its list, or the SBD release
(``benchmark_RELEASE/dataset/{cls/*.mat, train.txt, val.txt}``).
Ids of VOC train keep their VOC mask (finer, with the 255 boundary band); the others take the SBD mask.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seg.data.base import read_list
from seg.data.voc import VOCSegmentation
from seg.utils.extras import require

TRAIN_AUG = "train_aug"
AUG_DIR = "SegmentationClassAug"
# full lists (DrSleep's train_aug.txt, mmseg's trainaug.txt) first; mmseg's aug.txt omits VOC train
AUG_LISTS = ("train_aug.txt", "trainaug.txt", "aug.txt")
SBD_DIR = "benchmark_RELEASE"


def read_sbd_mask(path: Path) -> np.ndarray:
    """The class mask of an SBD ``cls/<id>.mat`` file (``GTcls.Segmentation``) as uint8 HxW."""
    scipy_io = require("scipy.io", "voc-aug")
    try:
        mat = scipy_io.loadmat(str(path))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: mask file does not exist") from e
    except Exception as e:  # scipy raises ValueError, IndexError, OSError ... for truncated or non-MAT files
        raise ValueError(f"{path}: cannot read SBD .mat file ({e})") from e
    try:
        seg = mat["GTcls"]["Segmentation"][0, 0]
    except (KeyError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: not an SBD class file (no GTcls.Segmentation struct)") from e
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.min(initial=0) < 0 or seg.max(initial=0) > 255:
        raise ValueError(f"{path}: GTcls.Segmentation is not an HxW array of 0..255 (shape {seg.shape})")
    return seg.astype(np.uint8)


def _stem(line: str) -> str:
    """The id of a list line: a bare id, or the file stem of the first path on the line."""
    return Path(line.split()[0]).stem


class VOCAugSegmentation(VOCSegmentation):
    """VOC 2012 with the SBD-augmented training split ``train_aug``; every other split is plain VOC.

    ``sbd_root`` is the ``benchmark_RELEASE`` folder; when None it is looked for in ``root``, next to the VOC
    tree and next to ``VOCdevkit``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = TRAIN_AUG,
        transform: Callable | None = None,
        *,
        sbd_root: str | Path | None = None,
        check_files: bool = True,
        **image_options: Any,
    ) -> None:
        self.given_root = Path(root)
        self.sbd_root = Path(sbd_root) if sbd_root is not None else None
        require("scipy.io", "voc-aug")  # SBD's masks are MATLAB files: fail before any worker starts
        super().__init__(root, split, transform, check_files=check_files, **image_options)  # image_scaling, extra_bands

    def _list_pairs(self) -> list[tuple[str, Path, Path]]:
        if self.split != TRAIN_AUG:
            return super()._list_pairs()
        voc_lists = self.root / self.split_dir
        voc_train = read_list(voc_lists / "train.txt", self.name)
        voc_val = set(read_list(voc_lists / "val.txt", self.name))
        aug_dir = self.root / AUG_DIR
        if aug_dir.is_dir():
            ids, source, extra_mask = self._aug_png_ids(voc_train), aug_dir, lambda i: aug_dir / f"{i}.png"
        else:
            sbd = self._find_sbd()
            if sbd is None:
                looked = ", ".join(str(p) for p in self._sbd_candidates())
                raise FileNotFoundError(
                    f"{self.name}: split '{TRAIN_AUG}' needs the SBD masks, found neither {aug_dir}/ "
                    "(index PNGs with ImageSets/Segmentation/train_aug.txt) nor "
                    f"{SBD_DIR}/dataset/{{cls/<id>.mat, train.txt, val.txt}} (looked in {looked}; "
                    "set data.dataset.sbd_root=...)"
                )
            sbd_ids = read_list(sbd / "train.txt", self.name) + read_list(sbd / "val.txt", self.name)
            ids = sorted((set(voc_train) | set(sbd_ids)) - voc_val)
            source, extra_mask = sbd, lambda i: sbd / "cls" / f"{i}.mat"
        leaked = sorted(set(ids) & voc_val)
        if leaked:
            raise ValueError(
                f"{self.name}: {len(leaked)} VOC val image(s) (e.g. {', '.join(leaked[:3])}) are in the "
                f"'{TRAIN_AUG}' list from {source}; a validation image must never reach training. "
                "Remove them from the list (train_aug = VOC train ∪ SBD train ∪ SBD val − VOC val)"
            )
        in_voc_train = set(voc_train)
        return [
            (
                i,
                self.image_path(i),
                self.root / self.mask_dir / f"{i}{self.mask_ext}" if i in in_voc_train else extra_mask(i),
            )
            for i in ids
        ]

    def _aug_png_ids(self, voc_train: list[str]) -> list[str]:
        """Ids of the SegmentationClassAug form from its list (mmseg's aug.txt is joined with VOC train)."""
        for name in AUG_LISTS:
            for folder in (self.root / self.split_dir, self.root):
                path = folder / name
                if path.is_file():
                    ids = [_stem(line) for line in read_list(path, self.name)]
                    if name == "aug.txt":
                        ids += voc_train
                    return sorted(set(ids))
        raise FileNotFoundError(
            f"{self.name}: found {self.root / AUG_DIR}/ but no list of its ids; expected "
            f"{self.root / self.split_dir}/train_aug.txt (one id, or '/JPEGImages/<id>.jpg "
            f"/SegmentationClassAug/<id>.png', per line)"
        )

    def _sbd_candidates(self) -> list[Path]:
        if self.sbd_root is not None:
            return [self.sbd_root]
        found = [
            self.given_root / SBD_DIR,
            self.root / SBD_DIR,
            self.root.parent / SBD_DIR,
            self.root.parent.parent / SBD_DIR,
        ]
        return list(dict.fromkeys(found))

    def _find_sbd(self) -> Path | None:
        """The ``benchmark_RELEASE/dataset`` folder, or None."""
        for candidate in self._sbd_candidates():
            dataset = candidate / "dataset" if (candidate / "dataset").is_dir() else candidate
            if (dataset / "cls").is_dir() and (dataset / "train.txt").is_file():
                return dataset
        return None

    def read_mask(self, path: Path) -> np.ndarray:
        return read_sbd_mask(path) if path.suffix == ".mat" else super().read_mask(path)
