"""Confusion-matrix metrics against hand-computed values (VOC devkit definitions)."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from seg.metrics import ConfusionMatrix, metrics_from_confmat, metrics_report


def _example():
    # 4 classes; class 3 appears in neither target nor prediction; 255 pixels must be ignored.
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    preds = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 1]])  # the prediction 3 sits on an ignored pixel
    return preds, target


def test_miou_matches_hand_computed_values_with_ignore_and_absent_class():
    preds, target = _example()
    cm = MulticlassConfusionMatrix(num_classes=4, ignore_index=255, validate_args=False)
    cm.update(preds, target)
    m = metrics_from_confmat(cm.compute())
    # counted pixels: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: tp 1, gt 2, pred 1 -> 1/2
    iou = m["per_class_iou"].tolist()
    assert math.isclose(iou[0], 1 / 3) and math.isclose(iou[1], 2 / 3) and math.isclose(iou[2], 1 / 2)
    assert math.isnan(iou[3])  # absent from both: NaN, not 0 and not 1
    assert math.isclose(m["mIoU"], (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert math.isclose(m["pixel_acc"], 4 / 6)
    assert math.isclose(m["mean_acc"], (1 / 2 + 1 + 1 / 2) / 3)
    assert math.isclose(m["fw_iou"], (2 / 6) * (1 / 3) + (2 / 6) * (2 / 3) + (2 / 6) * (1 / 2))


def test_miou_agrees_with_torchmetrics_jaccard_on_random_data():
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 6, (3, 32, 32), generator=g)
    target = torch.randint(0, 6, (3, 32, 32), generator=g)
    target[:, :4] = 255
    cm = MulticlassConfusionMatrix(num_classes=6, ignore_index=255)
    cm.update(preds, target)
    ref = MulticlassJaccardIndex(num_classes=6, ignore_index=255, average="macro")(preds, target)
    assert math.isclose(metrics_from_confmat(cm.compute())["mIoU"], ref.item(), rel_tol=1e-6)


def test_report_schema_names_classes():
    preds, target = _example()
    cm = MulticlassConfusionMatrix(num_classes=4, ignore_index=255)
    cm.update(preds, target)
    report = metrics_report(metrics_from_confmat(cm.compute()), ["a", "b", "c", "d"])
    assert set(report) >= {"mIoU", "pixel_acc", "mean_acc", "fw_iou", "per_class_iou"}
    assert list(report["per_class_iou"]) == ["a", "b", "c", "d"]
    assert math.isnan(report["per_class_iou"]["d"])


def _labels(shape, classes, seed):
    g = torch.Generator().manual_seed(seed)
    preds = torch.randint(0, classes, shape, generator=g)
    target = torch.randint(0, classes, shape, generator=g, dtype=torch.uint8)
    target[torch.rand(shape, generator=g) < 0.2] = 255
    return preds, target


def test_bincount_confusion_matrix_equals_torchmetrics_over_several_updates():
    ref = MulticlassConfusionMatrix(num_classes=7, ignore_index=255)
    fast = ConfusionMatrix(num_classes=7, ignore_index=255)
    for seed in range(3):
        preds, target = _labels((2, 33, 17), 7, seed)
        ref.update(preds, target.long())
        fast.update(preds, target)  # uint8 target, as the loaders give it
    assert torch.equal(fast.compute(), ref.compute())
    assert 0 < int(fast.compute().sum()) < 3 * 2 * 33 * 17  # the void pixels were dropped
    scores = torch.randn(2, 7, 33, 17, generator=torch.Generator().manual_seed(5))  # scores: argmax over dim 1
    ref.update(scores.argmax(dim=1), target.long())
    fast.update(scores, target)
    assert torch.equal(fast.compute(), ref.compute())


def test_bincount_confusion_matrix_with_an_ignore_label_inside_the_classes_and_none():
    preds, target = _labels((3, 20, 20), 5, 7)
    target[target == 255] = 4
    for ignore in (0, None):
        ref = MulticlassConfusionMatrix(num_classes=5, ignore_index=ignore)
        fast = ConfusionMatrix(num_classes=5, ignore_index=ignore)
        ref.update(preds, target.long())
        fast.update(preds, target)
        assert torch.equal(fast.compute(), ref.compute()), ignore


def test_bincount_confusion_matrix_in_deterministic_mode():
    """torchmetrics replaces bincount by an N x C^2 comparison in deterministic mode; ours keeps one bincount."""
    preds, target = _labels((2, 16, 16), 4, 3)
    ref = MulticlassConfusionMatrix(num_classes=4, ignore_index=255)
    ref.update(preds, target.long())
    fast = ConfusionMatrix(num_classes=4, ignore_index=255)
    torch.use_deterministic_algorithms(True)
    try:
        fast.update(preds, target)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(fast.compute(), ref.compute())


def test_bincount_confusion_matrix_rejects_labels_outside_the_classes():
    fast = ConfusionMatrix(num_classes=4, ignore_index=255)
    preds = torch.zeros(1, 2, 2, dtype=torch.long)
    for bad in (4, 200):  # 4 would land in the dropped bin, 200 beyond it
        with pytest.raises(ValueError, match=r"outside 0\.\.3"):
            fast.update(preds, torch.tensor([[[0, 1], [bad, 255]]]))
    with pytest.raises(ValueError, match="same shape"):
        fast.update(preds, torch.zeros(1, 2, 3, dtype=torch.long))
    assert int(fast.compute().sum()) == 0  # nothing was counted by the rejected updates
