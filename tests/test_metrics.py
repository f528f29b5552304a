"""Confusion-matrix metrics against hand-computed values (VOC devkit definitions)."""

from __future__ import annotations

import math

import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from seg.metrics import metrics_from_confmat, metrics_report


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
