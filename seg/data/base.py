"""The dataset machinery every reader shares: ``SegmentationDataset`` (listed pairs checked at set-up, checked
loading, seeded transforms), the ignore label, palettes, split lists and the size-mismatch error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from seg.data.io import (
    SCALING_HELP,
    check_image_options,
    check_index_mode,
    is_deep,
    read_header,
    read_image,
    read_index_mask,
    warn_orientation_tags,
)
from seg.data.sampler import seed_transform

IGNORE_INDEX = 255  # void: never scored, never a training target (VOC's and Cityscapes' convention)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC devkit colour map (``labelcolormap.m``): class i's RGB from the bits of i, (n, 3) uint8."""
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


def palette_from(colours: list[tuple[int, int, int]] | tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """A (256, 3) uint8 palette: the class colours first, black for every other index (255 = void)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(colours)] = np.asarray(colours, dtype=np.uint8)
    return palette


def read_list(path: Path, owner: str) -> list[str]:
    """Non-empty stripped lines of a split list; a missing or empty list raises naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{owner}: split list {path} does not exist; expected one image id per line")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{owner}: split list {path} is empty")
    return lines


def size_mismatch(image_path: Path, image_size: tuple[int, int], mask_path: Path, mask_size: tuple[int, int]):
    """The error for a mask whose (width, height) differs from its image's."""
    return ValueError(
        f"{mask_path}: mask size {mask_size[0]}x{mask_size[1]} differs from image {image_path} "
        f"size {image_size[0]}x{image_size[1]}"
    )


class SegmentationDataset:
    """The shared dataset machinery: ``(root, split, transform=None)``, ``ids``, ``files``, ``load(index)``.

    Subclasses set ``classes``, ``palette`` and ``layout`` (the expected tree, quoted in errors) and
    implement ``_list_pairs()``; ``read_mask`` may convert a dataset's on-disk encoding to class indices.
    Every listed file is checked for existence at construction (``check_files=False`` defers that to
    ``load``, for the checker).
    """

    classes: tuple[str, ...] = ()
    index_masks: bool = True  # index PNGs (palette or grayscale); False: read_mask decodes another encoding
    palette: np.ndarray = voc_colormap()  # the default for index masks without colours of their own
    layout: str = ""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        *,
        check_files: bool = True,
        image_scaling: str | float | None = None,
        extra_bands: str = "error",
    ) -> None:
        self.split = split
        self.transform = transform
        # how images of another depth than 8 bits, or with more than 3 bands, are read (seg.data.io.read_image)
        self.image_scaling = check_image_options(image_scaling, extra_bands)
        self.extra_bands = extra_bands
        self.root = self._resolve_root(Path(root))
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.name}: data.root={self.root} is a file, not a folder ({self.layout})")
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.name}: dataset root {self.root} does not exist; expected {self.layout} (set data.root=...)"
            )
        pairs = self._list_pairs()
        self.ids = [i for i, _, _ in pairs]
        self.files = [(image, mask) for _, image, mask in pairs]
        if check_files:
            self._check_files()

    @classmethod
    def meta(cls, **options) -> tuple[tuple[str, ...], np.ndarray]:
        """Class names and palette without reading any file (``seg.predict`` needs no copy of the dataset);
        ``options`` are the dataset's config options (``data=folder`` declares its classes there)."""
        return tuple(cls.classes), cls.palette

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _resolve_root(self, root: Path) -> Path:
        return root

    def _list_pairs(self) -> list[tuple[str, Path, Path]]:
        """(id, image path, mask path) for every sample of ``self.split``."""
        raise NotImplementedError

    def _check_files(self) -> None:
        missing = [str(p) for pair in self.files for p in pair if not p.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"{self.name}: {missing[0]}{more} is listed in split '{self.split}' but missing; "
                f"expected {self.layout} under {self.root}"
            )

    def read_mask(self, path: Path) -> np.ndarray:
        """The class-index mask of ``path`` (uint8 HxW); datasets with another encoding convert it here."""
        return read_index_mask(path)

    def __len__(self) -> int:
        return len(self.ids)

    def inspect(self, index: int) -> tuple[np.ndarray | None, np.ndarray | None, list[Exception]]:
        """Read pair ``index`` and run every per-sample check, collecting the errors (each names its file).

        The one implementation of the checks: ``load`` raises the first error, the checker lists them all.
        """
        image_path, mask_path = self.files[index]
        image = mask = None
        errors: list[Exception] = []
        try:
            image = read_image(image_path, self.image_scaling, self.extra_bands)
        except (OSError, ValueError) as e:
            errors.append(e)
        try:
            mask = self.read_mask(mask_path)
        except (OSError, ValueError) as e:
            errors.append(e)
        if image is not None and mask is not None and image.shape[:2] != mask.shape:
            errors.append(size_mismatch(image_path, image.shape[1::-1], mask_path, mask.shape[::-1]))
        if mask is not None:
            bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
            if bad.any():
                values = sorted(np.unique(mask[bad]).tolist())[:5]
                known = f"0..{self.num_classes - 1} and {IGNORE_INDEX} (void)"
                errors.append(ValueError(f"{mask_path}: label values {values} outside {known}"))
        return image, mask, errors

    def check_headers(self) -> None:
        """Check every listed pair from its file headers, nothing decoded (~0.2 ms a pair), and raise the first
        problem: an unreadable or truncated (JPEG, PNG) file, an image deeper than 8 bits without
        ``data.image_scaling``, a colour mask, an image/mask size mismatch.

        Run at set-up, before any model is built. Label values and damage inside a file are found when the
        sample is loaded; ``python -m seg.data.check`` decodes and lists everything.
        """
        problems: list[Exception] = []
        rotated: list[Path] = []
        for image_path, mask_path in self.files:
            try:
                image_size, image_mode = read_header(image_path, "image", tagged=rotated)
                if is_deep(image_mode) and self.image_scaling is None:
                    raise ValueError(
                        f"{image_path}: a {image_mode} image (deeper than 8 bits); the model takes 8-bit images: "
                        f"choose how to convert with {SCALING_HELP}"
                    )
                if mask_path.suffix.lower() == ".png":  # other formats (SBD's .mat) are checked when loaded
                    mask_size, mode = read_header(mask_path, "mask")
                    if self.index_masks:
                        check_index_mode(mask_path, mode)
                    if mask_size != image_size:
                        raise size_mismatch(image_path, image_size, mask_path, mask_size)
            except (OSError, ValueError) as e:
                problems.append(e)
        if problems:
            more = f" (and {len(problems) - 1} more; python -m seg.data.check lists them)" if len(problems) > 1 else ""
            raise type(problems[0])(f"{problems[0]}{more}")
        warn_orientation_tags([], tagged=rotated)  # found while reading the headers: no second pass

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Checked untransformed pair (image uint8 HxWx3 RGB, mask uint8 HxW); bad files raise by name."""
        image, mask, errors = self.inspect(index)
        if errors:
            raise errors[0]
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]):
        """Sample ``key`` transformed; ``key = (index, seed)`` (``SeededSampler``) first reseeds the transform."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.load(index)
        if self.transform is None:
            return image, mask
        if seed is not None:
            seed_transform(self.transform, seed)
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"]
