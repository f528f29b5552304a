"""Pictures of segmentations: palette-coloured masks, overlays on the image and the confusion-matrix heat map."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """An index mask (HxW) as an RGB image (HxWx3 uint8) through a (256, 3) palette."""
    return np.asarray(palette, dtype=np.uint8)[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The colourised mask blended over an RGB image (both HxW), ``alpha`` the mask's weight."""
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(mask, palette).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def save_confusion_matrix(confmat: torch.Tensor | np.ndarray, class_names: Sequence[str], path: str | Path) -> None:
    """Write the row-normalised confusion matrix (rows: ground truth, share of its pixels) as a PNG heat map.

    Written to a temporary file first, then renamed: an interrupted run never leaves half a figure.
    """
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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)
