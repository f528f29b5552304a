"""The embedded default dataset: textured shapes written as a real VOC-layout tree on first use.

Every object, whatever its class, is filled from the *same* texture distribution (a random saturated colour,
oriented stripes of random period, pixel noise) and lies on a blotchy grey textured background. A small
neighbourhood tells "object" from "background", but never which object: only the outline, seen at object scale,
tells a disk from a square, a triangle or a cross. That makes a large receptive field (dilation, ASPP)
matter, while the 255 void band and the sharp corners make fine output resolution matter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from seg.data.base import IGNORE_INDEX
from seg.data.io import write_index_mask
from seg.data.voc import VOCSegmentation

SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "disk", "square", "triangle", "cross")
MARKER = ".seg_synthetic.json"
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
VOID_WIDTH = 3  # px of 255 (void) around each object's outline, like VOC's boundary band


class SyntheticShapes(VOCSegmentation):
    """The generated tree, read by the VOC reader (one code path for both)."""

    classes = SYNTHETIC_CLASSES


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size x 3 float texture of soft grey blotches (low saturation) plus pixel noise."""
    grey = rng.uniform(60, 200) + rng.uniform(-12, 12, size=3)
    blotches = cv2.resize(rng.normal(0, 30, size=(6, 6)), (size, size), interpolation=cv2.INTER_CUBIC)
    return grey + blotches[..., None] + rng.normal(0, 8, size=(size, size, 3))


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size x 3 float texture of saturated colour and oriented stripes, one distribution for all objects."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(140, 256), rng.integers(130, 256)]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
    theta = rng.uniform(0, math.pi)
    period = rng.uniform(4, 14)
    amplitude = rng.uniform(10, 35)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    stripes = np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period)
    return colour + amplitude * stripes[..., None] + rng.normal(0, 8, size=(size, size, 3))


def _shape_mask(cls: int, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """Binary mask of one object of class ``cls`` with circumradius ``r`` centred at (cx, cy)."""
    mask = np.zeros((size, size), np.uint8)
    name = SYNTHETIC_CLASSES[cls]
    if name == "disk":
        cv2.circle(mask, (round(cx), round(cy)), round(r), 1, thickness=-1, lineType=cv2.LINE_8)
        return mask
    if name in ("square", "triangle"):
        n = 4 if name == "square" else 3
        pts = [
            (cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
            for k in range(n)
        ]
    else:  # cross: a plus sign with arm half-width r/3
        w = r / 3
        base = [
            (w, r),
            (w, w),
            (r, w),
            (r, -w),
            (w, -w),
            (w, -r),
            (-w, -r),
            (-w, -w),
            (-r, -w),
            (-r, w),
            (-w, w),
            (-w, r),
        ]
        c, s = math.cos(angle), math.sin(angle)
        pts = [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    cv2.fillPoly(mask, [np.round(np.array(pts)).astype(np.int32)], 1)
    return mask


def render_sample(rng: np.random.Generator, size: int = 96, max_objects: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3 RGB, mask uint8 HxW with 255 void bands) sample."""
    image = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    occupied = np.zeros((size, size), bool)
    void = np.zeros((size, size), bool)
    kernel = np.ones((VOID_WIDTH, VOID_WIDTH), np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):  # place without overlap so every outline stays whole
            cls = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
            r = rng.uniform(0.18, 0.34) * size
            cx, cy = rng.uniform(r, size - r, size=2)
            obj = _shape_mask(cls, cx, cy, r, rng.uniform(0, 2 * math.pi), size).astype(bool)
            grown = cv2.dilate(obj.astype(np.uint8), kernel, iterations=2).astype(bool)
            if not (grown & occupied).any():
                break
        else:
            continue
        image[obj] = _texture(rng, size)[obj]
        label[obj] = cls
        occupied |= grown
        edge = cv2.morphologyEx(obj.astype(np.uint8), cv2.MORPH_GRADIENT, kernel).astype(bool)
        void |= edge
    label[void] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(
    root: str | Path, num_train: int = 1000, num_val: int = 200, size: int = 96, max_objects: int = 2, seed: int = 0
) -> Path:
    """Write the synthetic VOC-layout tree under ``root`` unless a complete one with these settings is there.

    Sample i of a split is drawn from its own seed (seed, split, i): the tree is identical on every machine.
    """
    root = Path(root)
    spec = {
        "num_train": num_train,
        "num_val": num_val,
        "size": size,
        "max_objects": max_objects,
        "seed": seed,
        "version": 4,
    }
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec and _complete(root):
        return root
    marker.unlink(missing_ok=True)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        ids = [f"{split}_{i:05d}" for i in range(count)]
        for i, sample_id in enumerate(ids):
            rng = np.random.default_rng([seed, split_id, i])
            image, label = render_sample(rng, size, max_objects)
            # quality 100 without chroma subsampling: the default (q95, 4:2:0) smears the pixel noise and the
            # colour edges by ~6 grey levels on average; at these settings the error is ~0.5
            cv2.imwrite(str(root / "JPEGImages" / f"{sample_id}.jpg"), image[..., ::-1], JPEG_PARAMS)
            write_index_mask(root / "SegmentationClass" / f"{sample_id}.png", label, SyntheticShapes.palette)
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    marker.write_text(json.dumps(spec))  # written last: its presence means the tree is complete
    return root


def _complete(root: Path) -> bool:
    """Every id listed in both splits has its image and mask on disk."""
    for split in ("train", "val"):
        lst = root / "ImageSets/Segmentation" / f"{split}.txt"
        if not lst.is_file():
            return False
        for i in lst.read_text().split():
            image, mask = root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png"
            if not (image.is_file() and mask.is_file()):
                return False
    return True
