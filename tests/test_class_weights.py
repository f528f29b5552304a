"""seg.data.class_weights: label counts from masks on disk and both weightings, against a hand count."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from seg.data.base import voc_colormap
from seg.data.class_weights import class_weights, count_labels
from seg.data.io import read_index_mask, write_index_mask

MASKS = [
    np.array([[0, 0, 1], [1, 255, 0]]),  # classes 0 (3 px), 1 (2 px); 6 px
    np.array([[2, 2], [2, 0]]),  # classes 2 (3 px), 0 (1 px); 4 px
    np.array([[255, 255], [255, 255]]),  # nothing labelled; 4 px
]
NUM_CLASSES = 4  # class 3 never occurs
# hand count: pixels per class 0: 3 + 1 = 4, 1: 2, 2: 3, 3: 0
# pixels of the images containing the class: 0: 6 + 4 = 10 (masks 1, 2), 1: 6 (mask 1), 2: 4 (mask 2), 3: 0
PIXELS = [4, 2, 3, 0]
IMAGE_PIXELS = [10, 6, 4, 0]


class MaskFolder:
    """The part of SegmentationDataset that count_labels uses; the images do not exist (never read)."""

    def __init__(self, root: Path, masks: list[np.ndarray]) -> None:
        self.files = []
        for i, mask in enumerate(masks):
            path = root / f"{i}.png"
            write_index_mask(path, mask.astype(np.uint8), voc_colormap())
            self.files.append((root / f"missing_image_{i}.jpg", path))
        self.read = 0

    def __len__(self) -> int:
        return len(self.files)

    def read_mask(self, path: Path) -> np.ndarray:
        self.read += 1
        return read_index_mask(path)


@pytest.mark.parametrize("progress", [False, True])
def test_counts_equal_a_hand_count(tmp_path, progress):
    ds = MaskFolder(tmp_path, MASKS)
    pixels, image_pixels = count_labels(ds, NUM_CLASSES, progress=progress)
    assert pixels.tolist() == PIXELS and image_pixels.tolist() == IMAGE_PIXELS
    assert pixels.dtype == np.int64 and ds.read == 3  # one pass, masks only


def test_median_frequency_by_hand():
    # freq = pixels / image_pixels = (4/10, 2/6, 3/4) for the seen classes; median = 0.4
    # weight = 0.4 / freq = (1, 0.4 * 3 = 1.2, 0.4 * 4/3 = 8/15); class 3 never seen -> 0
    weights = class_weights(np.array(PIXELS), np.array(IMAGE_PIXELS), "median_freq")
    np.testing.assert_allclose(weights, [1.0, 1.2, 8 / 15, 0.0], rtol=1e-12)


def test_inverse_log_by_hand():
    # p = pixels / 9 = (4/9, 2/9, 3/9, 0); weight = 1 / ln(1.02 + p)
    weights = class_weights(np.array(PIXELS), np.array(IMAGE_PIXELS), "inverse_log")
    expected = [1 / math.log(1.02 + 4 / 9), 1 / math.log(1.02 + 2 / 9), 1 / math.log(1.02 + 1 / 3), 1 / math.log(1.02)]
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert weights[3] == pytest.approx(50.498, abs=1e-3)  # the bound of ENet's weighting


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'median'.*median_freq, inverse_log"):
        class_weights(np.array(PIXELS), np.array(IMAGE_PIXELS), "median")
    with pytest.raises(ValueError, match="every count is 0"):
        class_weights(np.zeros(3), np.zeros(3), "median_freq")
    ds = MaskFolder(tmp_path, [np.array([[0, 7], [1, 255]])])
    with pytest.raises(ValueError, match=r"0\.png: label values \[7\] outside 0\.\.3"):
        count_labels(ds, NUM_CLASSES, progress=False)
