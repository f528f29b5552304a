"""Your own data from config alone: a folder of images and a folder of masks, paired by file stem.

``data=folder data.root=DIR data.classes=[...]`` (or a YAML file of ``{name, color}`` entries). Masks are class-index
PNGs (``mask_format=index``, 255 = ignore) or RGB PNGs mapped through the classes' colours (``mask_format=color``,
``ignore_color`` for void). Splits come from ``split_dir/<split>.txt`` (one stem per line) when that file exists,
else ``val_fraction`` of the sorted stems is drawn with ``split_seed`` for validation and the rest trains; a
``{split}`` in ``image_dir`` / ``mask_dir`` names one folder per split instead (ADE20K's layout). Every error
names the file: an image without a mask and the other way round, an unknown colour (with its pixel count), a label
outside the classes, a size mismatch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from seg.data.base import IGNORE_INDEX, SegmentationDataset, palette_from, voc_colormap
from seg.data.io import IMAGE_SUFFIXES

MASK_FORMATS = ("index", "color")
SPLIT_FILE = "{split}.txt"
# ADE20K's convention: 0 ("other") is ignored and 1..N become 0..N-1; 255 stays ignored
REDUCE_ZERO_LABEL = np.concatenate([[IGNORE_INDEX], np.arange(254), [IGNORE_INDEX]]).astype(np.uint8)


def load_classes(spec: str | Path | Sequence) -> list[dict]:
    """``[{name, color}]`` from an inline list (Hydra's ListConfig too) or a YAML file holding that list.

    ``color`` (an RGB triple) is optional for index masks; entries may also be plain names.
    """
    source = "data.classes"
    if isinstance(spec, str | Path):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"data.classes={spec}: no such file (expected a YAML list of {{name, color}})")
        source, spec = str(path), yaml.safe_load(path.read_text())
        if isinstance(spec, Mapping) and "classes" in spec:
            spec = spec["classes"]
    if not isinstance(spec, Sequence) or isinstance(spec, str) or not spec:
        raise ValueError(f"{source}: expected a non-empty list of {{name, color}} entries, got {spec!r}")
    classes = []
    for i, entry in enumerate(spec):
        entry = {"name": entry} if isinstance(entry, str) else dict(entry)
        if "name" not in entry or set(entry) - {"name", "color"}:
            raise ValueError(f"{source}: entry {i} is {entry!r}; expected {{name: ..., color: [R, G, B]}}")
        color = entry.get("color")
        if color is not None:
            color = tuple(int(c) for c in color)
            if len(color) != 3 or not all(0 <= c <= 255 for c in color):
                raise ValueError(
                    f"{source}: class {entry['name']!r} has color {list(color)}; expected [R, G, B] in 0-255"
                )
        classes.append({"name": str(entry["name"]), "color": color})
    if len(classes) > 255:
        raise ValueError(f"{source}: {len(classes)} classes; at most 255 fit uint8 masks (255 = ignore)")
    return classes


def num_classes(spec: str | Path | Sequence) -> int:
    """How many classes ``spec`` declares (the ``${seg.num_classes:...}`` resolver of ``conf/data/folder.yaml``)."""
    return len(load_classes(spec))


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class FolderSegmentation(SegmentationDataset):
    """Images in ``root/image_dir`` and masks in ``root/mask_dir`` paired by stem, the classes from config.

    Args:
        root: the dataset folder.
        split: ``train``, ``val`` or any name with a ``split_dir/<split>.txt`` (or a ``{split}`` folder).
        transform: albumentations pipeline (None: the untransformed ``(image, mask)`` pair).
        classes: ``[{name, color}]`` inline or a path to a YAML file holding that list (see :func:`load_classes`).
        image_dir, mask_dir: folders under ``root``; ``{split}`` in them is replaced by the split name.
        mask_format: ``index`` (class indices, 255 = ignore) or ``color`` (RGB through the classes' colours).
        ignore_color: the RGB colour of void pixels in colour masks (None: every colour must be a class).
        reduce_zero_label: ADE20K's convention: label 0 is "other" (ignored), the rest shift down by one.
        split_dir: folder (under ``root`` unless absolute) holding ``<split>.txt`` lists of stems.
        val_fraction: without a split list, the share of the sorted stems drawn for ``val``.
        split_seed: the seed of that draw (the same lists every run).
        check_files: check that every listed file exists now (the checker defers it).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        *,
        classes: str | Path | Sequence,
        image_dir: str = "images",
        mask_dir: str = "masks",
        mask_format: str = "index",
        ignore_color: Sequence[int] | None = None,
        reduce_zero_label: bool = False,
        split_dir: str | Path | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        check_files: bool = True,
        **image_options: Any,
    ) -> None:
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"data.mask_format={mask_format!r}; expected one of {MASK_FORMATS}")
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction}; expected a fraction between 0 and 1")
        entries = load_classes(classes)
        self.classes, self.palette = self.meta(classes=entries)
        colours = [e["color"] for e in entries]
        if mask_format == "color" and any(c is None for c in colours):
            missing = [e["name"] for e in entries if e["color"] is None]
            raise ValueError(f"data.mask_format=color needs a color for every class; missing for {missing}")
        self.image_dir, self.mask_dir = image_dir, mask_dir
        self.mask_format, self.reduce_zero_label = mask_format, bool(reduce_zero_label)
        self.ignore_color = tuple(int(c) for c in ignore_color) if ignore_color is not None else None
        self.split_dir, self.val_fraction, self.split_seed = split_dir, float(val_fraction), int(split_seed)
        self.index_masks = mask_format == "index"
        if mask_format == "color":
            keys = _rgb_keys(np.asarray(colours, dtype=np.uint8))
            if len(set(keys.tolist())) != len(keys):
                raise ValueError("data.classes: two classes share a color")
            self._colour_keys, self._colour_labels = keys, np.arange(len(keys), dtype=np.uint8)
            if self.ignore_color is not None:
                self._colour_keys = np.append(keys, _rgb_keys(np.asarray(self.ignore_color, dtype=np.uint8)))
                self._colour_labels = np.append(self._colour_labels, np.uint8(IGNORE_INDEX))
            order = np.argsort(self._colour_keys)
            self._colour_keys, self._colour_labels = self._colour_keys[order], self._colour_labels[order]
        self.layout = f"{image_dir}/<stem>.{{jpg,png,tif,bmp,webp,ppm}} and {mask_dir}/<stem>.png"
        super().__init__(root, split, transform, check_files=check_files, **image_options)  # image_scaling, extra_bands

    @classmethod
    def meta(cls, **options) -> tuple[tuple[str, ...], np.ndarray]:
        """Names and palette of ``options["classes"]``; a class without a colour gets the VOC colour map's."""
        entries = load_classes(options["classes"])
        base = voc_colormap()
        colours = [e["color"] if e["color"] is not None else tuple(base[i]) for i, e in enumerate(entries)]
        return tuple(e["name"] for e in entries), palette_from(colours)

    # ------------------------------------------------------------------------------------------ pairs and splits

    def _folder(self, pattern: str) -> Path:
        return self.root / pattern.replace("{split}", self.split)

    def _files(self, folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
        if not folder.is_dir():
            raise FileNotFoundError(f"{self.name}: {what} folder {folder} does not exist; expected {self.layout}")
        found: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in suffixes:
                if path.stem in found:
                    raise ValueError(f"{path}: a second {what} with stem '{path.stem}' (also {found[path.stem]})")
                found[path.stem] = path
        if not found:
            raise ValueError(f"{self.name}: no {what}s ({', '.join(suffixes)}) in {folder}")
        return found

    def _refuse_jpeg_masks(self, folder: Path) -> None:
        """ValueError, with how to fix it, when the mask folder holds JPEG files and no PNG."""
        if not folder.is_dir():
            return
        suffixes = [p.suffix.lower() for p in folder.iterdir() if p.is_file()]
        jpegs = sum(s in (".jpg", ".jpeg") for s in suffixes)
        if jpegs and ".png" not in suffixes:
            raise ValueError(
                f"{self.name}: {folder} holds {jpegs} JPEG masks and no PNG: masks must be lossless, as JPEG's "
                "compression changes the label values along every edge (pixels between two classes get values "
                "of neither); re-export them as PNG from the labelling tool (converting the JPEGs keeps the damage)"
            )

    def all_pairs(self) -> list[tuple[str, Path, Path]]:
        """Every (stem, image, mask) of the folders, sorted by stem; an unpaired file is an error naming it."""
        images = self._files(self._folder(self.image_dir), IMAGE_SUFFIXES, "image")
        self._refuse_jpeg_masks(self._folder(self.mask_dir))
        masks = self._files(self._folder(self.mask_dir), (".png",), "mask")
        lonely_images = sorted(set(images) - set(masks))
        if lonely_images:
            more = f" (and {len(lonely_images) - 1} more)" if len(lonely_images) > 1 else ""
            stem = lonely_images[0]
            raise FileNotFoundError(f"{images[stem]}: image has no mask {self._folder(self.mask_dir) / stem}.png{more}")
        lonely_masks = sorted(set(masks) - set(images))
        if lonely_masks:
            more = f" (and {len(lonely_masks) - 1} more)" if len(lonely_masks) > 1 else ""
            raise FileNotFoundError(
                f"{masks[lonely_masks[0]]}: mask has no image in {self._folder(self.image_dir)}{more}"
            )
        return [(stem, images[stem], masks[stem]) for stem in sorted(images)]

    def split_file(self) -> Path | None:
        if self.split_dir is None:
            return None
        folder = Path(self.split_dir)
        return (folder if folder.is_absolute() else self.root / folder) / SPLIT_FILE.format(split=self.split)

    def _list_pairs(self) -> list[tuple[str, Path, Path]]:
        pairs = self.all_pairs()
        if "{split}" in self.image_dir:  # one folder per split: nothing to choose
            return pairs
        by_stem = {stem: (stem, image, mask) for stem, image, mask in pairs}
        listed = self.split_file()
        if listed is not None and listed.is_file():
            stems = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
            unknown = [s for s in stems if s not in by_stem]
            if unknown:
                raise FileNotFoundError(f"{listed}: '{unknown[0]}' has no image/mask pair under {self.root}")
            return [by_stem[s] for s in stems]
        if self.split not in ("train", "val"):
            where = listed if listed is not None else "data.split_dir/<split>.txt"
            raise FileNotFoundError(f"{self.name}: split '{self.split}' needs a list {where} (one stem per line)")
        val = set(self.val_stems(sorted(by_stem)))
        return [by_stem[s] for s in sorted(by_stem) if (s in val) == (self.split == "val")]

    def val_stems(self, stems: list[str]) -> list[str]:
        """``val_fraction`` of ``stems`` (at least one), drawn with ``split_seed``: the same lists every run."""
        count = min(max(1, round(len(stems) * self.val_fraction)), len(stems) - 1)
        return sorted(random.Random(self.split_seed).sample(stems, count))

    # ------------------------------------------------------------------------------------------------- masks

    def read_mask(self, path: Path) -> np.ndarray:
        if self.mask_format == "color":
            mask = self._colour_to_index(path)
        else:
            mask = super().read_mask(path)
        return REDUCE_ZERO_LABEL[mask] if self.reduce_zero_label else mask

    def _colour_to_index(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{path}: mask file does not exist") from e
        except (OSError, SyntaxError) as e:
            raise ValueError(f"{path}: cannot decode mask ({e})") from e
        keys = _rgb_keys(rgb)
        pos = np.clip(np.searchsorted(self._colour_keys, keys), 0, len(self._colour_keys) - 1)
        known = self._colour_keys[pos] == keys
        if not known.all():
            values, counts = np.unique(keys[~known], return_counts=True)
            worst = int(np.argmax(counts))
            colour = [int(values[worst] >> 16) & 255, int(values[worst] >> 8) & 255, int(values[worst]) & 255]
            others = f" and {len(values) - 1} other unknown colours" if len(values) > 1 else ""
            raise ValueError(
                f"{path}: colour {colour} ({int(counts[worst])} pixels){others} is not a class colour of data.classes"
                + ("" if self.ignore_color is not None else " (set data.ignore_color for void)")
            )
        return self._colour_labels[pos]
