"""A run's result, the one way ``seg.train`` and ``seg.evaluate`` write it: ``metrics.json`` in the run folder from
the module's last validation (dataset-level metrics, per-class IoU, the extra validation splits), printed as a
table; ``seg.evaluate`` adds the confusion matrix (in the file and as ``confusion_matrix.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from seg.metrics import metrics_report, print_report
from seg.utils.atomic import write_json_atomic

REPORT_FILE = "metrics.json"


def validation_report(module: pl.LightningModule, class_names: Sequence[str], **extra: Any) -> dict:
    """The report of ``module``'s last validation (``SegModule.last_val_metrics``): metrics, per-class IoU, the
    labelled pixels scored, ``extra_val`` for ``data.extra_val_splits``, and ``extra``'s keys."""
    report = metrics_report(module.last_val_metrics, class_names)
    report.update(extra, pixels=int(module.last_val_confmat.sum()))  # each val image exactly once
    extra_splits = getattr(module, "last_extra_val_metrics", None)
    if extra_splits:  # data.extra_val_splits, e.g. a held-out CamVid sequence
        report["extra_val"] = {split: metrics_report(m, class_names) for split, m in extra_splits.items()}
    return report


def write_report(
    out_dir: str | Path,
    report: dict,
    title: str,
    confusion_matrix: Any = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write ``report`` to ``out_dir/metrics.json`` (atomically) and print it; with ``confusion_matrix`` (C, C)
    also store it in the report and draw ``confusion_matrix.png``."""
    out_dir = Path(out_dir)
    if confusion_matrix is not None:
        from seg.viz import save_confusion_matrix

        report["confusion_matrix"] = confusion_matrix.tolist()
        names = list(class_names or report["per_class_iou"])
        save_confusion_matrix(confusion_matrix, names, out_dir / "confusion_matrix.png")
    path = out_dir / REPORT_FILE
    write_json_atomic(path, report)
    print_report(report, title=title)
    return path
