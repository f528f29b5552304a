"""Label statistics of a split and the class weightings computed from them.

``count_labels(dataset, num_classes)`` reads every mask once (never an image) and returns per-class pixel counts
and, per class, the pixel count of the images that contain it; ``class_weights(pixels, image_pixels, method)``
turns them into ``median_freq`` (Eigen & Fergus / SegNet) or ``inverse_log`` (ENet) weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seg.data.base import IGNORE_INDEX
from seg.utils.atomic import write_json_atomic

log = logging.getLogger(__name__)

METHODS = ("median_freq", "inverse_log")


def count_labels(dataset, num_classes: int, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the masks of ``dataset`` (``len``, ``files[i] = (image_path, mask_path)``, ``read_mask``).

    Returns ``(pixels, image_pixels)``, both int64 (C,): ``pixels[c]`` is the number of pixels labelled ``c``;
    ``image_pixels[c]`` is the total pixel count (H*W, ignored pixels included, as in the definition quoted in
    ``class_weights`` and chainercv's SegNet example) of the images in which ``c`` occurs at least once. Pixels
    labelled 255 are not counted as a class; a label in ``num_classes..254`` raises naming the mask file.
    A rich progress bar is shown when ``progress``.
    """
    pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    n = len(dataset)

    def one(index: int) -> None:
        mask_path = dataset.files[index][1]
        mask = np.asarray(dataset.read_mask(mask_path))
        counts = np.bincount(mask.ravel(), minlength=256)
        bad = np.flatnonzero(counts[num_classes:IGNORE_INDEX])
        if bad.size:
            values = (bad[:5] + num_classes).tolist()
            raise ValueError(
                f"{mask_path}: label values {values} outside 0..{num_classes - 1} and {IGNORE_INDEX} (void)"
            )
        counts = counts[:num_classes]
        pixels[:] += counts
        image_pixels[counts > 0] += mask.size

    if progress:
        from seg.utils.progress import progress_bar

        name = getattr(dataset, "name", type(dataset).__name__)
        split = getattr(dataset, "split", "")
        with progress_bar() as bar:
            task = bar.add_task(f"counting labels: {name} {split}".rstrip(), total=n)
            for i in range(n):
                one(i)
                bar.advance(task)
    else:
        for i in range(n):
            one(i)
    return pixels, image_pixels


def class_weights(pixels: np.ndarray, image_pixels: np.ndarray, method: str) -> np.ndarray:
    """Per-class loss weights (float64, (C,)) from the counts of ``count_labels``.

    - ``median_freq``: median frequency balancing (Eigen & Fergus, "Predicting depth, surface normals and semantic
      labels with a common multi-scale convolutional architecture", ICCV 2015, arXiv:1411.4734; used by
      SegNet, Badrinarayanan et al., TPAMI 2017): ``freq(c) = pixels(c) / image_pixels(c)`` ("the number of pixels
      of class c divided by the total number of pixels in images where c is present") and ``weight(c) =
      median(freq) / freq(c)``, the median taken over the classes that occur. A class that never occurs gets
      weight 0 (it has no frequency; it cannot be a target anyway).
    - ``inverse_log``: ENet's weighting (Paszke et al., "ENet: a deep neural network architecture for real-time
      semantic segmentation", arXiv:1606.02147): ``p(c) = pixels(c) / sum(pixels)`` and ``weight(c) =
      1 / ln(1.02 + p(c))``, which bounds the weights to (1/ln(2.02), 1/ln(1.02)] ~ (1.42, 50.5]. A class that never
      occurs gets the largest weight, 1/ln(1.02).
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    image_pixels = np.asarray(image_pixels, dtype=np.float64)
    if pixels.shape != image_pixels.shape or pixels.ndim != 1:
        raise ValueError(
            f"class_weights: pixels {pixels.shape} and image_pixels {image_pixels.shape} must be (C,) arrays"
        )
    if method == "median_freq":
        seen = pixels > 0
        if not seen.any():
            raise ValueError("class_weights: median_freq needs at least one labelled pixel; every count is 0")
        freq = np.zeros_like(pixels)
        freq[seen] = pixels[seen] / image_pixels[seen]
        weights = np.zeros_like(pixels)
        weights[seen] = np.median(freq[seen]) / freq[seen]
        return weights
    if method == "inverse_log":
        total = pixels.sum()
        if total <= 0:
            raise ValueError("class_weights: inverse_log needs at least one labelled pixel; every count is 0")
        return 1.0 / np.log(1.02 + pixels / total)
    raise ValueError(f"class_weights: unknown method {method!r}; known methods: {', '.join(METHODS)}")


def _fingerprint(dataset) -> str:
    """Identifies the label files of a split: their paths, sizes and modification times, and the class count."""
    h = hashlib.sha256(f"{type(dataset).__name__}:{dataset.num_classes}".encode())
    for _, mask_path in dataset.files:
        stat = Path(mask_path).stat()
        h.update(f"{Path(mask_path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def resolve_class_weights(
    spec: str | Sequence[float] | None, dataset, cache_dir: str | Path, run_dir: str | Path | None = None
) -> list[float] | None:
    """``model.class_weights`` as numbers: None and lists pass through (a list's length is checked); a method
    name is computed from ``dataset`` (the train split) with :func:`count_labels`, cached in ``cache_dir`` by the
    label files' fingerprint (never in the dataset folder), written to ``run_dir/class_weights.json`` and logged.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        values = [float(v) for v in spec]
        if len(values) != dataset.num_classes:
            raise ValueError(
                f"model.class_weights has {len(values)} values but {dataset.name} has {dataset.num_classes} classes"
            )
        return values
    if spec not in METHODS:
        raise ValueError(f"model.class_weights={spec!r}; expected null, a list of numbers or one of {list(METHODS)}")
    cache = Path(cache_dir) / f"{_fingerprint(dataset)}.json"
    if cache.is_file():
        counts = json.loads(cache.read_text())
        pixels, image_pixels = np.asarray(counts["pixels"]), np.asarray(counts["image_pixels"])
    else:
        pixels, image_pixels = count_labels(dataset, dataset.num_classes)
        write_json_atomic(
            cache,
            {
                "dataset": dataset.name,
                "root": str(dataset.root),
                "split": dataset.split,
                "pixels": pixels.tolist(),
                "image_pixels": image_pixels.tolist(),
            },
        )
    weights = class_weights(pixels, image_pixels, spec).tolist()
    named = dict(zip(dataset.classes, (round(w, 4) for w in weights), strict=True))
    log.info("class weights (%s, %s split of %s): %s", spec, dataset.split, dataset.name, named)
    if run_dir is not None:
        write_json_atomic(
            Path(run_dir) / "class_weights.json",
            {"method": spec, "split": dataset.split, "weights": named, "cache": str(cache)},
        )
    return weights
