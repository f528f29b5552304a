"""seg.viz pictures (error maps, panels, grids, IoU bars, confusion matrix) and the TensorBoard image logger."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seg.callbacks.image_logger import ValidationImageLogger, fixed_indices
from seg.data.synthetic import SyntheticShapes
from seg.data.transforms import val_transforms
from seg.data.voc import voc_colormap
from seg.inference import InferenceConfig, infer
from seg.runs.loaded import load_model
from seg.train import train
from seg.viz import (
    CORRECT_COLOUR,
    VOID_COLOUR,
    WRONG_COLOUR,
    Sample,
    colorize,
    confusion_matrix_figure,
    error_map,
    per_class_iou_figure,
    sample_grid,
    sample_panels,
    save_confusion_matrix,
    tile,
)
from tests.helpers import compose_cfg

PALETTE = voc_colormap()
CLASSES = ("background", "disk", "square", "triangle", "cross")


def test_error_map_marks_wrong_right_and_void():
    target = np.array([[0, 1, 255], [2, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 2, 1], [2, 0, 255]], dtype=np.uint8)
    out = error_map(pred, target)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    expected = [[CORRECT_COLOUR, WRONG_COLOUR, VOID_COLOUR], [CORRECT_COLOUR, WRONG_COLOUR, VOID_COLOUR]]
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        error_map(pred, target.T)


def test_panels_shrink_masks_without_blending_labels_and_tile_them():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    target = rng.choice([0, 1, 2, 255], size=(48, 64)).astype(np.uint8)
    pred = rng.choice([0, 1, 2], size=(48, 64)).astype(np.uint8)
    full = sample_panels(image, target, pred, PALETTE)
    np.testing.assert_array_equal(full[0], image)
    np.testing.assert_array_equal(full[1], PALETTE[target])
    np.testing.assert_array_equal(full[2], PALETTE[pred])
    np.testing.assert_array_equal(full[3], error_map(pred, target))
    small = sample_panels(image, target, pred, PALETTE, max_side=32)
    assert [p.shape for p in small] == [(24, 32, 3)] * 4
    # nearest neighbour: every colour of the shrunk masks is a palette colour of a label that was there
    colours = {tuple(c) for c in small[1].reshape(-1, 3)}
    assert colours <= {tuple(PALETTE[v]) for v in (0, 1, 2, 255)}
    grid = tile([small, full], gap=2)
    assert grid.shape == (24 + 2 + 48, 64 * 4 + 3 * 2, 3)
    np.testing.assert_array_equal(grid[26:, 66:130], full[1])  # row 2, column 2: the ground truth
    np.testing.assert_array_equal(grid[:24, 32:64], np.full((24, 32, 3), 255, np.uint8))  # padding of a small cell
    assert (grid[24:26] == 255).all()  # the gap between rows


def test_sample_grid_shows_four_panels_per_sample_and_a_legend_of_the_classes_shown():
    target = np.zeros((16, 16), np.uint8)
    target[4:12, 4:12] = 2
    target[3, :] = 255
    pred = np.zeros((16, 16), np.uint8)
    pred[4:12, 4:12] = 3
    image = np.full((16, 16, 3), 90, np.uint8)
    fig = sample_grid([Sample(image, target, pred, "worst"), Sample(image, target, target, "best")], PALETTE, CLASSES)
    axes = fig.get_axes()
    assert len(axes) == 8
    assert [a.get_title() for a in axes[:4]] == ["image", "ground truth", "prediction", "errors"]
    assert axes[0].get_ylabel() == "worst" and axes[4].get_ylabel() == "best"
    np.testing.assert_array_equal(axes[3].get_images()[0].get_array(), error_map(pred, target))
    assert (axes[7].get_images()[0].get_array() != np.array(WRONG_COLOUR, np.uint8)).any(axis=-1).all()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "background",
        "square",
        "triangle",
        "void (255)",
        "errors: wrong",
        "errors: correct",
        "errors: void",
    ]


def test_per_class_iou_bars_have_the_values_and_mark_absent_classes():
    ious = {"background": 0.9, "disk": 0.5, "square": math.nan, "triangle": 0.25}
    fig = per_class_iou_figure({"model": ious}, PALETTE)
    ax = fig.get_axes()[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert [round(b.get_width(), 6) for b in bars] == [0.9, 0.5, 0.0, 0.25]
    assert tuple(np.round(np.array(bars[1].get_facecolor()[:3]) * 255)) == tuple(PALETTE[1])
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.900", "0.500", "absent", "0.250"]
    (miou_line,) = ax.get_lines()
    assert miou_line.get_xdata()[0] == pytest.approx((0.9 + 0.5 + 0.25) / 3)
    two = per_class_iou_figure({"a": ious, "b": {"background": 0.8, "disk": 0.7}})
    assert len([p for p in two.get_axes()[0].patches]) == 8  # 4 classes x 2 series, missing ones as "absent"


def test_confusion_matrix_rows_are_shares_of_the_ground_truth(tmp_path):
    cm = torch.tensor([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    fig = confusion_matrix_figure(cm, ["a", "b", "c"])
    shown = fig.get_axes()[0].get_images()[0].get_array()
    np.testing.assert_allclose(shown, [[0.8, 0.2, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 0.0]])
    save_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob("*.tmp"))


def test_fixed_indices_spread_over_the_split():
    assert fixed_indices(200, 4) == [0, 66, 133, 199]
    assert fixed_indices(3, 8) == [0, 1, 2]
    assert fixed_indices(0, 4) == [] and fixed_indices(10, 0) == []
    with pytest.raises(ValueError, match="num_samples=-1"):
        ValidationImageLogger(num_samples=-1)


def test_the_default_training_config_logs_four_validation_images():
    cfg = compose_cfg()
    assert cfg.callbacks.val_images._target_ == "seg.callbacks.image_logger.ValidationImageLogger"
    assert cfg.callbacks.val_images.num_samples == 4


def test_image_logger_writes_a_grid_per_validation_to_tensorboard(cfg_train, tmp_path, tiny_data_dir):
    with open_dict(cfg_train):
        cfg_train.trainer.max_epochs = 2
        cfg_train.trainer.limit_train_batches = 2
        cfg_train.trainer.precision = "32-true"  # a 4-step model's logits nearly tie: bf16 rounding would flip pixels
        cfg_train.callbacks.val_images = {"_target_": "seg.callbacks.ValidationImageLogger", "num_samples": 3}
    train(cfg_train)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    logged = events.Images("val/samples")
    assert [e.step for e in logged] == [2, 4]  # one per validation, none for the sanity check
    assert (logged[-1].height, logged[-1].width) == (3 * 64 + 2 * 2, 4 * 64 + 3 * 2)
    grid = np.asarray(Image.open(io.BytesIO(logged[-1].encoded_image_string)).convert("RGB"))

    # the rows are validation images 0, 2 and 4 (5 val images), predicted by the final model
    val = SyntheticShapes(tiny_data_dir, "val")
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg_train, tmp_path / ".hydra" / "config.yaml")  # as Hydra would: load_model rebuilds from it
    loaded = load_model(tmp_path / "checkpoints" / "last.ckpt")
    for row, index in enumerate([0, 2, 4]):
        image, mask = val.load(index)
        y = row * (64 + 2)
        np.testing.assert_array_equal(grid[y : y + 64, 66:130], colorize(mask, val.palette))
        x = val_transforms()(image=image)["image"][None]
        pred = infer(loaded.module, x, InferenceConfig(precision="32")).argmax(1)[0].to(torch.uint8).numpy()
        shown_pred = grid[y : y + 64, 132:196]
        assert (shown_pred == colorize(pred, val.palette)).all(axis=-1).mean() > 0.99  # memory formats may flip ties
        # the error panel agrees with the prediction panel shown next to it (palette colours are distinct)
        wrong = (shown_pred != colorize(mask, val.palette)).any(axis=-1)
        expected = np.where(wrong[..., None], np.uint8(WRONG_COLOUR), np.uint8(CORRECT_COLOUR))
        expected[mask == 255] = VOID_COLOUR
        np.testing.assert_array_equal(grid[y : y + 64, 198:262], expected)
    assert "val/samples/legend/text_summary" in events.Tags()["tensors"]
