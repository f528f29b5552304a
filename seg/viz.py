"""Pictures of segmentations: coloured masks, overlays, error maps, image | truth | prediction | error grids,
per-class IoU bars and confusion-matrix heat maps. Used by predict, evaluate, the TensorBoard image logger and
the notebooks. Palettes and class names come from the dataset classes (``seg/data``), never from here.

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: no global state, safe in any thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from seg.data.base import IGNORE_INDEX
from seg.utils.atomic import atomic_write

# error map colours: what each pixel of the error panel means
CORRECT_COLOUR = (48, 48, 48)  # dark grey: prediction equals the ground truth
WRONG_COLOUR = (230, 25, 25)  # red: prediction differs from the ground truth
VOID_COLOUR = (255, 255, 255)  # white: ground truth is void (255), not scored
ERROR_LEGEND = "errors: red = wrong, dark grey = correct, white = void (not scored)"
PANEL_TITLES = ("image", "ground truth", "prediction", "errors")


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """An index mask (HxW) as an RGB image (HxWx3 uint8) through a (256, 3) palette."""
    return np.asarray(palette, dtype=np.uint8)[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The colourised mask blended over an RGB image (both HxW), ``alpha`` the mask's weight."""
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(mask, palette).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def error_map(pred: np.ndarray, target: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """RGB (HxWx3 uint8) of where the prediction is wrong (red), right (dark grey) or not scored (void, white)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {target.shape} differ in size")
    out = np.empty((*target.shape, 3), dtype=np.uint8)
    out[...] = CORRECT_COLOUR
    out[pred != target] = WRONG_COLOUR
    out[target == ignore_index] = VOID_COLOUR
    return out


def _fit(array: np.ndarray, max_side: int | None, interpolation: int) -> np.ndarray:
    h, w = array.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return array
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array, size, interpolation=interpolation)


def sample_panels(
    image: np.ndarray,
    target: np.ndarray,
    pred: np.ndarray,
    palette: np.ndarray,
    max_side: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> list[np.ndarray]:
    """The four RGB panels image | ground truth | prediction | errors of one sample, each at most ``max_side`` px.

    Masks are shrunk with nearest neighbour (labels are never blended), the image with area averaging; an image
    whose size differs from the masks' (a resizing transform) is resized to them.
    """
    target, pred = np.asarray(target), np.asarray(pred)
    if image.shape[:2] != target.shape:
        image = cv2.resize(image, target.shape[::-1], interpolation=cv2.INTER_AREA)
    image = _fit(image, max_side, cv2.INTER_AREA)
    target = _fit(target.astype(np.uint8), max_side, cv2.INTER_NEAREST)
    pred = _fit(pred.astype(np.uint8), max_side, cv2.INTER_NEAREST)
    return [image, colorize(target, palette), colorize(pred, palette), error_map(pred, target, ignore_index)]


def tile(rows: Sequence[Sequence[np.ndarray]], gap: int = 2, fill: int = 255) -> np.ndarray:
    """RGB panels laid out in rows (e.g. one sample per row), ``gap`` px of ``fill`` between them.

    Each cell is as tall as its row's tallest panel and as wide as its column's widest; panels sit top-left.
    """
    if not rows or not all(rows):
        raise ValueError("tile needs at least one row of panels")
    heights = [max(p.shape[0] for p in row) for row in rows]
    widths = [max(row[c].shape[1] for row in rows if c < len(row)) for c in range(max(len(r) for r in rows))]
    out = np.full((sum(heights) + gap * (len(rows) - 1), sum(widths) + gap * (len(widths) - 1), 3), fill, np.uint8)
    y = 0
    for row, height in zip(rows, heights, strict=True):
        x = 0
        for panel, width in zip(row, widths, strict=False):
            out[y : y + panel.shape[0], x : x + panel.shape[1]] = panel
            x += width + gap
        y += height + gap
    return out


@dataclass
class Sample:
    """One image with its ground truth and prediction (uint8 HxW class indices), for a grid figure."""

    image: np.ndarray
    target: np.ndarray
    pred: np.ndarray
    label: str = ""  # shown left of the row, e.g. "worst 1: 2007_000129, mIoU 0.31"


def _legend_handles(samples: Sequence[Sample], palette: np.ndarray, class_names: Sequence[str], ignore_index: int):
    present = sorted({int(v) for s in samples for m in (s.target, s.pred) for v in np.unique(m)})
    handles = [
        Patch(facecolor=np.asarray(palette[v]) / 255, edgecolor="0.5", label=class_names[v])
        for v in present
        if v < len(class_names)
    ]
    if ignore_index in present:
        handles.append(Patch(facecolor=np.asarray(palette[ignore_index]) / 255, edgecolor="0.5", label="void (255)"))
    return handles


def sample_grid(
    samples: Sequence[Sample],
    palette: np.ndarray,
    class_names: Sequence[str],
    title: str | None = None,
    panel_inches: float = 1.6,
    ignore_index: int = IGNORE_INDEX,
) -> Figure:
    """One row per sample: image | ground truth | prediction | errors, with a legend of the classes shown.

    The error panel is :func:`error_map`: red where the prediction is wrong, dark grey where it is right,
    white where the ground truth is void.
    """
    if not samples:
        raise ValueError("sample_grid needs at least one sample")
    n = len(samples)
    aspect = samples[0].target.shape[0] / samples[0].target.shape[1]
    fig = Figure(figsize=(4 * panel_inches + 0.6, n * panel_inches * aspect + 1.3), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False)
    for row, sample in zip(axes, samples, strict=True):
        panels = sample_panels(sample.image, sample.target, sample.pred, palette, ignore_index=ignore_index)
        for ax, panel in zip(row, panels, strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(sample.label, fontsize=7)
    for ax, name in zip(axes[0], PANEL_TITLES, strict=True):
        ax.set_title(name, fontsize=9)
    handles = _legend_handles(samples, palette, class_names, ignore_index)
    errors = ((WRONG_COLOUR, "wrong"), (CORRECT_COLOUR, "correct"), (VOID_COLOUR, "void"))
    handles += [Patch(facecolor=np.asarray(c) / 255, edgecolor="0.5", label=f"errors: {name}") for c, name in errors]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def per_class_iou_figure(
    series: Mapping[str, Mapping[str, float]],
    palette: np.ndarray | None = None,
    title: str = "per-class IoU",
) -> Figure:
    """Horizontal IoU bars per class; ``series`` maps a label (a model, a run) to its class name -> IoU.

    One series: bars in the dataset's class colours (``palette``) and its mIoU as a dashed line. Several:
    grouped bars, one colour per series. A NaN IoU (class absent from ground truth and prediction) is
    written as "absent".
    """
    if not series:
        raise ValueError("per_class_iou_figure needs at least one series")
    classes = list(dict.fromkeys(c for values in series.values() for c in values))
    k = len(series)
    height = 1.0 / (k + 0.5) if k > 1 else 0.7
    fig = Figure(figsize=(6.0, 0.8 + 0.28 * len(classes) * max(1.0, 0.6 * k)), layout="constrained")
    ax = fig.subplots()
    for s, (label, values) in enumerate(series.items()):
        ys = np.arange(len(classes)) + (s - (k - 1) / 2) * height
        ious = [float(values.get(c, math.nan)) for c in classes]
        if k == 1 and palette is not None:
            colours = [np.asarray(palette[i]) / 255 for i in range(len(classes))]
        else:
            colours = None
        bars = ax.barh(
            ys,
            [0.0 if math.isnan(v) else v for v in ious],
            height=height,
            color=colours,
            edgecolor="0.3",
            linewidth=0.5,
            label=label if k > 1 else None,
        )
        for bar, value in zip(bars, ious, strict=True):
            text = "absent" if math.isnan(value) else f"{value:.3f}"
            ax.annotate(
                text,
                (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        if k == 1:
            present = [v for v in ious if not math.isnan(v)]
            if present:
                miou = sum(present) / len(present)
                ax.axvline(miou, color="tab:red", ls="--", lw=1, label=f"mIoU {miou:.3f}")
    ax.set_yticks(range(len(classes)), labels=classes, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("IoU")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def confusion_matrix_figure(confmat: torch.Tensor | np.ndarray, class_names: Sequence[str]) -> Figure:
    """The row-normalised confusion matrix (rows: ground truth, each row's share of its pixels) as a heat map."""
    cm = np.asarray(confmat, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.5), 16.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the ground-truth class's pixels")
    ax.set_xticks(range(n), labels=list(class_names), rotation=90)
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if cm[i, j] > 0:
                    colour = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG with :func:`seg.utils.atomic.atomic_write`: never half a figure on disk."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")  # figures without a layout engine keep titles
    return Path(path)


def save_confusion_matrix(confmat: torch.Tensor | np.ndarray, class_names: Sequence[str], path: str | Path) -> None:
    """Write :func:`confusion_matrix_figure` as a PNG (atomically: an interrupted run leaves no half figure)."""
    save_figure(confusion_matrix_figure(confmat, class_names), path)
