"""Dataset-level confusion-matrix metrics (VOC devkit / Cityscapes definitions) and their report."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich.console import Console
from rich.table import Table


def metrics_from_confmat(confmat: torch.Tensor) -> dict[str, torch.Tensor | float]:
    """mIoU, per-class IoU, pixel accuracy, mean class accuracy and frequency-weighted IoU from a CxC matrix.

    Rows are ground truth, columns predictions (torchmetrics' layout), ignored pixels already excluded.
    A class absent from both ground truth and prediction has IoU NaN and is left out of the mean.
    """
    cm = confmat.double()
    tp = cm.diag()
    gt = cm.sum(dim=1)
    pred = cm.sum(dim=0)
    union = gt + pred - tp
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    total = cm.sum()
    freq = gt / total.clamp(min=1)
    valid = union > 0
    return {
        "mIoU": iou.nanmean().item(),
        "pixel_acc": (tp.sum() / total.clamp(min=1)).item(),
        "mean_acc": acc.nanmean().item(),
        "fw_iou": (freq[valid] * iou[valid]).sum().item(),
        "per_class_iou": iou,
    }


def metrics_report(metrics: dict, class_names: Sequence[str]) -> dict:
    """The ``metrics.json`` schema: scalars plus ``per_class_iou`` as class name -> value (NaN when absent)."""
    per_class = metrics["per_class_iou"]
    out = {k: float(v) for k, v in metrics.items() if k != "per_class_iou"}
    out["per_class_iou"] = {name: float(v) for name, v in zip(class_names, per_class.tolist(), strict=True)}
    return out


def print_report(report: dict, title: str = "Validation") -> None:
    """Print per-class IoU and the summary metrics as a rich table."""
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, value in report["per_class_iou"].items():
        table.add_row(name, "n/a (absent)" if value != value else f"{value:.4f}")
    table.add_section()
    for key in ("mIoU", "pixel_acc", "mean_acc", "fw_iou"):
        table.add_row(key, f"{report[key]:.4f}")
    Console().print(table)
