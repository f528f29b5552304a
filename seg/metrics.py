"""Dataset-level confusion-matrix metrics (VOC devkit / Cityscapes definitions) and their report."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from seg.inference import class_map


class ConfusionMatrix(MulticlassConfusionMatrix):
    """torchmetrics' MulticlassConfusionMatrix (same state, DDP sum and compute) with a one-pass bincount update.

    The parent drops ignored pixels by boolean indexing (two copies of every mask) and, in deterministic mode,
    replaces bincount by an (N pixels x C^2) comparison (gigabytes for one 512x512 batch). Here the ignore label
    goes to one extra bin that is dropped: a single bincount over all pixels, the same counts.
    ``preds`` are class indices in 0..C-1 (or scores (N, C, ...), their class map taken); ``target`` may be any
    integer type.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None, **kwargs) -> None:
        super().__init__(num_classes, ignore_index=ignore_index, validate_args=False, **kwargs)

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.is_floating_point():
            preds = class_map(preds)
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same shape")
        n = self.num_classes
        target = target.reshape(-1).long()
        index = target * n + preds.reshape(-1)
        ignored = 0
        if self.ignore_index is not None:
            mask = target == self.ignore_index
            index.masked_fill_(mask, n * n)
            ignored = mask.sum()
        counts = torch.bincount(index, minlength=n * n + 1)
        # a target label >= C lands in or beyond the extra bin: it must hold exactly the ignored pixels
        if counts.numel() > n * n + 1 or counts[n * n] != ignored:
            raise ValueError(f"target labels outside 0..{n - 1} (ignore_index {self.ignore_index})")
        self.confmat += counts[: n * n].reshape(n, n)


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
